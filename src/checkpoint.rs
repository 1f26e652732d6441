//! Files of a model: training checkpoints (weights, optimizer moments and the trainer's state in
//! one safetensors file, written atomically) and exported weights (`config.json` +
//! `model.safetensors`, the form `generate --weights DIR`, the plugin and `weights/` use).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use crate::dataset::write_atomically;
use crate::model::config::Config;
use crate::model::remi_xl::XlConfig;
use crate::model::ModelConfig;

/// File names inside a weights folder.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Serialises named tensors (converted to `dtype`) with string metadata.
pub fn to_safetensors(tensors: &[(String, Tensor)], dtype: DType, metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let converted = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_dtype(dtype)?.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<Vec<(String, Tensor)>>>()?;
    Ok(safetensors::serialize(converted.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))?)
}

/// Reads named tensors (as f32 on `device`) and the metadata of a safetensors buffer.
pub fn from_safetensors(bytes: &[u8], device: &Device) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).context("not a safetensors file")?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(bytes, device)?
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    Ok((tensors, metadata))
}

/// Writes a checkpoint: `model.*` and `adam.*` tensors plus a JSON `state` in the metadata.
pub fn save_checkpoint(path: &Path, model: &[(String, Tensor)], optimizer: &[(String, Tensor)], state_json: String) -> Result<()> {
    let mut all: Vec<(String, Tensor)> = model.iter().map(|(n, t)| (format!("model.{n}"), t.clone())).collect();
    all.extend(optimizer.iter().map(|(n, t)| (format!("adam.{n}"), t.clone())));
    let bytes = to_safetensors(&all, DType::F32, HashMap::from([("state".to_string(), state_json)]))?;
    write_atomically(path, &bytes)
}

/// A loaded checkpoint: model tensors, optimizer tensors (names without prefixes) and state.
pub struct Checkpoint {
    pub model: HashMap<String, Tensor>,
    pub optimizer: HashMap<String, Tensor>,
    pub state_json: String,
}

pub fn load_checkpoint(path: &Path, device: &Device) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read checkpoint", path.display()))?;
    let (tensors, metadata) = from_safetensors(&bytes, device).with_context(|| path.display().to_string())?;
    let Some(state_json) = metadata.get("state").cloned() else {
        bail!("{}: not a CP Piano checkpoint (no trainer state)", path.display());
    };
    let mut model = HashMap::new();
    let mut optimizer = HashMap::new();
    for (name, t) in tensors {
        if let Some(n) = name.strip_prefix("model.") {
            model.insert(n.to_string(), t);
        } else if let Some(n) = name.strip_prefix("adam.") {
            optimizer.insert(n.to_string(), t);
        }
    }
    Ok(Checkpoint { model, optimizer, state_json })
}

/// Writes exported weights: `config.json` and `model.safetensors` in `dtype` (bf16 to ship).
pub fn export_weights(dir: &Path, config_json: &str, tensors: &[(String, Tensor)], dtype: DType) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))?;
    write_atomically(&dir.join(WEIGHTS_FILE), &to_safetensors(tensors, dtype, HashMap::new())?)?;
    write_atomically(&dir.join(CONFIG_FILE), config_json.as_bytes())
}

/// Exported weights read back: the model kind's config JSON and f32 tensors.
pub struct Weights {
    pub config_json: String,
    pub tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// Reads a weights folder.
    pub fn load_dir(dir: &Path) -> Result<Weights> {
        let config = std::fs::read_to_string(dir.join(CONFIG_FILE))
            .with_context(|| format!("{}: cannot read", dir.join(CONFIG_FILE).display()))?;
        let bytes = std::fs::read(dir.join(WEIGHTS_FILE))
            .with_context(|| format!("{}: cannot read", dir.join(WEIGHTS_FILE).display()))?;
        Weights::from_bytes(&config, &bytes).with_context(|| dir.display().to_string())
    }

    /// Reads weights from memory (the shipped weights are embedded in the binary).
    pub fn from_bytes(config_json: &str, safetensors: &[u8]) -> Result<Weights> {
        let (tensors, _) = from_safetensors(safetensors, &Device::Cpu)?;
        Ok(Weights { config_json: config_json.to_string(), tensors })
    }

    /// The model's config, CP or REMI-XL.
    pub fn model_config(&self) -> Result<ModelConfig> {
        let config: ModelConfig = serde_json::from_str(&self.config_json).context("config.json is neither a CP nor a REMI-XL model config")?;
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }

    /// The CP model's config.
    pub fn cp_config(&self) -> Result<Config> {
        match self.model_config()? {
            ModelConfig::Cp(c) => Ok(c),
            ModelConfig::RemiXl(_) => anyhow::bail!("these are REMI-XL weights; this needs a CP model (use --model remi-xl)"),
        }
    }

    /// The REMI-XL model's config.
    pub fn xl_config(&self) -> Result<XlConfig> {
        match self.model_config()? {
            ModelConfig::RemiXl(c) => Ok(c),
            ModelConfig::Cp(_) => anyhow::bail!("these are CP weights; this needs a REMI-XL model"),
        }
    }
}
