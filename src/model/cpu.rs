//! Plain-Rust kernels of the recurrent (generation) forms of both models: linear layers in f32
//! or int8 (blocks of 32, one scale each, as ggml's Q8_0), the dot product, LayerNorm, GELU, the
//! feature map, and the sinusoidal encodings (the CP model's absolute one, Transformer-XL's
//! relative one, from one table of rates). One thread, no allocation per call; candle only to
//! read tensors at load time.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;

use crate::model::fused::simd::erf;

/// LayerNorm epsilon (both models).
pub const LN_EPS: f32 = 1e-5;

/// Inverse frequencies of the sinusoidal encodings, one per dimension: 10000^(-2k/d) for the
/// pair k = i / 2 that dimension i belongs to.
pub fn sinusoid_rates(d: usize) -> Vec<f64> {
    (0..d).map(|i| (-(((i / 2) * 2) as f64) * (10000f64).ln() / d as f64).exp()).collect()
}

/// Adds the CP model's positional encoding of position `p` to `x` (sin on even, cos on odd
/// dimensions, as the paper's code).
pub fn add_positional_encoding(p: f64, rates: &[f64], x: &mut [f32]) {
    for (i, (x, rate)) in x.iter_mut().zip(rates).enumerate() {
        let angle = p * rate;
        *x += if i % 2 == 0 { angle.sin() } else { angle.cos() } as f32;
    }
}

/// The CP model's positional encoding rows for the given positions: (len, d).
pub fn positional_encoding(positions: &[u32], d: usize) -> Vec<f32> {
    let rates = sinusoid_rates(d);
    let mut out = vec![0f32; positions.len() * d];
    for (row, &p) in out.chunks_mut(d.max(1)).zip(positions) {
        add_positional_encoding(p as f64, &rates, row);
    }
    out
}

/// Transformer-XL's encodings of relative distances (len, d): sines of the d/2 rates in the
/// first half, cosines in the second.
pub fn relative_encoding(distances: &[f32], d: usize) -> Vec<f32> {
    let half = d / 2;
    let rates = sinusoid_rates(d);
    let mut out = vec![0f32; distances.len() * d];
    for (row, &p) in distances.iter().enumerate() {
        for i in 0..half {
            let angle = p as f64 * rates[2 * i];
            out[row * d + i] = angle.sin() as f32;
            out[row * d + half + i] = angle.cos() as f32;
        }
    }
    out
}

/// How weights are stored for inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Precision {
    /// f32 weights, exact.
    F32,
    /// int8 weights and activations in blocks of 32 with one scale each (ggml's Q8_0; about
    /// 4x less memory traffic per word).
    Int8,
}

/// Weights per int8 block (one scale each), as ggml's Q8_0.
const BLOCK: usize = 32;
/// Widest input the int8 path quantises on the stack.
const MAX_INT8_COLS: usize = 4096;

/// A weight matrix (rows = outputs).
#[derive(Debug, Clone)]
enum Matrix {
    F32(Vec<f32>),
    /// Rows padded to a multiple of `BLOCK` columns; one scale per block.
    Int8 { q: Vec<i8>, scales: Vec<f32>, padded_cols: usize },
}

/// A linear layer: y = W x + b.
#[derive(Debug, Clone)]
pub struct Linear {
    w: Matrix,
    b: Vec<f32>,
    rows: usize,
    cols: usize,
}

pub fn tensor_f32(tensors: &HashMap<String, Tensor>, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
    let t = tensors.get(name).with_context(|| format!("weights lack {name}"))?;
    let dims = t.dims().to_vec();
    let v = t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok((v, dims))
}

impl Linear {
    /// Loads `{prefix}.weight` and `{prefix}.bias`.
    pub fn load(tensors: &HashMap<String, Tensor>, prefix: &str, rows: usize, cols: usize, precision: Precision) -> Result<Linear> {
        let bias = tensor_f32(tensors, &format!("{prefix}.bias"))?;
        Linear::load_with_bias(tensors, prefix, rows, cols, precision, bias)
    }

    /// Loads `{prefix}.weight` of a layer that has no bias.
    pub fn load_without_bias(tensors: &HashMap<String, Tensor>, prefix: &str, rows: usize, cols: usize, precision: Precision) -> Result<Linear> {
        Linear::load_with_bias(tensors, prefix, rows, cols, precision, (vec![0.0; rows], vec![rows]))
    }

    fn load_with_bias(
        tensors: &HashMap<String, Tensor>,
        prefix: &str,
        rows: usize,
        cols: usize,
        precision: Precision,
        (b, bdims): (Vec<f32>, Vec<usize>),
    ) -> Result<Linear> {
        let (w, dims) = tensor_f32(tensors, &format!("{prefix}.weight"))?;
        if dims != [rows, cols] || bdims != [rows] {
            bail!("{prefix}: weight {dims:?} / bias {bdims:?}, expected [{rows}, {cols}] / [{rows}]");
        }
        let w = match precision {
            Precision::F32 => Matrix::F32(w),
            Precision::Int8 if cols <= MAX_INT8_COLS => {
                let padded_cols = cols.div_ceil(BLOCK) * BLOCK;
                let mut q = vec![0i8; rows * padded_cols];
                let mut scales = vec![0f32; rows * padded_cols / BLOCK];
                for (r, row) in w.chunks(cols).enumerate() {
                    let mut padded = row.to_vec();
                    padded.resize(padded_cols, 0.0);
                    for (b, block) in padded.chunks(BLOCK).enumerate() {
                        let i = r * padded_cols / BLOCK + b;
                        scales[i] = kernels::quantise_block(block, &mut q[i * BLOCK..(i + 1) * BLOCK]);
                    }
                }
                Matrix::Int8 { q, scales, padded_cols }
            }
            Precision::Int8 => Matrix::F32(w),
        };
        Ok(Linear { w, b, rows, cols })
    }

    /// out = W x + b.
    pub fn forward(&self, x: &[f32], out: &mut [f32]) {
        debug_assert_eq!(x.len(), self.cols);
        debug_assert_eq!(out.len(), self.rows);
        match &self.w {
            Matrix::F32(w) => kernels::matvec_f32(w, x, &self.b, out),
            Matrix::Int8 { q, scales, padded_cols } => {
                // Quantise the input per block on the stack: no allocation per word.
                let mut xq = [0i8; MAX_INT8_COLS];
                let mut xs = [0f32; MAX_INT8_COLS / BLOCK];
                let blocks = padded_cols / BLOCK;
                for b in 0..blocks {
                    let mut block = [0f32; BLOCK];
                    let end = ((b + 1) * BLOCK).min(x.len());
                    if b * BLOCK < end {
                        block[..end - b * BLOCK].copy_from_slice(&x[b * BLOCK..end]);
                    }
                    xs[b] = kernels::quantise_block(&block, &mut xq[b * BLOCK..(b + 1) * BLOCK]);
                }
                kernels::matvec_q8(q, scales, &xq[..*padded_cols], &xs[..blocks], &self.b, out)
            }
        }
    }

    /// Bytes of weight storage.
    pub fn bytes(&self) -> usize {
        let weights = match &self.w {
            Matrix::F32(w) => w.len() * 4,
            Matrix::Int8 { q, scales, .. } => q.len() + scales.len() * 4,
        };
        weights + self.b.len() * 4
    }
}

pub use kernels::dot;

/// Matrix-vector kernels, compiled twice: for AVX2+FMA (picked at run time where the CPU has
/// them) and for the baseline target.
mod kernels {
    #[inline(always)]
    fn dot_f32(a: &[f32], x: &[f32]) -> f32 {
        // Eight partial sums so the compiler can vectorise without reassociation.
        let mut acc = [0f32; 8];
        let chunks = a.len() / 8;
        for c in 0..chunks {
            for l in 0..8 {
                acc[l] += a[c * 8 + l] * x[c * 8 + l];
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for i in chunks * 8..a.len() {
            sum += a[i] * x[i];
        }
        sum
    }

    #[inline(always)]
    fn f32_generic(w: &[f32], x: &[f32], b: &[f32], out: &mut [f32]) {
        for (r, o) in out.iter_mut().enumerate() {
            *o = dot_f32(&w[r * x.len()..(r + 1) * x.len()], x) + b[r];
        }
    }

    use super::BLOCK;

    /// Quantises 32 values to int8 with one scale (max |v| / 127); returns the scale.
    pub fn quantise_block(values: &[f32], out: &mut [i8]) -> f32 {
        let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 0.0 };
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        for (o, v) in out.iter_mut().zip(values) {
            *o = (v * inv).round().clamp(-127.0, 127.0) as i8;
        }
        scale
    }

    fn q8_generic(q: &[i8], scales: &[f32], xq: &[i8], xs: &[f32], b: &[f32], out: &mut [f32]) {
        let cols = xq.len();
        let blocks = xs.len();
        for (r, o) in out.iter_mut().enumerate() {
            let row = &q[r * cols..(r + 1) * cols];
            let mut sum = 0f32;
            for k in 0..blocks {
                let dot: i32 = row[k * BLOCK..(k + 1) * BLOCK].iter().zip(&xq[k * BLOCK..(k + 1) * BLOCK]).map(|(&a, &c)| a as i32 * c as i32).sum();
                sum += dot as f32 * scales[r * blocks + k] * xs[k];
            }
            *o = sum + b[r];
        }
    }

    /// int8 x int8 dot products with AVX2: |w| (unsigned) times x carrying w's sign, pairs
    /// summed to i16 then i32, scaled per block and accumulated in f32.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn q8_avx2(q: &[i8], scales: &[f32], xq: &[i8], xs: &[f32], b: &[f32], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let cols = xq.len();
        let blocks = xs.len();
        let ones = _mm256_set1_epi16(1);
        for (r, o) in out.iter_mut().enumerate() {
            let mut acc = _mm256_setzero_ps();
            let row = q.as_ptr().add(r * cols);
            for k in 0..blocks {
                let w = _mm256_loadu_si256(row.add(k * BLOCK) as *const __m256i);
                let x = _mm256_loadu_si256(xq.as_ptr().add(k * BLOCK) as *const __m256i);
                let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
                let quads = _mm256_madd_epi16(pairs, ones);
                let scale = _mm256_set1_ps(*scales.get_unchecked(r * blocks + k) * *xs.get_unchecked(k));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(quads), scale, acc);
            }
            let half = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
            let quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
            let single = _mm_add_ss(quarter, _mm_shuffle_ps(quarter, quarter, 1));
            *o = _mm_cvtss_f32(single) + b[r];
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn f32_avx2(w: &[f32], x: &[f32], b: &[f32], out: &mut [f32]) {
        f32_generic(w, x, b, out)
    }


    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2(a: &[f32], x: &[f32]) -> f32 {
        dot_f32(a, x)
    }

    /// The dot product of two equally long vectors.
    pub fn dot(a: &[f32], x: &[f32]) -> f32 {
        debug_assert_eq!(a.len(), x.len());
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function was compiled for.
            return unsafe { dot_avx2(a, x) };
        }
        dot_f32(a, x)
    }

    pub fn matvec_f32(w: &[f32], x: &[f32], b: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function was compiled for.
            return unsafe { f32_avx2(w, x, b, out) };
        }
        f32_generic(w, x, b, out)
    }

    pub fn matvec_q8(q: &[i8], scales: &[f32], xq: &[i8], xs: &[f32], b: &[f32], out: &mut [f32]) {
        assert!(q.len() >= out.len() * xq.len() && scales.len() >= out.len() * xs.len() && xq.len() == xs.len() * BLOCK);
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function was compiled for, and the
            // assertion above keeps every load inside the slices.
            return unsafe { q8_avx2(q, scales, xq, xs, b, out) };
        }
        q8_generic(q, scales, xq, xs, b, out)
    }
}

/// LayerNorm in place.
pub fn layer_norm(x: &mut [f32], weight: &[f32], bias: &[f32]) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + LN_EPS).sqrt();
    for ((v, w), b) in x.iter_mut().zip(weight).zip(bias) {
        *v = (*v - mean) * inv * w + b;
    }
}

pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

pub fn phi(x: f32) -> f32 {
    if x > 0.0 {
        x + 1.0
    } else {
        x.exp()
    }
}

pub struct Norm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Norm {
    pub fn load(tensors: &HashMap<String, Tensor>, prefix: &str, d: usize) -> Result<Norm> {
        let (weight, wd) = tensor_f32(tensors, &format!("{prefix}.weight"))?;
        let (bias, bd) = tensor_f32(tensors, &format!("{prefix}.bias"))?;
        if wd != [d] || bd != [d] {
            bail!("{prefix}: expected [{d}]");
        }
        Ok(Norm { weight, bias })
    }
}

