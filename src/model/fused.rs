//! Fused CPU ops for the training form, each one custom op with its own backward instead of
//! candle's chains of small ops (which dominate a small model's step on a few cores):
//! `linear` (bias + one GEMM), `attention` (chunked causal linear attention, split by batch x
//! head), `window` (sliding-window causal softmax attention, split the same way), `norm` (LayerNorm), `activation` (GELU), `dropout` (masks recomputed from a seed, and
//! the residual add fused with them). `simd` holds the vectorised math they share. Same
//! mathematics as the composite candle forms in `reference`, which the wrappers use on other
//! devices and the tests compare against. Tensors in, tensors out: no model, no files.

pub mod activation;
pub mod attention;
pub mod dropout;
pub mod linear;
mod norm;
pub mod simd;
pub mod window;

use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};
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

/// Runs `f` on the f32 values of a contiguous CPU tensor.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => Ok(f(contiguous_f32(s, layout, "fused op")?)),
        _ => candle_core::bail!("fused op: a CPU tensor was expected"),
    }
}

/// A slice kernel (`simd::map_kernel!`) over x, split across threads.
fn map_par(x: &[f32], kernel: fn(&[f32], &mut [f32])) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(PAR_MIN).zip(x.par_chunks(PAR_MIN)).for_each(|(o, i)| kernel(i, o));
    out
}

/// A two-input slice kernel (`simd::map2_kernel!`) over a and b, split across threads.
fn map2_par(a: &[f32], b: &[f32], kernel: fn(&[f32], &[f32], &mut [f32])) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(PAR_MIN).zip(a.par_chunks(PAR_MIN).zip(b.par_chunks(PAR_MIN))).for_each(|(o, (a, b))| kernel(a, b, o));
    out
}

/// GELU with the exact erf form.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(activation::Gelu)
    } else {
        x.gelu_erf()
    }
}

/// The attention feature map elu(x) + 1.
pub fn feature_map(x: &Tensor) -> Result<Tensor> {
    x.elu(1.0)? + 1.0
}

/// LayerNorm over the last dimension.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op3(weight, bias, norm::Norm { eps })
    } else {
        candle_nn::ops::layer_norm_slow(x, weight, bias, eps)
    }
}

/// x W^T + b over the last dimension of x.
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op3(weight, bias, linear::Linear)
    } else {
        reference::linear(x, weight, bias)
    }
}

/// Causal linear attention of (batch, time, heads * head_dim) q and k (before the feature map)
/// and v; returns (batch, time, heads * head_dim).
pub fn linear_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    if q.device().is_cpu() {
        q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, attention::LinearAttention { heads })
    } else {
        reference::linear_attention(q, k, v, heads)
    }
}

/// Causal softmax attention of each word over the last `window` words (itself included), for
/// (batch, time, heads * head_dim) q, k and v; returns (batch, time, heads * head_dim).
pub fn window_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, window: usize) -> Result<Tensor> {
    if q.device().is_cpu() {
        q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, window::WindowAttention { heads, window })
    } else {
        reference::window_attention(q, k, v, heads, window)
    }
}

/// The composite candle forms of the fused ops (other devices use them; tests compare).
pub mod reference {
    use candle_core::{DType, Result, Tensor, D};

    use super::attention::{CHUNK, EPS};

    pub fn gelu(x: &Tensor) -> Result<Tensor> {
        x.gelu_erf()
    }

    pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
        candle_nn::ops::layer_norm_slow(x, weight, bias, eps)
    }

    pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
        linear_no_bias(x, weight)?.broadcast_add(bias)
    }

    /// x W^T over the last dimension of x, as one matmul of the flattened rows.
    pub fn linear_no_bias(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().expect("rank >= 1");
        let rows = x.elem_count() / in_dim;
        let y = x.reshape((rows, in_dim))?.matmul(&weight.t()?)?;
        let mut out = dims;
        *out.last_mut().expect("rank >= 1") = weight.dim(0)?;
        y.reshape(out)
    }

    /// Sliding-window causal softmax attention in candle ops, in chunks of queries: each
    /// chunk's scores over the keys from its first query's window start, masked, softmaxed.
    pub fn window_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, window: usize) -> Result<Tensor> {
        let (b, t, d) = q.dims3()?;
        let dh = d / heads;
        let split = |x: &Tensor| -> Result<Tensor> { x.reshape((b, t, heads, dh))?.transpose(1, 2)?.contiguous() };
        let q = (split(q)? * (1.0 / (dh as f64).sqrt()))?;
        let (k, v) = (split(k)?, split(v)?);
        let chunk = super::window::QUERY_CHUNK;
        let mut outs = Vec::new();
        for s in (0..t).step_by(chunk) {
            let n = chunk.min(t - s);
            let first = (s + 1).saturating_sub(window);
            let keys = s + n - first;
            let mask: Vec<f32> = (0..n * keys)
                .map(|at| {
                    let (i, j) = (s + at / keys, first + at % keys);
                    if j <= i && j + window > i { 0.0 } else { f32::NEG_INFINITY }
                })
                .collect();
            let mask = Tensor::from_vec(mask, (n, keys), q.device())?;
            let scores = q.narrow(2, s, n)?.matmul(&k.narrow(2, first, keys)?.t()?)?.broadcast_add(&mask)?;
            let p = candle_nn::ops::softmax(&scores, D::Minus1)?;
            outs.push(p.matmul(&v.narrow(2, first, keys)?.contiguous()?)?);
        }
        Tensor::cat(&outs, 2)?.transpose(1, 2)?.reshape((b, t, d))
    }

    /// Chunked causal linear attention in candle ops: the masked quadratic form inside a chunk
    /// of `CHUNK` words, prefix states across chunks (time padded to a multiple of `CHUNK`).
    pub fn linear_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
        let (b, t, d) = q.dims3()?;
        let dh = d / heads;
        let pad = t.div_ceil(CHUNK) * CHUNK - t;
        let split = |x: &Tensor| -> Result<Tensor> {
            let x = if pad > 0 { x.pad_with_zeros(1, 0, pad)? } else { x.clone() };
            x.reshape((b, t + pad, heads, dh))?.transpose(1, 2)?.contiguous()
        };
        let (q, k, v) = (split(&super::feature_map(q)?)?, split(&super::feature_map(k)?)?, split(v)?);
        let tp = t + pad;
        let n = tp / CHUNK;
        let device = q.device();
        let bhn = b * heads * n;
        let qc = q.reshape((bhn, CHUNK, dh))?;
        let kc = k.reshape((bhn, CHUNK, dh))?;
        let vc = v.reshape((bhn, CHUNK, dh))?;
        let causal = Tensor::tril2(CHUNK, DType::F32, device)?;
        let scores = qc.matmul(&kc.t()?)?.broadcast_mul(&causal)?;
        let num_intra = scores.matmul(&vc)?;
        let den_intra = scores.sum(D::Minus1)?;
        let prefix = (Tensor::tril2(n, DType::F32, device)? - Tensor::eye(n, DType::F32, device)?)?;
        let prefix = prefix.unsqueeze(0)?.broadcast_as((b * heads, n, n))?.contiguous()?;
        let kv = kc.t()?.matmul(&vc)?.reshape((b * heads, n, dh * dh))?;
        let kv_before = prefix.matmul(&kv)?.reshape((bhn, dh, dh))?;
        let z = kc.sum(1)?.reshape((b * heads, n, dh))?;
        let z_before = prefix.matmul(&z)?.reshape((bhn, 1, dh))?;
        let num = (num_intra + qc.matmul(&kv_before)?)?;
        let den = ((den_intra + qc.broadcast_mul(&z_before)?.sum(D::Minus1)?)? + EPS as f64)?;
        let out = num.broadcast_div(&den.unsqueeze(D::Minus1)?)?.reshape((b, heads, tp, dh))?;
        out.transpose(1, 2)?.reshape((b, tp, d))?.narrow(1, 0, t)
    }
}
