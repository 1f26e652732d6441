//! The CP linear transformer in recurrent form, in plain Rust: O(1) work per word, no
//! allocation per step, one thread. This is what generation (CLI and plugin worker) runs.
//!
//! Per layer and head the state is S = sum phi(k) v^T and z = sum phi(k) over the words so far;
//! the attention output for a query is phi(q)^T S / (phi(q)^T z + eps). This equals the chunked
//! training form of `cp_transformer` (a test checks 300 steps against it).
//!
//! Weights are f32 or, in the fast path, int8 in blocks of 32 with one scale each (quantised
//! at load; the input vector is quantised the same way per word). Nothing here knows candle beyond reading tensors at load time.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;

use crate::tokens::cp::{Family, Word, FAMILIES};
use crate::model::config::Config;
use crate::model::cp_transformer::{ATTENTION_EPS, AFTER_TYPE, LN_EPS};
use crate::model::fused::erf;

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

pub(crate) fn tensor_f32(tensors: &HashMap<String, Tensor>, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
    let t = tensors.get(name).with_context(|| format!("weights lack {name}"))?;
    let dims = t.dims().to_vec();
    let v = t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok((v, dims))
}

impl Linear {
    /// Loads `{prefix}.weight` and `{prefix}.bias`.
    pub(crate) fn load(tensors: &HashMap<String, Tensor>, prefix: &str, rows: usize, cols: usize, precision: Precision) -> Result<Linear> {
        let bias = tensor_f32(tensors, &format!("{prefix}.bias"))?;
        Linear::load_with_bias(tensors, prefix, rows, cols, precision, bias)
    }

    /// Loads `{prefix}.weight` of a layer that has no bias.
    pub(crate) fn load_without_bias(tensors: &HashMap<String, Tensor>, prefix: &str, rows: usize, cols: usize, precision: Precision) -> Result<Linear> {
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

pub(crate) use kernels::dot;

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
pub(crate) fn layer_norm(x: &mut [f32], weight: &[f32], bias: &[f32]) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + LN_EPS).sqrt();
    for ((v, w), b) in x.iter_mut().zip(weight).zip(bias) {
        *v = (*v - mean) * inv * w + b;
    }
}

fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

fn phi(x: f32) -> f32 {
    if x > 0.0 {
        x + 1.0
    } else {
        x.exp()
    }
}

pub(crate) struct Norm {
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Vec<f32>,
}

impl Norm {
    pub(crate) fn load(tensors: &HashMap<String, Tensor>, prefix: &str, d: usize) -> Result<Norm> {
        let (weight, wd) = tensor_f32(tensors, &format!("{prefix}.weight"))?;
        let (bias, bd) = tensor_f32(tensors, &format!("{prefix}.bias"))?;
        if wd != [d] || bd != [d] {
            bail!("{prefix}: expected [{d}]");
        }
        Ok(Norm { weight, bias })
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
    norm1: Norm,
    ffn_in: Linear,
    ffn_out: Linear,
    norm2: Norm,
}

/// The recurrent model (weights only; the state lives in `RnnState`).
pub struct CpRnn {
    pub config: Config,
    pub precision: Precision,
    embeddings: Vec<Vec<f32>>,
    in_linear: Linear,
    layers: Vec<Layer>,
    final_norm: Norm,
    type_head: Linear,
    type_concat: Linear,
    heads: Vec<Linear>,
    /// Inverse frequencies of the positional encoding.
    pe_rates: Vec<f64>,
}

/// Per-song state: attention sums per layer and scratch buffers (allocated once).
#[derive(Clone)]
pub struct RnnState {
    /// Per layer: heads x head_dim x head_dim.
    s: Vec<Vec<f32>>,
    /// Per layer: heads x head_dim.
    z: Vec<Vec<f32>>,
    /// Words fed so far (the position of the next word).
    pub position: usize,
    x: Vec<f32>,
    emb: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    tmp: Vec<f32>,
    ffn: Vec<f32>,
    concat: Vec<f32>,
    /// The final hidden state after the last word.
    pub hidden: Vec<f32>,
    conditioned: Vec<f32>,
}

/// Logits of every family after one word: type from the hidden state, the others after
/// conditioning on a type (see `CpRnn::family_logits`).
pub struct Logits {
    pub per_family: [Vec<f32>; FAMILIES],
}

impl CpRnn {
    /// Builds the recurrent model from named tensors (the names `cp_transformer` uses).
    pub fn from_tensors(config: &Config, tensors: &HashMap<String, Tensor>, precision: Precision) -> Result<CpRnn> {
        config.validate().map_err(anyhow::Error::msg)?;
        let c = config;
        let d = c.d_model;
        let mut embeddings = Vec::new();
        for f in Family::ALL {
            let (e, dims) = tensor_f32(tensors, &format!("embed.{}.weight", f.name()))?;
            if dims != [c.vocab_sizes[f.index()], c.emb_sizes[f.index()]] {
                bail!("embed.{}: shape {dims:?} does not fit the config", f.name());
            }
            let scale = (c.emb_sizes[f.index()] as f32).sqrt();
            embeddings.push(e.into_iter().map(|v| v * scale).collect());
        }
        let lin = |name: &str, rows, cols| Linear::load(tensors, name, rows, cols, precision);
        let mut layers = Vec::new();
        for i in 0..c.n_layers {
            let p = format!("layers.{i}");
            layers.push(Layer {
                query: lin(&format!("{p}.query"), d, d)?,
                key: lin(&format!("{p}.key"), d, d)?,
                value: lin(&format!("{p}.value"), d, d)?,
                out: lin(&format!("{p}.out"), d, d)?,
                norm1: Norm::load(tensors, &format!("{p}.norm1"), d)?,
                ffn_in: lin(&format!("{p}.ffn_in"), c.d_ff, d)?,
                ffn_out: lin(&format!("{p}.ffn_out"), d, c.d_ff)?,
                norm2: Norm::load(tensors, &format!("{p}.norm2"), d)?,
            });
        }
        let heads = AFTER_TYPE
            .iter()
            .map(|f| lin(&format!("head.{}", f.name()), c.vocab_sizes[f.index()], d))
            .collect::<Result<Vec<_>>>()?;
        let pe_rates = (0..d).map(|i| (-(((i / 2) * 2) as f64) * (10000f64).ln() / d as f64).exp()).collect();
        Ok(CpRnn {
            config: c.clone(),
            precision,
            embeddings,
            in_linear: lin("in_linear", d, c.emb_total())?,
            layers,
            final_norm: Norm::load(tensors, "final_norm", d)?,
            type_head: lin("head.type", c.vocab_sizes[Family::Type.index()], d)?,
            type_concat: lin("type_concat", d, d + c.emb_sizes[Family::Type.index()])?,
            heads,
            pe_rates,
        })
    }

    /// Bytes of weights read per word.
    pub fn weight_bytes(&self) -> usize {
        let layer = |l: &Layer| l.query.bytes() + l.key.bytes() + l.value.bytes() + l.out.bytes() + l.ffn_in.bytes() + l.ffn_out.bytes();
        self.in_linear.bytes()
            + self.layers.iter().map(layer).sum::<usize>()
            + self.type_head.bytes()
            + self.type_concat.bytes()
            + self.heads.iter().map(Linear::bytes).sum::<usize>()
    }

    /// A fresh state (no words yet).
    pub fn new_state(&self) -> RnnState {
        let c = &self.config;
        let (d, h, dh) = (c.d_model, c.n_heads, c.head_dim());
        RnnState {
            s: vec![vec![0.0; h * dh * dh]; c.n_layers],
            z: vec![vec![0.0; h * dh]; c.n_layers],
            position: 0,
            x: vec![0.0; d],
            emb: vec![0.0; c.emb_total()],
            q: vec![0.0; d],
            k: vec![0.0; d],
            v: vec![0.0; d],
            att: vec![0.0; d],
            tmp: vec![0.0; d],
            ffn: vec![0.0; c.d_ff],
            concat: vec![0.0; d + c.emb_sizes[Family::Type.index()]],
            hidden: vec![0.0; d],
            conditioned: vec![0.0; d],
        }
    }

    /// Feeds one word at the state's position; afterwards `state.hidden` predicts the next word.
    /// Ids outside their family are clamped to ignore (0).
    pub fn step(&self, state: &mut RnnState, word: Word) {
        let c = &self.config;
        let (h, dh) = (c.n_heads, c.head_dim());
        let mut at = 0;
        for f in Family::ALL {
            let e = c.emb_sizes[f.index()];
            let id = word.0[f.index()] as usize;
            let id = if id < c.vocab_sizes[f.index()] { id } else { 0 };
            state.emb[at..at + e].copy_from_slice(&self.embeddings[f.index()][id * e..(id + 1) * e]);
            at += e;
        }
        self.in_linear.forward(&state.emb, &mut state.x);
        let p = state.position as f64;
        for (i, (x, rate)) in state.x.iter_mut().zip(&self.pe_rates).enumerate() {
            let angle = p * rate;
            *x += if i % 2 == 0 { angle.sin() } else { angle.cos() } as f32;
        }
        for (l, layer) in self.layers.iter().enumerate() {
            layer.query.forward(&state.x, &mut state.q);
            layer.key.forward(&state.x, &mut state.k);
            layer.value.forward(&state.x, &mut state.v);
            let (s, z) = (&mut state.s[l], &mut state.z[l]);
            for head in 0..h {
                let q = &mut state.q[head * dh..(head + 1) * dh];
                let k = &mut state.k[head * dh..(head + 1) * dh];
                let v = &state.v[head * dh..(head + 1) * dh];
                q.iter_mut().for_each(|x| *x = phi(*x));
                k.iter_mut().for_each(|x| *x = phi(*x));
                let sh = &mut s[head * dh * dh..(head + 1) * dh * dh];
                let zh = &mut z[head * dh..(head + 1) * dh];
                for i in 0..dh {
                    zh[i] += k[i];
                    let row = &mut sh[i * dh..(i + 1) * dh];
                    for (r, vj) in row.iter_mut().zip(v) {
                        *r += k[i] * vj;
                    }
                }
                let den = q.iter().zip(zh.iter()).map(|(a, b)| a * b).sum::<f32>() + ATTENTION_EPS as f32;
                let out = &mut state.att[head * dh..(head + 1) * dh];
                out.iter_mut().for_each(|o| *o = 0.0);
                for i in 0..dh {
                    let row = &sh[i * dh..(i + 1) * dh];
                    for (o, r) in out.iter_mut().zip(row) {
                        *o += q[i] * r;
                    }
                }
                out.iter_mut().for_each(|o| *o /= den);
            }
            layer.out.forward(&state.att, &mut state.tmp);
            state.x.iter_mut().zip(&state.tmp).for_each(|(x, t)| *x += t);
            layer_norm(&mut state.x, &layer.norm1.weight, &layer.norm1.bias);
            layer.ffn_in.forward(&state.x, &mut state.ffn);
            state.ffn.iter_mut().for_each(|v| *v = gelu(*v));
            layer.ffn_out.forward(&state.ffn, &mut state.tmp);
            state.x.iter_mut().zip(&state.tmp).for_each(|(x, t)| *x += t);
            layer_norm(&mut state.x, &layer.norm2.weight, &layer.norm2.bias);
        }
        state.hidden.copy_from_slice(&state.x);
        layer_norm(&mut state.hidden, &self.final_norm.weight, &self.final_norm.bias);
        state.position += 1;
    }

    /// Type logits for the next word, into `out` (3 values).
    pub fn type_logits(&self, state: &RnnState, out: &mut [f32]) {
        self.type_head.forward(&state.hidden, out);
    }

    /// Logits of the six other families for the next word given its type, into `out` (family
    /// order; the type entry is left as it is).
    pub fn family_logits(&self, state: &mut RnnState, word_type: u16, out: &mut [Vec<f32>; FAMILIES]) {
        let c = &self.config;
        let d = c.d_model;
        let e = c.emb_sizes[Family::Type.index()];
        let t = (word_type as usize).min(c.vocab_sizes[Family::Type.index()] - 1);
        state.concat[..d].copy_from_slice(&state.hidden);
        state.concat[d..].copy_from_slice(&self.embeddings[Family::Type.index()][t * e..(t + 1) * e]);
        self.type_concat.forward(&state.concat, &mut state.conditioned);
        for (head, f) in self.heads.iter().zip(AFTER_TYPE) {
            head.forward(&state.conditioned, &mut out[f.index()]);
        }
    }

    /// Buffers for `family_logits` (one per family, sized to its vocabulary).
    pub fn logit_buffers(&self) -> [Vec<f32>; FAMILIES] {
        std::array::from_fn(|f| vec![0.0; self.config.vocab_sizes[f]])
    }
}
