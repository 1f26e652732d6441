//! AdamW with gradient clipping by global norm, with its state open for checkpoints (candle's
//! own AdamW keeps its moments private, so it cannot resume exactly).
//!
//! Update per parameter p with gradient g at step t (1-based):
//! m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
//! p = p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) - lr wd p.
//! On the CPU each of the three is one in-place pass per tensor, split across threads; other
//! devices use the same formula in candle ops. The gradient norm is one parallel pass too.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor, Var};
use rayon::prelude::*;

/// Elements per task when the update is split across threads.
const PAR_CHUNK: usize = 1 << 15;

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: contiguous f32 tensors only"),
    }
}

fn contiguous_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("{op}: contiguous f32 tensors only"),
    }
}

/// In place on a moment: m = beta m + (1 - beta) (scale g), or with `square` the same of
/// (scale g)^2.
struct MomentUpdate {
    beta: f32,
    scale: f32,
    square: bool,
}

impl InplaceOp2 for MomentUpdate {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }
    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let m = contiguous_mut(s1, l1, self.name())?;
        let g = contiguous(s2, l2, self.name())?;
        let (beta, rest, scale, square) = (self.beta, 1.0 - self.beta, self.scale, self.square);
        m.par_chunks_mut(PAR_CHUNK).zip(g.par_chunks(PAR_CHUNK)).for_each(|(m, g)| {
            for (m, &g) in m.iter_mut().zip(g) {
                let g = g * scale;
                *m = beta * *m + rest * if square { g * g } else { g };
            }
        });
        Ok(())
    }
}

/// In place on a parameter: p = p (1 - lr wd) - lr (m / c1) / (sqrt(v / c2) + eps).
struct ParamUpdate {
    lr: f32,
    decay: f32,
    correction1: f32,
    correction2: f32,
    eps: f32,
}

impl InplaceOp3 for ParamUpdate {
    fn name(&self) -> &'static str {
        "adamw-param"
    }
    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<()> {
        let p = contiguous_mut(s1, l1, self.name())?;
        let (m, v) = (contiguous(s2, l2, self.name())?, contiguous(s3, l3, self.name())?);
        let keep = 1.0 - self.lr * self.decay;
        p.par_chunks_mut(PAR_CHUNK).zip(m.par_chunks(PAR_CHUNK).zip(v.par_chunks(PAR_CHUNK))).for_each(|(p, (m, v))| {
            for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                *p = *p * keep - self.lr * (m / self.correction1) / ((v / self.correction2).sqrt() + self.eps);
            }
        });
        Ok(())
    }
}

/// Sum of squares of a tensor's values, in f64 (a parallel pass on CPU).
fn sum_of_squares(g: &Tensor) -> Result<f64> {
    if !g.device().is_cpu() || g.dtype() != candle_core::DType::F32 {
        return Ok(g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64);
    }
    let g = g.contiguous()?;
    let (storage, layout) = g.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else { candle_core::bail!("a CPU tensor was expected") };
    let values = contiguous(cpu, layout, "gradient norm")?;
    Ok(values.par_chunks(PAR_CHUNK).map(|c| c.iter().map(|&x| x as f64 * x as f64).sum::<f64>()).sum())
}

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
                total += sum_of_squares(g)?;
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
            if p.device().is_cpu() && p.dtype() == candle_core::DType::F32 {
                // One pass per tensor, in place: no temporaries.
                let g = g.contiguous()?;
                m.as_tensor().inplace_op2(&g, &MomentUpdate { beta: c.beta1 as f32, scale: scale as f32, square: false })?;
                v.as_tensor().inplace_op2(&g, &MomentUpdate { beta: c.beta2 as f32, scale: scale as f32, square: true })?;
                let update = ParamUpdate {
                    lr: lr as f32,
                    decay: c.weight_decay as f32,
                    correction1: correction1 as f32,
                    correction2: correction2 as f32,
                    eps: c.eps as f32,
                };
                p.as_tensor().inplace_op3(m.as_tensor(), v.as_tensor(), &update)?;
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn a_step_follows_the_adamw_formula_with_clipping() {
        // loss = sum(p * c) has gradient c; its norm (about 10.1) is clipped to 3.
        let start: Vec<f32> = (0..100).map(|i| (i as f32 - 50.0) / 25.0).collect();
        let c: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 / 5.0 - 1.0).collect();
        let p = Var::from_vec(start.clone(), 100, &Device::Cpu).unwrap();
        let ct = Tensor::from_vec(c.clone(), 100, &Device::Cpu).unwrap();
        let config = AdamWConfig::default();
        let mut opt = AdamW::new(vec![("p".into(), p.clone())], config).unwrap();
        let norm: f64 = c.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        let scale = 3.0 / (norm + 1e-12);
        let (mut want, mut m, mut v) = (start.iter().map(|&x| x as f64).collect::<Vec<_>>(), vec![0f64; 100], vec![0f64; 100]);
        for t in 1..=3 {
            let grads = (p.as_tensor() * &ct).unwrap().sum_all().unwrap().backward().unwrap();
            let reported = opt.step(&grads, 1e-2, 3.0).unwrap();
            assert!((reported - norm).abs() < 1e-4);
            for i in 0..100 {
                let g = c[i] as f64 * scale;
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.98 * v[i] + 0.02 * g * g;
                let update = (m[i] / (1.0 - 0.9f64.powi(t))) / ((v[i] / (1.0 - 0.98f64.powi(t))).sqrt() + 1e-8);
                want[i] = want[i] * (1.0 - 1e-2 * 0.01) - 1e-2 * update;
            }
        }
        let got = p.as_tensor().to_vec1::<f32>().unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{g} vs {w}");
        }
        let state = opt.state_tensors();
        let m_got = state[0].1.to_vec1::<f32>().unwrap();
        assert!(m_got.iter().zip(&m).all(|(a, b)| (*a as f64 - b).abs() < 1e-6));
    }
}
