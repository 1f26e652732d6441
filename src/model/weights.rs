//! Weights files: a weights folder (`config.json` + `model.safetensors`, the form `generate
//! --weights DIR`, the plugin and `weights/` use), its export, and the shipped model embedded in
//! the binary (CLI and plugin alike) so a fresh checkout generates with no download; the CP and
//! REMI-XL loaders side by side.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::data::dataset::write_atomically;
use crate::model::config::Config;
use crate::model::cp_rnn::CpRnn;
use crate::model::cpu::{LoadError, Precision};
use crate::model::remi_xl::XlConfig;
use crate::model::remi_xl_stream::RemiXlStream;
use crate::model::ModelConfig;

/// Why weights could not be read, written or turned into a model.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{}: cannot read: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{}: a training run's folder, not weights: give its best/ or last/", .0.display())]
    RunFolder(PathBuf),
    #[error("{}: cannot write: {message}", path.display())]
    Write { path: PathBuf, message: String },
    #[error("not a safetensors file: {0}")]
    NotSafetensors(String),
    #[error("{WEIGHTS_FILE} does not match the checksum in {CONFIG_FILE} (the file was changed or damaged)")]
    Checksum,
    #[error("{CONFIG_FILE}: {CHECKSUM_KEY} is {0}, not a checksum string")]
    ChecksumField(String),
    #[error("{WEIGHTS_FILE}: tensor {0} holds NaN or infinite values")]
    NonFinite(String),
    #[error("{CONFIG_FILE}: {0}")]
    Config(String),
    #[error("{CONFIG_FILE}: {0}")]
    InvalidConfig(#[from] crate::model::config::ConfigError),
    #[error("this build has no shipped weights (weights/ is empty): pass --weights DIR, e.g. a run's best/ folder")]
    NoShipped,
    #[error("this build has no REMI-XL weights (weights/remi-xl/ is empty): pass a weights folder, e.g. a run's best/")]
    NoShippedRemiXl,
    #[error("{0}")]
    WrongKind(&'static str),
    #[error("cannot average: {0}")]
    Average(String),
    #[error(transparent)]
    Model(#[from] LoadError),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// Any of the above, in a weights folder.
    #[error("{}: {error}", dir.display())]
    InFolder { dir: PathBuf, error: Box<WeightsError> },
}

type Result<T> = std::result::Result<T, WeightsError>;

/// File names inside a weights folder.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Serialises named tensors (converted to `dtype`) with string metadata.
pub fn to_safetensors(tensors: &[(String, Tensor)], dtype: DType, metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let converted = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_dtype(dtype)?.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<Vec<(String, Tensor)>>>()?;
    safetensors::serialize(converted.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata)).map_err(|e| WeightsError::NotSafetensors(e.to_string()))
}

/// Reads named tensors (as f32 on `device`) and the metadata of a safetensors buffer.
pub fn from_safetensors(bytes: &[u8], device: &Device) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| WeightsError::NotSafetensors(e.to_string()))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(bytes, device)?
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    Ok((tensors, metadata))
}

/// The key in `config.json` that holds the checksum of `model.safetensors`.
pub const CHECKSUM_KEY: &str = "weights_checksum";

/// The checksum recorded for a weights file: 64-bit FNV-1a of its bytes, as `fnv1a64:<hex>`.
/// It is there to catch changed or damaged bytes, not a forgery.
pub fn checksum(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("fnv1a64:{hash:016x}")
}

/// Writes exported weights: `model.safetensors` in `dtype` (bf16 to ship), and `config.json`
/// with the checksum of those bytes.
pub fn export_weights(dir: &Path, config_json: &str, tensors: &[(String, Tensor)], dtype: DType) -> Result<()> {
    let bytes = to_safetensors(tensors, dtype, HashMap::new())?;
    let mut config = config_object(config_json)?;
    config.insert(CHECKSUM_KEY.into(), checksum(&bytes).into());
    let config = serde_json::to_string_pretty(&config).map_err(|e| WeightsError::Config(e.to_string()))?;
    for (name, bytes) in [(WEIGHTS_FILE, &bytes[..]), (CONFIG_FILE, config.as_bytes())] {
        let path = dir.join(name);
        write_atomically(&path, bytes).map_err(|e| WeightsError::Write { path, message: format!("{e:#}") })?;
    }
    Ok(())
}

/// The config text as a JSON object.
fn config_object(text: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
    serde_json::from_str(text).map_err(|e| WeightsError::Config(format!("not a JSON object ({e})")))
}

/// Exported weights read back: the model kind's config JSON and f32 tensors.
pub struct Weights {
    pub config_json: String,
    pub tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// Reads a weights folder.
    pub fn load_dir(dir: &Path) -> Result<Weights> {
        if !dir.join(CONFIG_FILE).exists() && dir.join("checkpoint.safetensors").exists() {
            return Err(WeightsError::RunFolder(dir.to_path_buf()));
        }
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|error| WeightsError::Read { path, error })
        };
        let config = String::from_utf8_lossy(&read(CONFIG_FILE)?).into_owned();
        let bytes = read(WEIGHTS_FILE)?;
        Weights::from_bytes(&config, &bytes).map_err(|e| WeightsError::InFolder { dir: dir.to_path_buf(), error: Box::new(e) })
    }

    /// Reads weights from memory (the shipped weights are embedded in the binary). Refuses
    /// bytes that do not match the checksum the config records (folders exported before there
    /// were checksums have none, and load unchecked) and tensors that hold NaN or infinity.
    pub fn from_bytes(config_json: &str, safetensors: &[u8]) -> Result<Weights> {
        let mut config = config_object(config_json)?;
        match config.remove(CHECKSUM_KEY) {
            Some(serde_json::Value::String(recorded)) if recorded != checksum(safetensors) => return Err(WeightsError::Checksum),
            Some(serde_json::Value::String(_)) | None => {}
            Some(other) => return Err(WeightsError::ChecksumField(other.to_string())),
        }
        let (tensors, _) = from_safetensors(safetensors, &Device::Cpu)?;
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        for name in names {
            let finite = tensors[name].flatten_all()?.to_vec1::<f32>()?.iter().all(|v| v.is_finite());
            if !finite {
                return Err(WeightsError::NonFinite(name.clone()));
            }
        }
        let config_json = serde_json::to_string(&config).map_err(|e| WeightsError::Config(e.to_string()))?;
        Ok(Weights { config_json, tensors })
    }

    /// The elementwise mean of several weights of one model (checkpoint averaging: the mean of
    /// a run's last few validation checkpoints usually scores a lower validation loss than any
    /// one of them). Refuses weights whose configs, tensor names or shapes differ.
    pub fn average(all: &[Weights]) -> Result<Weights> {
        let Some(first) = all.first() else { return Err(WeightsError::Average("no weights to average".into())) };
        let parse = |w: &Weights| serde_json::from_str::<serde_json::Value>(&w.config_json).map_err(|e| WeightsError::Config(e.to_string()));
        let config = parse(first)?;
        let mut tensors = HashMap::new();
        for (i, w) in all.iter().enumerate().skip(1) {
            if parse(w)? != config {
                return Err(WeightsError::Average(format!("weights {} have another config than weights 1", i + 1)));
            }
            if w.tensors.len() != first.tensors.len() {
                return Err(WeightsError::Average(format!("weights {} have {} tensors, weights 1 have {}", i + 1, w.tensors.len(), first.tensors.len())));
            }
        }
        for (name, t) in &first.tensors {
            let mut sum = t.to_dtype(DType::F32)?;
            for (i, w) in all.iter().enumerate().skip(1) {
                let other = w.tensors.get(name).ok_or_else(|| WeightsError::Average(format!("weights {} lack tensor {name}", i + 1)))?;
                if other.dims() != t.dims() {
                    return Err(WeightsError::Average(format!("tensor {name} is {:?} in weights {} but {:?} in weights 1", other.dims(), i + 1, t.dims())));
                }
                sum = (sum + other.to_dtype(DType::F32)?)?;
            }
            tensors.insert(name.clone(), (sum / all.len() as f64)?);
        }
        Ok(Weights { config_json: first.config_json.clone(), tensors })
    }

    /// The model's config, CP or REMI-XL.
    pub fn model_config(&self) -> Result<ModelConfig> {
        let config: ModelConfig = serde_json::from_str(&self.config_json).map_err(|_| WeightsError::Config("neither a CP nor a REMI-XL model config".into()))?;
        config.validate()?;
        Ok(config)
    }

    /// The CP model's config.
    pub fn cp_config(&self) -> Result<Config> {
        match self.model_config()? {
            ModelConfig::Cp(c) => Ok(c),
            ModelConfig::RemiXl(_) => Err(WeightsError::WrongKind("these are REMI-XL weights; this needs a CP model (use --model remi-xl)")),
        }
    }

    /// The REMI-XL model's config.
    pub fn xl_config(&self) -> Result<XlConfig> {
        match self.model_config()? {
            ModelConfig::RemiXl(c) => Ok(c),
            ModelConfig::Cp(_) => Err(WeightsError::WrongKind("these are CP weights; this needs a REMI-XL model")),
        }
    }
}

/// The shipped weights (config JSON, safetensors bytes), when this build has them.
pub fn shipped() -> Option<(&'static str, &'static [u8])> {
    #[cfg(shipped_weights)]
    {
        Some((
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/config.json")),
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/model.safetensors")),
        ))
    }
    #[cfg(not(shipped_weights))]
    {
        None
    }
}

/// Loads CP weights from `dir`, or the shipped weights when `dir` is `None`.
pub fn load_weights(dir: Option<&Path>) -> Result<Weights> {
    match dir {
        Some(dir) => Weights::load_dir(dir),
        None => match shipped() {
            Some((config, bytes)) => Weights::from_bytes(config, bytes),
            None => Err(WeightsError::NoShipped),
        },
    }
}

/// The recurrent CP model from `dir` or the shipped weights.
pub fn load_cp_rnn(dir: Option<&Path>, precision: Precision) -> Result<CpRnn> {
    let weights = load_weights(dir)?;
    Ok(CpRnn::from_tensors(&weights.cp_config()?, &weights.tensors, precision)?)
}

/// REMI-XL weights from `dir`, or from `shipped` (config JSON, safetensors bytes: the command
/// line embeds weights/remi-xl/) when `dir` is `None`.
pub fn load_remi_xl_weights(dir: Option<&Path>, shipped: Option<(&str, &[u8])>) -> Result<Weights> {
    match (dir, shipped) {
        (Some(dir), _) => Weights::load_dir(dir),
        (None, Some((config, bytes))) => Weights::from_bytes(config, bytes),
        (None, None) => Err(WeightsError::NoShippedRemiXl),
    }
}

/// The streaming REMI-XL model from `dir` or the shipped weights.
pub fn load_remi_xl_stream(dir: Option<&Path>, shipped: Option<(&str, &[u8])>, precision: Precision) -> Result<RemiXlStream> {
    let weights = load_remi_xl_weights(dir, shipped)?;
    Ok(RemiXlStream::from_tensors(&weights.xl_config()?, &weights.tensors, precision)?)
}
