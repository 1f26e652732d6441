//! Models: the CP linear transformer (training form in candle, recurrent form in plain Rust),
//! their configuration and seeded initialisation.

pub mod config;
pub mod cp_rnn;
pub mod cp_transformer;
pub mod fused;
pub mod init;

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use config::Config;
use cp_transformer::CpTransformer;

/// A trainable CP model: the module and its named variables (sorted by name).
pub struct Trainable {
    pub model: CpTransformer,
    pub varmap: VarMap,
}

impl Trainable {
    /// A model initialised from `seed`.
    pub fn new(config: &Config, seed: u64, device: &Device) -> Result<Trainable> {
        let varmap = VarMap::new();
        let model = CpTransformer::new(config, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        let t = Trainable { model, varmap };
        init::init_params(&t.named_vars(), seed)?;
        Ok(t)
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
