//! The Linear layer y = x W^T + b as one custom op, and the strided GEMM every fused op uses.
//! Forward writes the bias into each output row, then one GEMM accumulates x W^T on top of it.
//! Backward is two GEMMs (dx = g W, dW = g^T x) and a column sum of g split across threads.
//! GEMM is the `gemm` crate (AVX-512 kernels through its `x86-v4` feature, chosen at run time).

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, with_f32};

/// A read-only matrix view: element (r, c) is `data[r * row_stride + c * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix whose rows are `row_stride` floats apart.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Mat<'a> {
        Mat { data, rows, cols, row_stride, col_stride: 1 }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Mat<'a> {
        Mat { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    fn fits(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride < self.data.len()
    }
}

/// How many threads a GEMM may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    One,
    All,
}

/// dst = a b, or dst += a b with `accumulate`; dst is row-major (a.rows x b.cols) with rows
/// `dst_stride` floats apart.
pub fn matmul(dst: &mut [f32], dst_stride: usize, accumulate: bool, a: Mat, b: Mat, threads: Threads) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions differ");
    assert!(a.fits() && b.fits(), "matrix view out of its buffer");
    assert!(m == 0 || n == 0 || (m - 1) * dst_stride + n <= dst.len(), "output out of its buffer");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_stride..r * dst_stride + n].fill(0.0);
            }
        }
        return;
    }
    let parallelism = match threads {
        Threads::All if rayon::current_num_threads() > 1 => gemm::Parallelism::Rayon(rayon::current_num_threads()),
        _ => gemm::Parallelism::None,
    };
    // SAFETY: the asserts above keep every element gemm reads or writes inside its slice; dst
    // is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// y = x W^T + b over the last dimension of x (any leading dimensions).
pub struct Linear;

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let b = contiguous_f32(s3, l3, self.name())?;
        let (out_dim, in_dim) = l2.shape().dims2()?;
        if *l1.dims().last().unwrap_or(&0) != in_dim || b.len() != out_dim {
            candle_core::bail!("{}: x {:?}, weight {:?}, bias {:?} do not fit", self.name(), l1.dims(), l2.dims(), l3.dims());
        }
        let rows = x.len() / in_dim;
        let mut y = vec![0f32; rows * out_dim];
        y.par_chunks_mut(out_dim * 64).for_each(|block| {
            for row in block.chunks_mut(out_dim) {
                row.copy_from_slice(b);
            }
        });
        matmul(&mut y, out_dim, true, Mat::rows(x, rows, in_dim, in_dim), Mat::rows(w, out_dim, in_dim, in_dim).t(), Threads::All);
        let mut dims = l1.dims().to_vec();
        *dims.last_mut().expect("rank >= 1") = out_dim;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (out_dim, in_dim) = w.dims2()?;
        let rows = x.elem_count() / in_dim;
        let (dx, dw, db) = with_f32(&grad, |g| {
            with_f32(x, |xv| {
                with_f32(w, |wv| {
                    let gm = Mat::rows(g, rows, out_dim, out_dim);
                    let mut dx = vec![0f32; rows * in_dim];
                    matmul(&mut dx, in_dim, false, gm, Mat::rows(wv, out_dim, in_dim, in_dim), Threads::All);
                    let mut dw = vec![0f32; out_dim * in_dim];
                    matmul(&mut dw, in_dim, false, gm.t(), Mat::rows(xv, rows, in_dim, in_dim), Threads::All);
                    (dx, dw, column_sums(g, out_dim))
                })
            })
        })???;
        let device = Device::Cpu;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), &device)?),
            Some(Tensor::from_vec(dw, (out_dim, in_dim), &device)?),
            Some(Tensor::from_vec(db, out_dim, &device)?),
        ))
    }
}

/// Sums of the columns of a row-major matrix with `cols` columns, split across threads by rows.
pub fn column_sums(m: &[f32], cols: usize) -> Vec<f32> {
    let rows_per_task = (super::PAR_MIN / cols).max(1);
    m.par_chunks(cols * rows_per_task)
        .map(|block| {
            let mut acc = vec![0f32; cols];
            for row in block.chunks(cols) {
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += v;
                }
            }
            acc
        })
        .reduce(
            || vec![0f32; cols],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(&b) {
                    *x += y;
                }
                a
            },
        )
}
