//! GELU (exact erf form) as one vectorised pass forward and one backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::simd::{self, map2_kernel, map_kernel};
use super::{contiguous_f32, map2_par, map_par};

const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

map_kernel!(
    /// gelu(x) = x (1 + erf(x / sqrt 2)) / 2.
    gelu_slice,
    |x| 0.5 * x * (1.0 + simd::erf(x * std::f32::consts::FRAC_1_SQRT_2))
);

map2_kernel!(
    /// g gelu'(x).
    gelu_grad_slice,
    |x, g| g * (0.5 * (1.0 + simd::erf(x * std::f32::consts::FRAC_1_SQRT_2)) + x * FRAC_1_SQRT_2PI * simd::exp(-0.5 * x * x))
);

pub struct Gelu;
struct GeluGrad;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "fused-gelu-erf"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        Ok((CpuStorage::F32(map_par(x, gelu_slice)), l.shape().clone()))
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
        Ok((CpuStorage::F32(map2_par(x, g, gelu_grad_slice)), l1.shape().clone()))
    }
}
