//! Plain-Rust kernels of the recurrent (generation) forms of both models: linear layers in f32
//! or int8 (`int8`: blocks of 32, one scale each, as ggml's Q8_0), the dot product, LayerNorm and
//! the sinusoidal encodings (the CP model's absolute one, Transformer-XL's
//! relative one, from one table of rates). One thread, no allocation per call; candle only to
//! read tensors at load time.

use std::collections::HashMap;

use candle_core::Tensor;

use crate::model::fused::simd::{lane_sum, multiversion};

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

mod int8;

use int8::Int8Matrix;

/// Most inputs `Linear::forward_many` takes at once (the most takes generated together).
pub const MAX_ROWS: usize = int8::MAX_INPUTS;

/// The int8 product this CPU runs: "AVX-512 VNNI", "AVX2" or "portable".
pub fn int8_kernel_name() -> &'static str {
    int8::kernel_name()
}

/// A weight matrix (rows = outputs).
#[derive(Debug, Clone)]
enum Matrix {
    F32(Vec<f32>),
    /// Blocks of 32 with one scale each, in panels of 16 rows (`int8`).
    Int8(Int8Matrix),
}

/// A linear layer: y = W x + b.
#[derive(Debug, Clone)]
pub struct Linear {
    w: Matrix,
    b: Vec<f32>,
    rows: usize,
    cols: usize,
}

/// Why named tensors do not make a recurrent model (CP or REMI-XL).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("weights lack {0}")]
    Missing(String),
    #[error("{name}: shape {found:?}, expected {expected:?}")]
    Shape { name: String, found: Vec<usize>, expected: Vec<usize> },
    #[error("config: {0}")]
    Config(#[from] crate::model::config::ConfigError),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// Checks that tensor `name` has the shape `expected`.
pub fn expect_shape(name: &str, found: &[usize], expected: &[usize]) -> Result<(), LoadError> {
    if found == expected {
        Ok(())
    } else {
        Err(LoadError::Shape { name: name.to_string(), found: found.to_vec(), expected: expected.to_vec() })
    }
}

/// The f32 values and the shape of tensor `name`.
pub fn tensor_f32(tensors: &HashMap<String, Tensor>, name: &str) -> Result<(Vec<f32>, Vec<usize>), LoadError> {
    let t = tensors.get(name).ok_or_else(|| LoadError::Missing(name.to_string()))?;
    let dims = t.dims().to_vec();
    let v = t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok((v, dims))
}

impl Linear {
    /// Loads `{prefix}.weight` and `{prefix}.bias`.
    pub fn load(tensors: &HashMap<String, Tensor>, prefix: &str, rows: usize, cols: usize, precision: Precision) -> Result<Linear, LoadError> {
        let bias = tensor_f32(tensors, &format!("{prefix}.bias"))?;
        Linear::load_with_bias(tensors, prefix, rows, cols, precision, bias)
    }

    /// Loads `{prefix}.weight` of a layer that has no bias.
    pub fn load_without_bias(tensors: &HashMap<String, Tensor>, prefix: &str, rows: usize, cols: usize, precision: Precision) -> Result<Linear, LoadError> {
        Linear::load_with_bias(tensors, prefix, rows, cols, precision, (vec![0.0; rows], vec![rows]))
    }

    fn load_with_bias(
        tensors: &HashMap<String, Tensor>,
        prefix: &str,
        rows: usize,
        cols: usize,
        precision: Precision,
        (b, bdims): (Vec<f32>, Vec<usize>),
    ) -> Result<Linear, LoadError> {
        let (w, dims) = tensor_f32(tensors, &format!("{prefix}.weight"))?;
        expect_shape(&format!("{prefix}.weight"), &dims, &[rows, cols])?;
        expect_shape(&format!("{prefix}.bias"), &bdims, &[rows])?;
        let w = match precision {
            Precision::F32 => Matrix::F32(w),
            Precision::Int8 => Matrix::Int8(Int8Matrix::quantise(&w, rows, cols)),
        };
        Ok(Linear { w, b, rows, cols })
    }

    /// out = W x + b.
    pub fn forward(&self, x: &[f32], out: &mut [f32]) {
        self.forward_many(x, out, 1)
    }

    /// out_j = W x_j + b for `n` inputs at once (`xs`: n rows of `cols`, `outs`: n rows of
    /// `rows`; n <= `MAX_ROWS`), each weight block read once for all of them. Each output is
    /// bit for bit what `forward` gives for its input alone (the same sums in the same order).
    pub fn forward_many(&self, xs: &[f32], outs: &mut [f32], n: usize) {
        assert!((1..=MAX_ROWS).contains(&n) && xs.len() == n * self.cols && outs.len() == n * self.rows);
        match &self.w {
            Matrix::F32(w) => {
                for (x, out) in xs.chunks(self.cols).zip(outs.chunks_mut(self.rows)) {
                    matvec_f32(w, x, &self.b, out)
                }
            }
            Matrix::Int8(m) => m.multiply(xs, n, &self.b, outs),
        }
    }

    /// Outputs.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Inputs.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of weight storage.
    pub fn bytes(&self) -> usize {
        let weights = match &self.w {
            Matrix::F32(w) => w.len() * 4,
            Matrix::Int8(m) => m.bytes(),
        };
        weights + self.b.len() * 4
    }
}

/// The dot product in eight partial sums (so it vectorises without reassociation), then the
/// rest in order.
#[inline(always)]
fn dot_f32(a: &[f32], x: &[f32]) -> f32 {
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

multiversion! {
    /// The dot product of two equally long vectors.
    pub fn dot(a: &[f32], x: &[f32]) -> f32 {
        debug_assert_eq!(a.len(), x.len());
        dot_f32(a, x)
    }
}

multiversion! {
    /// out = W x + b, W row-major with one row per output.
    fn matvec_f32(w: &[f32], x: &[f32], b: &[f32], out: &mut [f32]) {
        for (r, o) in out.iter_mut().enumerate() {
            *o = dot_f32(&w[r * x.len()..(r + 1) * x.len()], x) + b[r];
        }
    }
}

multiversion! {
    /// LayerNorm in place. The sums run in 16 partial sums (then those in order), so the loops
    /// vectorise; every build gives the same numbers.
    pub fn layer_norm(x: &mut [f32], weight: &[f32], bias: &[f32]) {
        assert!(weight.len() == x.len() && bias.len() == x.len());
        let n = x.len() as f32;
        let mean = lane_sum(x, |v| v) / n;
        let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
        let inv = 1.0 / (var + LN_EPS).sqrt();
        for ((v, w), b) in x.iter_mut().zip(weight).zip(bias) {
            *v = (*v - mean) * inv * w + b;
        }
    }
}

pub struct Norm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Norm {
    pub fn load(tensors: &HashMap<String, Tensor>, prefix: &str, d: usize) -> Result<Norm, LoadError> {
        let (weight, wd) = tensor_f32(tensors, &format!("{prefix}.weight"))?;
        let (bias, bd) = tensor_f32(tensors, &format!("{prefix}.bias"))?;
        expect_shape(&format!("{prefix}.weight"), &wd, &[d])?;
        expect_shape(&format!("{prefix}.bias"), &bd, &[d])?;
        Ok(Norm { weight, bias })
    }
}

