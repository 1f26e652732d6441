//! AdamW with gradient clipping by global norm, with its state open for checkpoints (candle's
//! own AdamW keeps its moments private, so it cannot resume exactly).
//!
//! Update per parameter p with gradient g at step t (1-based):
//! m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
//! p = p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) - lr wd p.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// Hyper-parameters of AdamW.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.98, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// AdamW over named parameters (sorted by name, so the order is stable).
pub struct AdamW {
    pub config: AdamWConfig,
    pub params: Vec<(String, Var)>,
    /// First and second moments, one per parameter.
    pub moments: Vec<(Var, Var)>,
    /// Updates taken so far.
    pub step: u64,
}

impl AdamW {
    pub fn new(mut params: Vec<(String, Var)>, config: AdamWConfig) -> Result<AdamW> {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let moments = params
            .iter()
            .map(|(_, p)| Ok((Var::from_tensor(&p.as_tensor().zeros_like()?)?, Var::from_tensor(&p.as_tensor().zeros_like()?)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW { config, params, moments, step: 0 })
    }

    /// Global L2 norm of the gradients.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut total = 0f64;
        for (_, p) in &self.params {
            if let Some(g) = grads.get(p.as_tensor()) {
                total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        Ok(total.sqrt())
    }

    /// Clips gradients to `max_norm` (global norm), takes one step at `lr`, and returns the
    /// norm before clipping.
    pub fn step(&mut self, grads: &GradStore, lr: f64, max_norm: f64) -> Result<f64> {
        let norm = self.grad_norm(grads)?;
        let scale = if norm > max_norm { max_norm / (norm + 1e-12) } else { 1.0 };
        self.step += 1;
        let c = self.config;
        let correction1 = 1.0 - c.beta1.powi(self.step as i32);
        let correction2 = 1.0 - c.beta2.powi(self.step as i32);
        for ((_, p), (m, v)) in self.params.iter().zip(&self.moments) {
            let Some(g) = grads.get(p.as_tensor()) else { continue };
            let g = (g * scale)?;
            let new_m = ((m.as_tensor() * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let new_v = ((v.as_tensor() * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&new_m / correction1)? / ((&new_v / correction2)?.sqrt()? + c.eps)?)?;
            let decayed = (p.as_tensor() * (1.0 - lr * c.weight_decay))?;
            p.set(&(decayed - (update * lr)?)?)?;
            m.set(&new_m)?;
            v.set(&new_v)?;
        }
        Ok(norm)
    }

    /// Named state tensors for a checkpoint: `m.NAME` and `v.NAME`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.params.len() * 2);
        for ((name, _), (m, v)) in self.params.iter().zip(&self.moments) {
            out.push((format!("m.{name}"), m.as_tensor().clone()));
            out.push((format!("v.{name}"), v.as_tensor().clone()));
        }
        out
    }

    /// Restores moments from checkpoint tensors (by name).
    pub fn load_state(&mut self, get: impl Fn(&str) -> Option<Tensor>, step: u64) -> Result<()> {
        for ((name, _), (m, v)) in self.params.iter().zip(&self.moments) {
            let (Some(tm), Some(tv)) = (get(&format!("m.{name}")), get(&format!("v.{name}"))) else {
                candle_core::bail!("checkpoint lacks optimizer state for {name}");
            };
            m.set(&tm)?;
            v.set(&tv)?;
        }
        self.step = step;
        Ok(())
    }
}

/// Learning rate at `step` (0-based): linear warm-up to `peak` over `warmup` steps, then a cosine
/// decay to a tenth of `peak` at `total` steps (and flat after).
pub fn learning_rate(step: u64, peak: f64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    peak * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
}
