//! LayerNorm over the last dimension, one pass forward and one backward per row (candle's own
//! fused LayerNorm has no backward, and its composite form is a chain of small ops).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, PAR_MIN};

/// LayerNorm over the last dimension: y = (x - mean) / sqrt(var + eps) * w + b.
pub struct Norm {
    pub eps: f32,
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

