//! Fused CPU kernels for the training form: GELU (erf), LayerNorm and the attention feature map
//! elu(x)+1, each one pass forward and one pass backward instead of candle's chains of
//! elementwise ops (which dominate a small model's step on two cores). Same mathematics as
//! the composite ops, which the wrappers use on other devices.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Rows of this many floats or more are split across threads.
const PAR_MIN: usize = 1 << 14;

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { candle_core::bail!("{op}: f32 only") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// erf by the Numerical Recipes erfc approximation (|error| < 1.2e-7); shared with `cp_rnn`.
pub fn erf(x: f32) -> f32 {
    let x = x as f64;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let y = 1.0
        - t * (-x * x - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    (if x >= 0.0 { y } else { -y }) as f32
}

fn map_par(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(PAR_MIN).zip(x.par_chunks(PAR_MIN)).for_each(|(o, i)| {
        for (o, &v) in o.iter_mut().zip(i) {
            *o = f(v);
        }
    });
    out
}

fn map2_par(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(PAR_MIN).zip(a.par_chunks(PAR_MIN).zip(b.par_chunks(PAR_MIN))).for_each(|(o, (a, b))| {
        for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
            *o = f(x, y);
        }
    });
    out
}

struct Gelu;
struct GeluGrad;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "fused-gelu-erf"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        Ok((CpuStorage::F32(map_par(x, |v| 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2)))), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluGrad)?))
    }
}

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "fused-gelu-erf-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let g = contiguous_f32(s2, l2, self.name())?;
        let k = 1.0 / (2.0 * std::f32::consts::PI).sqrt();
        let out = map2_par(x, g, |x, g| {
            g * (0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)) + x * k * (-0.5 * x * x).exp())
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

struct FeatureMap;
struct FeatureMapGrad;

impl CustomOp1 for FeatureMap {
    fn name(&self) -> &'static str {
        "fused-elu-plus-one"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        Ok((CpuStorage::F32(map_par(x, |v| if v > 0.0 { v + 1.0 } else { v.exp() })), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &FeatureMapGrad)?))
    }
}

impl CustomOp2 for FeatureMapGrad {
    fn name(&self) -> &'static str {
        "fused-elu-plus-one-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let g = contiguous_f32(s2, l2, self.name())?;
        Ok((CpuStorage::F32(map2_par(x, g, |x, g| if x > 0.0 { g } else { g * x.exp() })), l1.shape().clone()))
    }
}

/// LayerNorm over the last dimension: y = (x - mean) / sqrt(var + eps) * w + b.
struct Norm {
    eps: f32,
}
/// d/dx of LayerNorm, from (x, w, grad).
struct NormGradInput {
    eps: f32,
}
/// d/dw and d/db of LayerNorm, from (x, grad): a (2, d) tensor.
struct NormGradParams {
    eps: f32,
}

fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for Norm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let b = contiguous_f32(s3, l3, self.name())?;
        let d = w.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(o, row)| {
            let (mean, inv) = row_stats(row, self.eps);
            for i in 0..d {
                o[i] = (row[i] - mean) * inv * w[i] + b[i];
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = x.apply_op3_no_bwd(w, &grad, &NormGradInput { eps: self.eps })?;
        let dwb = x.apply_op2_no_bwd(&grad, &NormGradParams { eps: self.eps })?;
        Ok((Some(dx), Some(dwb.get(0)?), Some(dwb.get(1)?)))
    }
}

impl CustomOp3 for NormGradInput {
    fn name(&self) -> &'static str {
        "fused-layer-norm-grad-input"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let g = contiguous_f32(s3, l3, self.name())?;
        let d = w.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d).zip(x.par_chunks(d).zip(g.par_chunks(d))).for_each(|(o, (row, grow))| {
            let (mean, inv) = row_stats(row, self.eps);
            // dx = inv * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = grad * w.
            let mut mean_gw = 0f32;
            let mut mean_gwx = 0f32;
            for i in 0..d {
                let gw = grow[i] * w[i];
                mean_gw += gw;
                mean_gwx += gw * (row[i] - mean) * inv;
            }
            mean_gw /= d as f32;
            mean_gwx /= d as f32;
            for i in 0..d {
                let xhat = (row[i] - mean) * inv;
                o[i] = inv * (grow[i] * w[i] - mean_gw - xhat * mean_gwx);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

impl CustomOp2 for NormGradParams {
    fn name(&self) -> &'static str {
        "fused-layer-norm-grad-params"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let g = contiguous_f32(s2, l2, self.name())?;
        let d = *l1.dims().last().expect("rank >= 1");
        let rows_per_task = (PAR_MIN / d).max(1);
        let sums = x
            .par_chunks(d * rows_per_task)
            .zip(g.par_chunks(d * rows_per_task))
            .map(|(xs, gs)| {
                let mut acc = vec![0f32; 2 * d];
                for (row, grow) in xs.chunks(d).zip(gs.chunks(d)) {
                    let (mean, inv) = row_stats(row, self.eps);
                    for i in 0..d {
                        acc[i] += grow[i] * (row[i] - mean) * inv;
                        acc[d + i] += grow[i];
                    }
                }
                acc
            })
            .reduce(|| vec![0f32; 2 * d], |a, b| a.iter().zip(&b).map(|(x, y)| x + y).collect());
        Ok((CpuStorage::F32(sums), Shape::from((2, d))))
    }
}

/// GELU with the exact erf form.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(Gelu)
    } else {
        x.gelu_erf()
    }
}

/// The attention feature map elu(x) + 1.
pub fn feature_map(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(FeatureMap)
    } else {
        x.elu(1.0)? + 1.0
    }
}

/// LayerNorm over the last dimension.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op3(weight, bias, Norm { eps })
    } else {
        candle_nn::ops::layer_norm_slow(x, weight, bias, eps)
    }
}

/// Reference forms, for tests: the composite candle ops these kernels replace.
pub mod reference {
    use super::*;

    pub fn gelu(x: &Tensor) -> Result<Tensor> {
        x.gelu_erf()
    }
    pub fn feature_map(x: &Tensor) -> Result<Tensor> {
        x.elu(1.0)? + 1.0
    }
    pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
        candle_nn::ops::layer_norm_slow(x, weight, bias, eps)
    }
}
