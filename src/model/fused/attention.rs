//! Causal linear attention (Katharopoulos et al. 2020, as the CP transformer uses it) as one
//! custom op with its own backward, split across threads by batch x head.
//!
//! For each head, with phi(x) = elu(x) + 1, q_i = phi(Wq x_i), k_j = phi(Wk x_j):
//! out_i = n_i / d_i, n_i = sum_{j<=i} (q_i . k_j) v_j, d_i = q_i . z_i + eps, z_i = sum_{j<=i} k_j.
//! Computed in chunks of `CHUNK` words: quadratic inside a chunk, a running state
//! S = sum k v^T (and z) across chunks. With Gn_i = g_i / d_i and gd_i = -(g_i . out_i) / d_i:
//! dq_i = sum_{j<=i} (Gn_i . v_j) k_j + gd_i z_i,
//! dk_j = sum_{i>=j} ((Gn_i . v_j) + gd_i) q_i,
//! dv_j = sum_{i>=j} (q_i . k_j) Gn_i,
//! the first as a forward sweep, the other two as one backward sweep; then the chain rule
//! through phi. Inputs and output are (batch, time, d_model) with heads side by side, so no
//! transposes are needed around the op.

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::linear::{matmul, Mat, Threads};
use super::simd::{self, map2_kernel, map_kernel};
use super::{contiguous_f32, map2_par, map_par, with_f32};

/// Words per chunk.
pub const CHUNK: usize = 64;
/// Added to the attention normaliser (as in fast-transformers).
pub const EPS: f32 = 1e-6;

/// Causal linear attention over (batch, time, heads * head_dim) inputs q, k (before the
/// feature map) and v.
pub struct LinearAttention {
    pub heads: usize,
}

map_kernel!(
    /// The feature map phi(x) = elu(x) + 1.
    phi,
    |x| if x > 0.0 { x + 1.0 } else { simd::exp(x) }
);

map2_kernel!(
    /// g phi'(x): g where x > 0, g e^x elsewhere.
    phi_grad,
    |x, g| if x > 0.0 { g } else { g * simd::exp(x) }
);

/// Copies a slice (the identity as a slice kernel).
fn copy(x: &[f32], out: &mut [f32]) {
    out.copy_from_slice(x)
}

/// One (sequence, head): its columns of a (time, d) buffer.
#[derive(Clone, Copy)]
pub(super) struct Head {
    /// Offset of the head's first element in the (batch, time, d) buffer.
    pub(super) offset: usize,
    pub(super) time: usize,
    pub(super) d: usize,
    pub(super) dh: usize,
}

impl Head {
    fn view<'a>(&self, buf: &'a [f32]) -> Mat<'a> {
        self.rows(buf, 0, self.time)
    }

    /// Rows `from..from + rows` of the head's columns.
    pub(super) fn rows<'a>(&self, buf: &'a [f32], from: usize, rows: usize) -> Mat<'a> {
        Mat::rows(&buf[self.offset + from * self.d..], rows, self.dh, self.d)
    }

    /// The head's columns, copied out contiguous (time, dh), through `f`.
    fn gather(&self, buf: &[f32], kernel: fn(&[f32], &mut [f32])) -> Vec<f32> {
        let mut out = vec![0f32; self.time * self.dh];
        for (t, row) in out.chunks_mut(self.dh).enumerate() {
            let at = self.offset + t * self.d;
            kernel(&buf[at..at + self.dh], row);
        }
        out
    }

    /// Writes a contiguous (time, dh) block back into the head's columns.
    pub(super) fn scatter(&self, block: &[f32], buf: &mut [f32]) {
        for (t, row) in block.chunks(self.dh).enumerate() {
            let at = self.offset + t * self.d;
            buf[at..at + self.dh].copy_from_slice(row);
        }
    }
}

pub(super) fn heads_of(batch: usize, time: usize, d: usize, heads: usize) -> Vec<Head> {
    let dh = d / heads;
    (0..batch * heads).map(|i| Head { offset: (i / heads) * time * d + (i % heads) * dh, time, d, dh }).collect()
}

/// The q, k and v inputs of an attention op: one (batch, time, d) shape, contiguous f32.
pub(super) fn qkv_inputs<'a>(op: &str, q: (&'a CpuStorage, &Layout), k: (&'a CpuStorage, &Layout), v: (&'a CpuStorage, &Layout)) -> Result<[&'a [f32]; 3]> {
    if k.1.dims() != q.1.dims() || v.1.dims() != q.1.dims() {
        candle_core::bail!("{op}: q {:?}, k {:?}, v {:?} differ", q.1.dims(), k.1.dims(), v.1.dims());
    }
    Ok([contiguous_f32(q.0, q.1, op)?, contiguous_f32(k.0, k.1, op)?, contiguous_f32(v.0, v.1, op)?])
}

/// Each head's output block written into one (batch, time, d) buffer.
pub(super) fn head_outputs(heads: &[Head], blocks: &[Vec<f32>], (b, t, d): (usize, usize, usize)) -> Vec<f32> {
    let mut out = vec![0f32; b * t * d];
    for (h, block) in heads.iter().zip(blocks) {
        h.scatter(block, &mut out);
    }
    out
}

/// Each head's (dq, dk, dv) blocks written into three (batch, time, d) gradient tensors.
pub(super) fn head_gradients<'a>(heads: &[Head], blocks: impl Iterator<Item = [&'a [f32]; 3]>, (b, t, d): (usize, usize, usize)) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let mut grads = [vec![0f32; b * t * d], vec![0f32; b * t * d], vec![0f32; b * t * d]];
    for (h, block) in heads.iter().zip(blocks) {
        for (grad, part) in grads.iter_mut().zip(block) {
            h.scatter(part, grad);
        }
    }
    let [dq, dk, dv] = grads.map(|g| Tensor::from_vec(g, (b, t, d), &Device::Cpu));
    Ok((Some(dq?), Some(dk?), Some(dv?)))
}

/// Zeroes the strict upper triangle of a square (n, n) row-major block.
fn causal_mask(a: &mut [f32], n: usize) {
    for i in 0..n {
        a[i * n + i + 1..(i + 1) * n].fill(0.0);
    }
}

fn chunks(time: usize) -> impl DoubleEndedIterator<Item = (usize, usize)> {
    (0..time.div_ceil(CHUNK)).map(move |c| (c * CHUNK, CHUNK.min(time - c * CHUNK)))
}

/// Forward of one head: (time, dh) output from contiguous phi(q), phi(k) and v's view.
fn forward_head(q: &[f32], k: &[f32], v: Mat, dh: usize) -> Vec<f32> {
    let time = v.rows;
    let mut out = vec![0f32; time * dh];
    let mut state = vec![0f32; dh * dh];
    let mut z = vec![0f32; dh];
    let mut scores = vec![0f32; CHUNK * CHUNK];
    for (s, c) in chunks(time) {
        let qc = Mat::rows(&q[s * dh..], c, dh, dh);
        let kc = Mat::rows(&k[s * dh..], c, dh, dh);
        let vc = Mat { data: &v.data[s * v.row_stride..], rows: c, ..v };
        let a = &mut scores[..c * c];
        matmul(a, c, false, qc, kc.t(), Threads::One);
        causal_mask(a, c);
        let o = &mut out[s * dh..(s + c) * dh];
        matmul(o, dh, false, Mat::rows(a, c, c, c), vc, Threads::One);
        matmul(o, dh, true, qc, Mat::rows(&state, dh, dh, dh), Threads::One);
        for i in 0..c {
            let qi = &q[(s + i) * dh..(s + i + 1) * dh];
            let den = a[i * c..i * c + c].iter().sum::<f32>() + qi.iter().zip(&z).map(|(x, y)| x * y).sum::<f32>() + EPS;
            let inv = 1.0 / den;
            o[i * dh..(i + 1) * dh].iter_mut().for_each(|x| *x *= inv);
        }
        matmul(&mut state, dh, true, kc.t(), vc, Threads::One);
        for row in k[s * dh..(s + c) * dh].chunks(dh) {
            z.iter_mut().zip(row).for_each(|(a, b)| *a += b);
        }
    }
    out
}

/// Gradients of one head with respect to phi(q), phi(k) and v, each (time, dh).
fn backward_head(q: &[f32], k: &[f32], v: Mat, out: Mat, grad: Mat, dh: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let time = v.rows;
    // Gn = g / d and gd = -(g . out) / d, from the inclusive prefix sums z_i of k.
    let mut gn = vec![0f32; time * dh];
    let mut gd = vec![0f32; time];
    let mut zs = vec![0f32; time * dh];
    let mut z = vec![0f32; dh];
    for i in 0..time {
        let qi = &q[i * dh..(i + 1) * dh];
        z.iter_mut().zip(&k[i * dh..(i + 1) * dh]).for_each(|(a, b)| *a += b);
        zs[i * dh..(i + 1) * dh].copy_from_slice(&z);
        let den = qi.iter().zip(&z).map(|(x, y)| x * y).sum::<f32>() + EPS;
        let (g, o) = (&grad.data[i * grad.row_stride..i * grad.row_stride + dh], &out.data[i * out.row_stride..i * out.row_stride + dh]);
        let inv = 1.0 / den;
        gn[i * dh..(i + 1) * dh].iter_mut().zip(g).for_each(|(a, b)| *a = b * inv);
        gd[i] = -g.iter().zip(o).map(|(a, b)| a * b).sum::<f32>() * inv;
    }
    let mut dq = vec![0f32; time * dh];
    let mut dk = vec![0f32; time * dh];
    let mut dv = vec![0f32; time * dh];
    let mut scores = vec![0f32; CHUNK * CHUNK];
    // Forward sweep: dq, with P = sum over earlier chunks of v k^T.
    let mut p = vec![0f32; dh * dh];
    for (s, c) in chunks(time) {
        let gc = Mat::rows(&gn[s * dh..], c, dh, dh);
        let kc = Mat::rows(&k[s * dh..], c, dh, dh);
        let vc = Mat { data: &v.data[s * v.row_stride..], rows: c, ..v };
        let b = &mut scores[..c * c];
        matmul(b, c, false, gc, vc.t(), Threads::One);
        causal_mask(b, c);
        let d = &mut dq[s * dh..(s + c) * dh];
        matmul(d, dh, false, Mat::rows(b, c, c, c), kc, Threads::One);
        matmul(d, dh, true, gc, Mat::rows(&p, dh, dh, dh), Threads::One);
        for i in 0..c {
            let zi = &zs[(s + i) * dh..(s + i + 1) * dh];
            d[i * dh..(i + 1) * dh].iter_mut().zip(zi).for_each(|(a, z)| *a += gd[s + i] * z);
        }
        matmul(&mut p, dh, true, vc.t(), kc, Threads::One);
    }
    // Backward sweep: dk and dv, with R = sum over later chunks of Gn q^T and w = sum gd q.
    let mut r = vec![0f32; dh * dh];
    let mut w = vec![0f32; dh];
    for (s, c) in chunks(time).rev() {
        let qc = Mat::rows(&q[s * dh..], c, dh, dh);
        let kc = Mat::rows(&k[s * dh..], c, dh, dh);
        let gc = Mat::rows(&gn[s * dh..], c, dh, dh);
        let vc = Mat { data: &v.data[s * v.row_stride..], rows: c, ..v };
        let rm = Mat::rows(&r, dh, dh, dh);
        let b = &mut scores[..c * c];
        matmul(b, c, false, gc, vc.t(), Threads::One);
        causal_mask(b, c);
        let dkc = &mut dk[s * dh..(s + c) * dh];
        matmul(dkc, dh, false, Mat::rows(b, c, c, c).t(), qc, Threads::One);
        matmul(dkc, dh, true, vc, rm, Threads::One);
        let mut acc = w.clone();
        for j in (0..c).rev() {
            let qj = &q[(s + j) * dh..(s + j + 1) * dh];
            acc.iter_mut().zip(qj).for_each(|(a, x)| *a += gd[s + j] * x);
            dkc[j * dh..(j + 1) * dh].iter_mut().zip(&acc).for_each(|(a, b)| *a += b);
        }
        let a = &mut scores[..c * c];
        matmul(a, c, false, qc, kc.t(), Threads::One);
        causal_mask(a, c);
        let dvc = &mut dv[s * dh..(s + c) * dh];
        matmul(dvc, dh, false, Mat::rows(a, c, c, c).t(), gc, Threads::One);
        matmul(dvc, dh, true, kc, rm.t(), Threads::One);
        matmul(&mut r, dh, true, gc.t(), qc, Threads::One);
        w = acc;
    }
    (dq, dk, dv)
}

impl LinearAttention {
    fn shape(&self, l: &Layout) -> Result<(usize, usize, usize)> {
        let (b, t, d) = l.shape().dims3()?;
        if self.heads == 0 || d % self.heads != 0 {
            candle_core::bail!("linear attention: d_model {d} is not a multiple of {} heads", self.heads);
        }
        Ok((b, t, d))
    }
}

impl CustomOp3 for LinearAttention {
    fn name(&self) -> &'static str {
        "fused-causal-linear-attention"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, t, d) = self.shape(l1)?;
        let [q, k, v] = qkv_inputs(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        let heads = heads_of(b, t, d, self.heads);
        let blocks: Vec<Vec<f32>> = heads
            .par_iter()
            .map(|h| forward_head(&h.gather(q, phi), &h.gather(k, phi), h.view(v), h.dh))
            .collect();
        Ok((CpuStorage::F32(head_outputs(&heads, &blocks, (b, t, d))), l1.shape().clone()))
    }

    fn bwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, t, d) = q.dims3()?;
        let grad = grad.contiguous()?;
        let heads = heads_of(b, t, d, self.heads);
        let blocks = with_f32(q, |q| {
            with_f32(k, |k| {
                with_f32(v, |v| {
                    with_f32(res, |o| {
                        with_f32(&grad, |g| {
                            heads
                                .par_iter()
                                .map(|h| {
                                    let (rq, rk) = (h.gather(q, copy), h.gather(k, copy));
                                    let (pq, pk) = (map_par(&rq, phi), map_par(&rk, phi));
                                    let (dpq, dpk, dv) = backward_head(&pq, &pk, h.view(v), h.view(o), h.view(g), h.dh);
                                    // Through the feature map: d/dx phi(x) = 1 (x > 0) or e^x.
                                    (map2_par(&rq, &dpq, phi_grad), map2_par(&rk, &dpk, phi_grad), dv)
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                })
            })
        })?????;
        head_gradients(&heads, blocks.iter().map(|(dq, dk, dv)| [&dq[..], &dk[..], &dv[..]]), (b, t, d))
    }
}
