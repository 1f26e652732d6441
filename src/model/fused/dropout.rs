//! Dropout with masks that are a pure function of (seed, call, element): the backward pass
//! recomputes the mask instead of storing it, training and its resume are reproducible, and
//! every device draws the same mask. `ResidualDropout` fuses the residual add, x + drop(y).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, PAR_MIN};

/// The dropout of one training step: rate, seed, and how many masks it has drawn.
#[derive(Debug, Clone)]
pub struct Dropout {
    pub p: f32,
    seed: u64,
    calls: u64,
}

/// splitmix64's finaliser: a well-mixed 64-bit hash.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One mask: element i is kept (scaled by 1 / (1 - p)) unless its hash falls under p.
#[derive(Debug, Clone, Copy)]
pub struct Mask {
    key: u64,
    threshold: u32,
    keep: f32,
}

impl Mask {
    #[inline(always)]
    pub fn at(&self, i: usize) -> f32 {
        if ((mix(self.key ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 32) as u32) < self.threshold {
            0.0
        } else {
            self.keep
        }
    }

    /// out[i] = f(i, mask(i)) over a buffer, split across threads.
    fn fill(&self, out: &mut [f32], f: impl Fn(usize, f32) -> f32 + Sync) {
        out.par_chunks_mut(PAR_MIN).enumerate().for_each(|(c, block)| {
            for (j, o) in block.iter_mut().enumerate() {
                let i = c * PAR_MIN + j;
                *o = f(i, self.at(i));
            }
        });
    }

    /// The mask as a tensor of `shape` (the composite form, for other devices and tests).
    pub fn tensor(&self, shape: &Shape, device: &candle_core::Device) -> Result<Tensor> {
        let mut m = vec![0f32; shape.elem_count()];
        self.fill(&mut m, |_, k| k);
        Tensor::from_vec(m, shape, device)
    }
}

impl Dropout {
    pub fn new(p: f32, seed: u64) -> Dropout {
        Dropout { p, seed: mix(seed), calls: 0 }
    }

    /// The next mask of this step.
    pub fn next_mask(&mut self) -> Mask {
        self.calls += 1;
        Mask {
            key: mix(self.seed ^ self.calls.wrapping_mul(0xD6E8_FEB8_6659_FD93)),
            threshold: (self.p as f64 * u32::MAX as f64) as u32,
            keep: 1.0 / (1.0 - self.p),
        }
    }

    /// drop(x).
    pub fn apply(&mut self, x: &Tensor) -> Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        let mask = self.next_mask();
        if x.device().is_cpu() {
            x.contiguous()?.apply_op1(MaskOp(mask))
        } else {
            x.mul(&mask.tensor(x.shape(), x.device())?)
        }
    }

    /// residual + drop(x), one pass.
    pub fn add_to(&mut self, residual: &Tensor, x: &Tensor) -> Result<Tensor> {
        if self.p <= 0.0 {
            return residual + x;
        }
        let mask = self.next_mask();
        if x.device().is_cpu() {
            residual.contiguous()?.apply_op2(&x.contiguous()?, ResidualDropout(mask))
        } else {
            residual + x.mul(&mask.tensor(x.shape(), x.device())?)?
        }
    }
}

struct MaskOp(Mask);

impl CustomOp1 for MaskOp {
    fn name(&self) -> &'static str {
        "fused-dropout"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let mut out = vec![0f32; x.len()];
        self.0.fill(&mut out, |i, k| x[i] * k);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&MaskOp(self.0))?))
    }
}

struct ResidualDropout(Mask);

impl CustomOp2 for ResidualDropout {
    fn name(&self) -> &'static str {
        "fused-residual-dropout"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let r = contiguous_f32(s1, l1, self.name())?;
        let x = contiguous_f32(s2, l2, self.name())?;
        if r.len() != x.len() {
            candle_core::bail!("{}: shapes {:?} and {:?} differ", self.name(), l1.dims(), l2.dims());
        }
        let mut out = vec![0f32; x.len()];
        self.0.fill(&mut out, |i, k| r[i] + x[i] * k);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
    fn bwd(&self, _r: &Tensor, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = grad.contiguous()?.apply_op1_no_bwd(&MaskOp(self.0))?;
        Ok((Some(grad.clone()), Some(dx)))
    }
}
