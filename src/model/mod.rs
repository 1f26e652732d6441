//! Models: the CP linear transformer (training form in candle, recurrent form in plain Rust),
//! the REMI Transformer-XL baseline (candle, and token by token in plain Rust), their
//! configurations and seeded initialisation, and `Trainable`, what the trainer holds of either.

pub mod config;
pub mod cpu;
pub mod cp_rnn;
pub mod cp_transformer;
pub mod fused;
pub mod init;
pub mod layers;
pub mod remi_xl;
pub mod remi_xl_stream;
pub mod weights;

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::tokens::cp::FAMILY_NAMES;
use crate::data::dataset::Representation;
use config::Config;
use crate::data::batches::Batch;
use cp_transformer::CpTransformer;
use layers::Dropout;
use remi_xl::{RemiXl, XlConfig};

/// Which model: the product's CP linear transformer or the REMI Transformer-XL baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    #[default]
    Cp,
    RemiXl,
}

impl ModelKind {
    /// The tokens this model reads.
    pub fn representation(self) -> Representation {
        match self {
            ModelKind::Cp => Representation::Cp,
            ModelKind::RemiXl => Representation::Remi,
        }
    }

    /// The preset of this kind by name.
    pub fn preset(self, name: &str) -> Option<ModelConfig> {
        match self {
            ModelKind::Cp => Config::preset(name).map(ModelConfig::Cp),
            ModelKind::RemiXl => XlConfig::preset(name).map(ModelConfig::RemiXl),
        }
    }
}

/// A model's configuration as stored in config.json and checkpoints. The two kinds have
/// different fields, so the JSON says which it is by its shape (CP configs written before
/// REMI-XL existed read unchanged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ModelConfig {
    Cp(Config),
    RemiXl(XlConfig),
}

impl From<Config> for ModelConfig {
    fn from(c: Config) -> ModelConfig {
        ModelConfig::Cp(c)
    }
}

impl From<&Config> for ModelConfig {
    fn from(c: &Config) -> ModelConfig {
        ModelConfig::Cp(c.clone())
    }
}

impl From<&XlConfig> for ModelConfig {
    fn from(c: &XlConfig) -> ModelConfig {
        ModelConfig::RemiXl(c.clone())
    }
}

impl From<XlConfig> for ModelConfig {
    fn from(c: XlConfig) -> ModelConfig {
        ModelConfig::RemiXl(c)
    }
}

impl ModelConfig {
    pub fn kind(&self) -> ModelKind {
        match self {
            ModelConfig::Cp(_) => ModelKind::Cp,
            ModelConfig::RemiXl(_) => ModelKind::RemiXl,
        }
    }

    pub fn d_model(&self) -> usize {
        match self {
            ModelConfig::Cp(c) => c.d_model,
            ModelConfig::RemiXl(c) => c.d_model,
        }
    }

    pub fn dropout(&self) -> f32 {
        match self {
            ModelConfig::Cp(c) => c.dropout,
            ModelConfig::RemiXl(c) => c.dropout,
        }
    }

    /// Names of the losses the model reports (CP: one per family; REMI: one).
    pub fn loss_names(&self) -> Vec<&'static str> {
        match self {
            ModelConfig::Cp(_) => FAMILY_NAMES.to_vec(),
            ModelConfig::RemiXl(_) => vec!["token"],
        }
    }

    /// Checks the sizes fit together.
    pub fn validate(&self) -> std::result::Result<(), config::ConfigError> {
        match self {
            ModelConfig::Cp(c) => c.validate(),
            ModelConfig::RemiXl(c) => c.validate(),
        }
    }
}

/// The network inside a `Trainable`.
pub enum Network {
    Cp(CpTransformer),
    RemiXl(RemiXl),
}

/// A trainable model: the network and its named variables (sorted by name).
pub struct Trainable {
    pub config: ModelConfig,
    pub network: Network,
    pub varmap: VarMap,
}

impl Trainable {
    /// A model initialised from `seed`.
    pub fn new(config: impl Into<ModelConfig>, seed: u64, device: &Device) -> Result<Trainable> {
        let config = config.into();
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let network = match &config {
            ModelConfig::Cp(c) => Network::Cp(CpTransformer::new(c, vb)?),
            ModelConfig::RemiXl(c) => Network::RemiXl(RemiXl::new(c, vb)?),
        };
        let t = Trainable { config, network, varmap };
        init::init_params(&t.named_vars(), seed)?;
        Ok(t)
    }

    /// The CP network (panics for a REMI-XL model: for tests and CP-only tools).
    pub fn cp(&self) -> &CpTransformer {
        match &self.network {
            Network::Cp(m) => m,
            Network::RemiXl(_) => panic!("a REMI-XL model, not CP"),
        }
    }

    /// Teacher-forced loss of a batch: (mean loss, per-loss-name values).
    /// Mean teacher-forced loss per family (per token for REMI-XL) over `windows` of `data`,
    /// weighted by their lengths, without dropout: the validation loss of training and eval.
    pub fn validation_loss(&self, data: &crate::data::dataset::Dataset, windows: &[crate::data::batches::Window], batch_size: usize, device: &Device) -> Result<Vec<f64>> {
        let mut sums = vec![0f64; self.config.loss_names().len()];
        let mut words = 0f64;
        for chunk in windows.chunks(batch_size.max(1)) {
            let batch = crate::data::batches::make_batch(data, chunk, &[], self.config.d_model(), device)?;
            let (_, per_family) = self.loss(&batch, None)?;
            let n = chunk.iter().map(|w| w.len).sum::<usize>() as f64;
            for (s, l) in sums.iter_mut().zip(per_family.to_vec1::<f32>()?) {
                *s += l as f64 * n;
            }
            words += n;
        }
        Ok(sums.iter().map(|s| s / words.max(1.0)).collect())
    }

    pub fn loss(&self, batch: &Batch, dropout: Option<&mut Dropout>) -> Result<(Tensor, Tensor)> {
        match &self.network {
            Network::Cp(m) => m.loss(batch, dropout),
            Network::RemiXl(m) => m.loss(batch, dropout),
        }
    }

    /// Variables by name, sorted.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("var map lock");
        let mut vars: Vec<(String, Var)> = data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Named tensors (for saving).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.named_vars().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect()
    }

    /// Overwrites every variable from `tensors`; a missing or misshapen tensor is an error.
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (name, var) in self.named_vars() {
            let Some(t) = tensors.get(&name) else { candle_core::bail!("weights lack {name}") };
            if t.dims() != var.dims() {
                candle_core::bail!("{name}: weights have shape {:?}, the model {:?}", t.dims(), var.dims());
            }
            var.set(&t.to_device(var.device())?.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }

    /// Number of parameters.
    pub fn parameter_count(&self) -> usize {
        self.named_vars().iter().map(|(_, v)| v.elem_count()).sum()
    }
}
