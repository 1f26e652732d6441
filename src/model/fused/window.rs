//! Causal softmax attention over a sliding window of the last `window` words (the hybrid
//! presets' softmax layers) as one custom op with its own backward, split across threads by
//! batch x head.
//!
//! For each head, word i attends to words j with i - window < j <= i:
//! p_ij = softmax_j(q_i . k_j / sqrt(dh)), out_i = sum_j p_ij v_j.
//! Queries go in chunks of `QUERY_CHUNK`; a chunk's keys are the words from the window start of
//! its first query to its last query. Backward recomputes p from q and k (nothing but the output
//! is kept), then with dp_ij = g_i . v_j and D_i = g_i . out_i:
//! ds_ij = p_ij (dp_ij - D_i) / sqrt(dh), dq_i = sum_j ds_ij k_j, dk_j = sum_i ds_ij q_i,
//! dv_j = sum_i p_ij g_i. Inputs and output are (batch, time, d_model) with heads side by side.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::attention::{head_gradients, head_outputs, heads_of, qkv_inputs, Head};
use super::linear::{matmul, Mat, Threads};
use super::simd::{self, multiversion};
use super::with_f32;

/// Queries per chunk.
pub const QUERY_CHUNK: usize = 64;

/// Sliding-window causal softmax attention over (batch, time, heads * head_dim) q, k and v.
pub struct WindowAttention {
    pub heads: usize,
    pub window: usize,
}

multiversion! {
    /// p = softmax(scale * x) in place (x non-empty). Built for the best instruction set this CPU
    /// has; every build computes the same numbers (the sums run in 16 lanes, then in order).
    pub fn softmax_in_place(x: &mut [f32], scale: f32) {
        // Whole groups of 16 in lanes (so the loops vectorise), then the rest, then the lanes.
        let mut lanes = [f32::NEG_INFINITY; 16];
        let mut groups = x.chunks_exact(16);
        for group in &mut groups {
            lanes.iter_mut().zip(group).for_each(|(l, v)| *l = l.max(*v));
        }
        lanes.iter_mut().zip(groups.remainder()).for_each(|(l, v)| *l = l.max(*v));
        let max = lanes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) * scale;
        let mut sums = [0f32; 16];
        let mut groups = x.chunks_exact_mut(16);
        for group in &mut groups {
            for (s, v) in sums.iter_mut().zip(group.iter_mut()) {
                *v = simd::exp(*v * scale - max);
                *s += *v;
            }
        }
        for (s, v) in sums.iter_mut().zip(groups.into_remainder()) {
            *v = simd::exp(*v * scale - max);
            *s += *v;
        }
        let inv = 1.0 / sums.iter().sum::<f32>();
        x.iter_mut().for_each(|v| *v *= inv);
    }
}

/// The query chunks of a head: (first query, queries, first key, keys).
fn chunks(time: usize, window: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..time.div_ceil(QUERY_CHUNK)).map(move |c| {
        let (s, n) = (c * QUERY_CHUNK, QUERY_CHUNK.min(time - c * QUERY_CHUNK));
        let first = (s + 1).saturating_sub(window);
        (s, n, first, s + n - first)
    })
}

/// The most keys a chunk has.
fn widest(time: usize, window: usize) -> usize {
    time.min(QUERY_CHUNK + window - 1)
}

/// The attention probabilities of queries s..s+n over keys first..first+keys into `p` (n x
/// keys, row-major): each row's softmax over its own window, zero outside it.
fn probabilities(p: &mut [f32], h: &Head, q: &[f32], k: &[f32], (s, n, first, keys): (usize, usize, usize, usize), window: usize) {
    matmul(p, keys, false, h.rows(q, s, n), h.rows(k, first, keys).t(), Threads::One);
    let scale = 1.0 / (h.dh as f32).sqrt();
    for (i, row) in p.chunks_mut(keys).enumerate() {
        let at = s + i;
        let lo = (at + 1).saturating_sub(window).max(first) - first;
        let hi = at - first + 1;
        row[..lo].fill(0.0);
        row[hi..].fill(0.0);
        softmax_in_place(&mut row[lo..hi], scale);
    }
}

fn forward_head(h: &Head, q: &[f32], k: &[f32], v: &[f32], window: usize) -> Vec<f32> {
    let mut out = vec![0f32; h.time * h.dh];
    let mut p = vec![0f32; QUERY_CHUNK * widest(h.time, window)];
    for chunk in chunks(h.time, window) {
        let (s, n, first, keys) = chunk;
        let p = &mut p[..n * keys];
        probabilities(p, h, q, k, chunk, window);
        matmul(&mut out[s * h.dh..(s + n) * h.dh], h.dh, false, Mat::rows(p, n, keys, keys), h.rows(v, first, keys), Threads::One);
    }
    out
}

/// Gradients of one head with respect to q, k and v, each (time, dh).
fn backward_head(h: &Head, q: &[f32], k: &[f32], v: &[f32], out: &[f32], grad: &[f32], window: usize) -> [Vec<f32>; 3] {
    let dh = h.dh;
    let scale = 1.0 / (dh as f32).sqrt();
    let (mut dq, mut dk, mut dv) = (vec![0f32; h.time * dh], vec![0f32; h.time * dh], vec![0f32; h.time * dh]);
    let mut p = vec![0f32; QUERY_CHUNK * widest(h.time, window)];
    let mut dp = p.clone();
    for chunk in chunks(h.time, window) {
        let (s, n, first, keys) = chunk;
        let (p, dp) = (&mut p[..n * keys], &mut dp[..n * keys]);
        probabilities(p, h, q, k, chunk, window);
        let g = h.rows(grad, s, n);
        matmul(dp, keys, false, g, h.rows(v, first, keys).t(), Threads::One);
        // dv_j += sum_i p_ij g_i, before p turns into ds below.
        matmul(&mut dv[first * dh..(first + keys) * dh], dh, true, Mat::rows(p, n, keys, keys).t(), g, Threads::One);
        for (i, (p_row, dp_row)) in p.chunks_mut(keys).zip(dp.chunks(keys)).enumerate() {
            let (gi, oi) = (&grad[h.offset + (s + i) * h.d..][..dh], &out[h.offset + (s + i) * h.d..][..dh]);
            let d_i: f32 = gi.iter().zip(oi).map(|(a, b)| a * b).sum();
            p_row.iter_mut().zip(dp_row).for_each(|(p, dp)| *p *= (dp - d_i) * scale);
        }
        let ds = Mat::rows(p, n, keys, keys);
        matmul(&mut dq[s * dh..(s + n) * dh], dh, false, ds, h.rows(k, first, keys), Threads::One);
        matmul(&mut dk[first * dh..(first + keys) * dh], dh, true, ds.t(), h.rows(q, s, n), Threads::One);
    }
    [dq, dk, dv]
}

impl WindowAttention {
    fn shape(&self, l: &Layout) -> Result<(usize, usize, usize)> {
        let (b, t, d) = l.shape().dims3()?;
        if self.heads == 0 || d % self.heads != 0 || self.window == 0 {
            candle_core::bail!("window attention: d_model {d}, {} heads, window {}", self.heads, self.window);
        }
        Ok((b, t, d))
    }
}

impl CustomOp3 for WindowAttention {
    fn name(&self) -> &'static str {
        "fused-window-softmax-attention"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, t, d) = self.shape(l1)?;
        let [q, k, v] = qkv_inputs(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        let heads = heads_of(b, t, d, self.heads);
        let blocks: Vec<Vec<f32>> = heads.par_iter().map(|h| forward_head(h, q, k, v, self.window)).collect();
        Ok((CpuStorage::F32(head_outputs(&heads, &blocks, (b, t, d))), l1.shape().clone()))
    }

    fn bwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, t, d) = q.dims3()?;
        let grad = grad.contiguous()?;
        let heads = heads_of(b, t, d, self.heads);
        let blocks = with_f32(q, |q| {
            with_f32(k, |k| {
                with_f32(v, |v| {
                    with_f32(res, |o| with_f32(&grad, |g| heads.par_iter().map(|h| backward_head(h, q, k, v, o, g, self.window)).collect::<Vec<_>>()))
                })
            })
        })?????;
        head_gradients(&heads, blocks.iter().map(|[dq, dk, dv]| [&dq[..], &dk[..], &dv[..]]), (b, t, d))
    }
}
