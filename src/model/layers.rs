//! Candle layers both training-form models share: `Linear` (optional bias; on the CPU the fused
//! op with its own backward), `Norm` (LayerNorm whose gradient reaches its input and
//! parameters; candle's own fused LayerNorm drops it) and `Dropout` (masks recomputed from a
//! seed, `fused::dropout`).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::model::cpu::LN_EPS;
use crate::model::fused;

pub use crate::model::fused::dropout::Dropout;

/// y = x W^T (+ b) over the last dimension of x (any leading dimensions).
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// With a bias (parameters `weight`, `bias`).
    pub fn new(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Linear> {
        let l = candle_nn::linear(in_dim, out_dim, vb)?;
        Ok(Linear { weight: l.weight().clone(), bias: l.bias().cloned() })
    }

    /// Without a bias (parameter `weight`).
    pub fn no_bias(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Linear> {
        Ok(Linear { weight: candle_nn::linear_no_bias(in_dim, out_dim, vb)?.weight().clone(), bias: None })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.bias {
            Some(b) => fused::linear(x, &self.weight, b),
            None => fused::reference::linear_no_bias(x, &self.weight),
        }
    }
}

/// LayerNorm over the last dimension (epsilon `LN_EPS`).
#[derive(Debug, Clone)]
pub struct Norm {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Norm {
    pub fn new(vb: VarBuilder, dim: usize) -> Result<Norm> {
        Ok(Norm {
            weight: vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        fused::layer_norm(x, &self.weight, &self.bias, LN_EPS)
    }
}
