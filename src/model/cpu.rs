//! Plain-Rust kernels of the recurrent (generation) forms of both models: linear layers in f32
//! or int8 (blocks of 32, one scale each, as ggml's Q8_0), the dot product, LayerNorm, GELU, the
//! feature map, and the sinusoidal encodings (the CP model's absolute one, Transformer-XL's
//! relative one, from one table of rates). One thread, no allocation per call; candle only to
//! read tensors at load time.

use std::collections::HashMap;

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
/// Most inputs `Linear::forward_many` takes at once (the most takes generated together).
pub const MAX_ROWS: usize = 8;

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
                    kernels::matvec_f32(w, x, &self.b, out)
                }
            }
            // One input quantises into a small stack buffer (zeroing the big one per call would
            // cost ~10 % of a word).
            Matrix::Int8 { q, scales, padded_cols } if n == 1 => {
                quantised_matvec::<MAX_INT8_COLS, { MAX_INT8_COLS / BLOCK }>(q, scales, *padded_cols, self.cols, &self.b, xs, outs, n)
            }
            Matrix::Int8 { q, scales, padded_cols } => {
                quantised_matvec::<{ MAX_ROWS * MAX_INT8_COLS }, { MAX_ROWS * MAX_INT8_COLS / BLOCK }>(q, scales, *padded_cols, self.cols, &self.b, xs, outs, n)
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

/// Quantises `n` inputs per block on the stack (`CAP` bytes and `SCALES` scales: no allocation per word) and
/// multiplies them by the int8 matrix.
#[allow(clippy::too_many_arguments)]
fn quantised_matvec<const CAP: usize, const SCALES: usize>(q: &[i8], scales: &[f32], padded_cols: usize, cols: usize, b: &[f32], xs: &[f32], outs: &mut [f32], n: usize) {
    let mut xq = [0i8; CAP];
    let mut xsc = [0f32; SCALES];
    let blocks = padded_cols / BLOCK;
    assert!(n * padded_cols <= CAP && n * blocks <= SCALES);
    for (j, x) in xs.chunks(cols).enumerate() {
        for b in 0..blocks {
            let mut block = [0f32; BLOCK];
            let end = ((b + 1) * BLOCK).min(x.len());
            if b * BLOCK < end {
                block[..end - b * BLOCK].copy_from_slice(&x[b * BLOCK..end]);
            }
            let at = j * padded_cols + b * BLOCK;
            xsc[j * blocks + b] = kernels::quantise_block(&block, &mut xq[at..at + BLOCK]);
        }
    }
    kernels::matvec_q8(q, scales, &xq[..n * padded_cols], &xsc[..n * blocks], b, outs, n)
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

    /// `n` inputs (`xq`: n rows of the padded width, `xs`: n rows of block scales) against the
    /// int8 rows of `q`; `out`: n rows of `b.len()`.
    fn q8_generic(q: &[i8], scales: &[f32], xq: &[i8], xs: &[f32], b: &[f32], out: &mut [f32], n: usize) {
        let cols = xq.len() / n;
        let blocks = xs.len() / n;
        let rows = b.len();
        for r in 0..rows {
            let row = &q[r * cols..(r + 1) * cols];
            for j in 0..n {
                let (x, x_scales) = (&xq[j * cols..(j + 1) * cols], &xs[j * blocks..(j + 1) * blocks]);
                let mut sum = 0f32;
                for k in 0..blocks {
                    let dot: i32 = row[k * BLOCK..(k + 1) * BLOCK].iter().zip(&x[k * BLOCK..(k + 1) * BLOCK]).map(|(&a, &c)| a as i32 * c as i32).sum();
                    sum += dot as f32 * scales[r * blocks + k] * x_scales[k];
                }
                out[j * rows + r] = sum + b[r];
            }
        }
    }

    /// int8 x int8 dot products with AVX2 for `N` inputs at once: each weight block is loaded
    /// once; |w| (unsigned) times x carrying w's sign, pairs summed to i16 then i32, scaled per
    /// block and accumulated in f32, one accumulator per input (so `N` does not change a sum).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn q8_avx2<const N: usize>(q: &[i8], scales: &[f32], xq: &[i8], xs: &[f32], b: &[f32], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let cols = xq.len() / N;
        let blocks = xs.len() / N;
        let rows = b.len();
        let ones = _mm256_set1_epi16(1);
        for r in 0..rows {
            let mut acc = [_mm256_setzero_ps(); N];
            let row = q.as_ptr().add(r * cols);
            for k in 0..blocks {
                let w = _mm256_loadu_si256(row.add(k * BLOCK) as *const __m256i);
                let w_abs = _mm256_sign_epi8(w, w);
                let w_scale = *scales.get_unchecked(r * blocks + k);
                for (j, acc) in acc.iter_mut().enumerate() {
                    let x = _mm256_loadu_si256(xq.as_ptr().add(j * cols + k * BLOCK) as *const __m256i);
                    let pairs = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(x, w));
                    let quads = _mm256_madd_epi16(pairs, ones);
                    let scale = _mm256_set1_ps(w_scale * *xs.get_unchecked(j * blocks + k));
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(quads), scale, *acc);
                }
            }
            for (j, acc) in acc.iter().enumerate() {
                let half = _mm_add_ps(_mm256_castps256_ps128(*acc), _mm256_extractf128_ps(*acc, 1));
                let quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
                let single = _mm_add_ss(quarter, _mm_shuffle_ps(quarter, quarter, 1));
                *out.get_unchecked_mut(j * rows + r) = _mm_cvtss_f32(single) + b[r];
            }
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

    /// `n` int8 matrix-vector products against the same weights (see `q8_generic`).
    pub fn matvec_q8(q: &[i8], scales: &[f32], xq: &[i8], xs: &[f32], b: &[f32], out: &mut [f32], n: usize) {
        let rows = b.len();
        assert!((1..=super::MAX_ROWS).contains(&n) && xq.len() % n == 0 && xs.len() % n == 0 && out.len() == n * rows);
        assert!(xq.len() / n == xs.len() / n * BLOCK && q.len() >= rows * (xq.len() / n) && scales.len() >= rows * (xs.len() / n));
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the functions were compiled for, and the
            // assertions above keep every load and store inside the slices.
            unsafe {
                match n {
                    1 => q8_avx2::<1>(q, scales, xq, xs, b, out),
                    2 => q8_avx2::<2>(q, scales, xq, xs, b, out),
                    3 => q8_avx2::<3>(q, scales, xq, xs, b, out),
                    4 => q8_avx2::<4>(q, scales, xq, xs, b, out),
                    5 => q8_avx2::<5>(q, scales, xq, xs, b, out),
                    6 => q8_avx2::<6>(q, scales, xq, xs, b, out),
                    7 => q8_avx2::<7>(q, scales, xq, xs, b, out),
                    _ => q8_avx2::<8>(q, scales, xq, xs, b, out),
                }
            }
            return;
        }
        q8_generic(q, scales, xq, xs, b, out, n)
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
    pub fn load(tensors: &HashMap<String, Tensor>, prefix: &str, d: usize) -> Result<Norm, LoadError> {
        let (weight, wd) = tensor_f32(tensors, &format!("{prefix}.weight"))?;
        let (bias, bd) = tensor_f32(tensors, &format!("{prefix}.bias"))?;
        expect_shape(&format!("{prefix}.weight"), &wd, &[d])?;
        expect_shape(&format!("{prefix}.bias"), &bd, &[d])?;
        Ok(Norm { weight, bias })
    }
}

