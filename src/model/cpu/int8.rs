//! int8 weight matrices of the recurrent models' linear layers, and their products with 1 to
//! `MAX_INPUTS` f32 vectors at once (one word of each take).
//!
//! Format: ggml's Q8_0 numbers (blocks of 32 weights along a row, one f32 scale each, values in
//! -127..=127), stored in panels of 16 rows: for each panel and block, 8 chunks of 64 bytes,
//! chunk c holding columns 4c..4c+4 of the block for each of the 16 rows. One chunk is one
//! AVX-512 register, so the VNNI kernel multiplies 16 rows by 4 input bytes in one instruction
//! (`vpdpbusd`), and a panel's weights are read once for every input.
//!
//! Every kernel computes the same numbers in the same order: per row and block the exact i32 dot
//! product, then `sum = (dot as f32 * weight_scale).mul_add(input_scale, sum)` (one fused
//! multiply-add) over the blocks, then `sum + bias`. So the AVX-512 VNNI, AVX2 and portable builds agree bit for bit, and a song is the
//! same whether it is generated alone or as one of several takes.
//!
//! Pure functions on slices; the inputs are quantised into a buffer owned by the calling thread,
//! grown once to the widest layer (no allocation per call after that).

use std::cell::RefCell;

use crate::model::fused::simd::{isa, Isa};

/// Weights per block (one scale each), as ggml's Q8_0.
pub const BLOCK: usize = 32;
/// Rows per panel (one AVX-512 register of i32 sums).
const PANEL_ROWS: usize = 16;
/// Columns per row in one 64-byte chunk (the four bytes `vpdpbusd` sums into one i32).
const CHUNK: usize = 4;
/// Chunks per block.
const CHUNKS: usize = BLOCK / CHUNK;
/// Bytes of one panel's block.
const PANEL_BLOCK: usize = PANEL_ROWS * BLOCK;
/// Most inputs one product takes (the most takes generated together).
pub const MAX_INPUTS: usize = 8;

/// A quantised weight matrix (rows = outputs).
#[derive(Debug, Clone)]
pub struct Int8Matrix {
    rows: usize,
    cols: usize,
    blocks: usize,
    /// Panels x blocks x chunks x (16 rows x 4 columns), zero past the last row and column.
    weights: Vec<i8>,
    /// Panels x blocks x 16 rows: each block's scale.
    scales: Vec<f32>,
}

/// Quantises 32 values to int8 with one scale (max |v| / 127, rounded to nearest, ties to
/// even); returns the scale.
#[inline(always)]
pub fn quantise_block(values: &[f32; BLOCK], out: &mut [i8]) -> f32 {
    let mut lanes = [0f32; 16];
    for (i, v) in values.iter().enumerate() {
        lanes[i % 16] = lanes[i % 16].max(v.abs());
    }
    let max = lanes.iter().fold(0f32, |m, &v| m.max(v));
    let scale = if max > 0.0 { max / 127.0 } else { 0.0 };
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    for (o, v) in out.iter_mut().zip(values) {
        *o = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// Calls `$kernel::<N>` with the number of inputs as a constant (so each input's sums stay in
/// registers).
macro_rules! dispatch_n {
    ($n:expr, $kernel:ident, $($arg:expr),*) => {
        match $n {
            1 => $kernel::<1>($($arg),*),
            2 => $kernel::<2>($($arg),*),
            3 => $kernel::<3>($($arg),*),
            4 => $kernel::<4>($($arg),*),
            5 => $kernel::<5>($($arg),*),
            6 => $kernel::<6>($($arg),*),
            7 => $kernel::<7>($($arg),*),
            _ => $kernel::<8>($($arg),*),
        }
    };
}

impl Int8Matrix {
    /// Quantises a row-major f32 matrix.
    pub fn quantise(w: &[f32], rows: usize, cols: usize) -> Int8Matrix {
        assert_eq!(w.len(), rows * cols);
        let (panels, blocks) = (rows.div_ceil(PANEL_ROWS), cols.div_ceil(BLOCK));
        let mut weights = vec![0i8; panels * blocks * PANEL_BLOCK];
        let mut scales = vec![0f32; panels * blocks * PANEL_ROWS];
        for r in 0..rows {
            let (p, pr) = (r / PANEL_ROWS, r % PANEL_ROWS);
            for b in 0..blocks {
                let mut block = [0f32; BLOCK];
                let end = ((b + 1) * BLOCK).min(cols);
                block[..end - b * BLOCK].copy_from_slice(&w[r * cols + b * BLOCK..r * cols + end]);
                let mut q = [0i8; BLOCK];
                let at = (p * blocks + b) * PANEL_ROWS + pr;
                scales[at] = quantise_block(&block, &mut q);
                for (c, four) in q.chunks(CHUNK).enumerate() {
                    let start = ((p * blocks + b) * CHUNKS + c) * PANEL_ROWS * CHUNK + pr * CHUNK;
                    weights[start..start + CHUNK].copy_from_slice(four);
                }
            }
        }
        Int8Matrix { rows, cols, blocks, weights, scales }
    }

    /// Bytes read per product.
    pub fn bytes(&self) -> usize {
        self.weights.len() + self.scales.len() * 4
    }

    /// outs_j = W xs_j + bias for `n` inputs (`xs`: n rows of `cols`; `outs`: n rows of
    /// `rows`; 1 <= n <= `MAX_INPUTS`). Each output is bit for bit what the input gives alone.
    pub fn multiply(&self, xs: &[f32], n: usize, bias: &[f32], outs: &mut [f32]) {
        assert!((1..=MAX_INPUTS).contains(&n) && xs.len() == n * self.cols && outs.len() == n * self.rows && bias.len() == self.rows);
        let kernel = Kernel::best();
        QUANTISED.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            let q = buffer.quantise(xs, n, self.cols, self.blocks);
            self.multiply_quantised(kernel, q, n, bias, outs);
        })
    }

    /// The product with `n` inputs already quantised, by `kernel` (one this CPU can run).
    fn multiply_quantised(&self, kernel: Kernel, q: Quantised<'_>, n: usize, bias: &[f32], outs: &mut [f32]) {
        let blocks = n * self.blocks;
        assert!(q.bytes.len() == blocks * BLOCK && q.scales.len() == blocks && q.sums.len() == blocks && outs.len() == n * self.rows && bias.len() == self.rows);
        match kernel {
            // SAFETY: the callers pass only a kernel whose features the CPU has (`Kernel::best`,
            // or the tests' own detection), and the assertion above gives every bound the
            // kernels index within (panels, blocks and rows of `self`, n inputs).
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni => unsafe { dispatch_n!(n, vnni, self, q, bias, outs) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { dispatch_n!(n, avx2, self, q, bias, outs) },
            _ => portable(self, q, n, bias, outs),
        }
    }
}


/// Which build of the product this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// AVX-512 with VNNI (`vpdpbusd`: 64 byte products summed into 16 i32 per instruction).
    Vnni,
    /// AVX2 and FMA (byte products summed in pairs to i16, then to i32).
    Avx2,
    /// Plain Rust.
    Portable,
}

impl Kernel {
    /// The fastest build this CPU can run: `simd::isa`'s choice, with VNNI where AVX-512 has it
    /// (std caches the detection).
    fn best() -> Kernel {
        match isa() {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if is_x86_feature_detected!("avx512vnni") => Kernel::Vnni,
            Isa::Avx512 | Isa::Avx2 => Kernel::Avx2,
            Isa::Baseline => Kernel::Portable,
        }
    }
}

/// The name of the build `Kernel::best` picks on this CPU.
pub fn kernel_name() -> &'static str {
    match Kernel::best() {
        Kernel::Vnni => "AVX-512 VNNI",
        Kernel::Avx2 => "AVX2",
        Kernel::Portable => "portable",
    }
}

/// Inputs quantised for one product.
#[derive(Clone, Copy)]
struct Quantised<'a> {
    /// n rows of blocks x 32 int8 values.
    bytes: &'a [i8],
    /// n rows of block scales.
    scales: &'a [f32],
    /// n rows of block sums of the int8 values. The VNNI instruction multiplies unsigned by
    /// signed bytes, so its kernel feeds the weights plus 128 and takes 128 x these sums back
    /// off, which gives the signed products exactly.
    sums: &'a [i32],
}

/// The calling thread's buffer for quantised inputs.
#[derive(Default)]
struct QuantiseBuffer {
    bytes: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
}

thread_local! {
    static QUANTISED: RefCell<QuantiseBuffer> = RefCell::new(QuantiseBuffer::default());
}

impl QuantiseBuffer {
    /// Quantises `n` rows of `cols` values in blocks (zero past `cols`).
    fn quantise(&mut self, xs: &[f32], n: usize, cols: usize, blocks: usize) -> Quantised<'_> {
        let (len, scales) = (n * blocks * BLOCK, n * blocks);
        if self.bytes.len() < len {
            self.bytes.resize(len, 0);
        }
        if self.scales.len() < scales {
            self.scales.resize(scales, 0.0);
            self.sums.resize(scales, 0);
        }
        quantise_rows(xs, cols, blocks, &mut self.bytes[..len], &mut self.scales[..scales], &mut self.sums[..scales]);
        Quantised { bytes: &self.bytes[..len], scales: &self.scales[..scales], sums: &self.sums[..scales] }
    }
}

/// Quantises rows of inputs: with AVX-512 or AVX2 where the CPU has it, else in plain Rust (the
/// same numbers in every build).
fn quantise_rows(xs: &[f32], cols: usize, blocks: usize, bytes: &mut [i8], scales: &mut [f32], sums: &mut [i32]) {
    quantise_rows_with(isa(), xs, cols, blocks, bytes, scales, sums)
}

/// `quantise_rows` by the build for `isa` (one this CPU can run).
fn quantise_rows_with(isa: Isa, xs: &[f32], cols: usize, blocks: usize, bytes: &mut [i8], scales: &mut [f32], sums: &mut [i32]) {
    let rows = xs.len() / cols;
    assert!(xs.len().is_multiple_of(cols) && bytes.len() == rows * blocks * BLOCK && scales.len() == rows * blocks && sums.len() == rows * blocks && blocks * BLOCK >= cols);
    match isa {
        // SAFETY: the CPU has AVX-512F (`isa`, or the tests' own detection); the assertion above
        // bounds every store, and the masked loads read only the `cols` values of each row.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { quantise_rows_avx512(xs, cols, blocks, bytes, scales, sums) },
        // SAFETY: as above with AVX2; the loads read whole blocks inside each row only, and a
        // row's last partial block is copied into a zeroed block first.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { quantise_rows_avx2(xs, cols, blocks, bytes, scales, sums) },
        _ => quantise_rows_portable(xs, cols, blocks, bytes, scales, sums),
    }
}

/// `quantise_rows` in plain Rust: `quantise_block` on each block, zero past `cols`.
fn quantise_rows_portable(xs: &[f32], cols: usize, blocks: usize, bytes: &mut [i8], scales: &mut [f32], sums: &mut [i32]) {
    for (j, x) in xs.chunks(cols).enumerate() {
        for b in 0..blocks {
            let mut block = [0f32; BLOCK];
            let end = ((b + 1) * BLOCK).min(cols);
            block[..end - b * BLOCK].copy_from_slice(&x[b * BLOCK..end]);
            let at = (j * blocks + b) * BLOCK;
            scales[j * blocks + b] = quantise_block(&block, &mut bytes[at..at + BLOCK]);
            sums[j * blocks + b] = bytes[at..at + BLOCK].iter().map(|&v| v as i32).sum();
        }
    }
}

/// AVX-512: a block is two registers; the same operations as `quantise_block` (the
/// conversion rounds to nearest even, as `round_ties_even`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantise_rows_avx512(xs: &[f32], cols: usize, blocks: usize, bytes: &mut [i8], scales: &mut [f32], sums: &mut [i32]) {
    use std::arch::x86_64::*;
    let (low, high) = (_mm512_set1_epi32(-127), _mm512_set1_epi32(127));
    for (j, x) in xs.chunks(cols).enumerate() {
        for b in 0..blocks {
            let start = b * BLOCK;
            let mask = |from: usize| -> __mmask16 {
                let live = cols.saturating_sub(start + from).min(16);
                if live == 16 { 0xFFFF } else { (1u16 << live) - 1 }
            };
            let v0 = _mm512_maskz_loadu_ps(mask(0), x.as_ptr().add(start));
            let v1 = _mm512_maskz_loadu_ps(mask(16), x.as_ptr().add((start + 16).min(cols)));
            let max = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            let scale = if max > 0.0 { max / 127.0 } else { 0.0 };
            let inv = _mm512_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
            let at = (j * blocks + b) * BLOCK;
            let mut sum = 0;
            for (half, v) in [v0, v1].into_iter().enumerate() {
                let q = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, inv)), low), high);
                sum += _mm512_reduce_add_epi32(q);
                _mm_storeu_si128(bytes.as_mut_ptr().add(at + half * 16) as *mut __m128i, _mm512_cvtepi32_epi8(q));
            }
            scales[j * blocks + b] = scale;
            sums[j * blocks + b] = sum;
        }
    }
}

/// AVX2: a block is four registers of 8; the same operations as `quantise_block` (the
/// conversion rounds to nearest even, as `round_ties_even`; the clamped values pack to bytes
/// exactly).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantise_rows_avx2(xs: &[f32], cols: usize, blocks: usize, bytes: &mut [i8], scales: &mut [f32], sums: &mut [i32]) {
    use std::arch::x86_64::*;
    let (low, high) = (_mm256_set1_epi32(-127), _mm256_set1_epi32(127));
    let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    // `packs` interleaves the 128-bit lanes; this puts the four-byte groups back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (j, x) in xs.chunks(cols).enumerate() {
        for b in 0..blocks {
            let start = b * BLOCK;
            let mut tail = [0f32; BLOCK];
            let block = if start + BLOCK <= cols {
                x.as_ptr().add(start)
            } else {
                tail[..cols - start].copy_from_slice(&x[start..]);
                tail.as_ptr()
            };
            let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(block.add(8 * i)));
            let m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v[0], magnitude), _mm256_and_ps(v[1], magnitude)), _mm256_max_ps(_mm256_and_ps(v[2], magnitude), _mm256_and_ps(v[3], magnitude)));
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let max = _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
            let scale = if max > 0.0 { max / 127.0 } else { 0.0 };
            let inv = _mm256_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
            let q: [__m256i; 4] = std::array::from_fn(|i| _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv)), low), high));
            let total = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let total = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
            let total = _mm_add_epi32(total, _mm_shuffle_epi32(total, 0b01_00_11_10));
            let total = _mm_add_epi32(total, _mm_shuffle_epi32(total, 0b10_11_00_01));
            let packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            let at = (j * blocks + b) * BLOCK;
            _mm256_storeu_si256(bytes.as_mut_ptr().add(at) as *mut __m256i, _mm256_permutevar8x32_epi32(packed, order));
            scales[j * blocks + b] = scale;
            sums[j * blocks + b] = _mm_cvtsi128_si32(total);
        }
    }
}

/// Index of a panel block's first chunk byte, and of its first row's scale.
#[inline(always)]
fn panel_block(m: &Int8Matrix, panel: usize, block: usize) -> (usize, usize) {
    let at = panel * m.blocks + block;
    (at * PANEL_BLOCK, at * PANEL_ROWS)
}

/// The reference build: plain Rust, the order every build follows.
fn portable(m: &Int8Matrix, q: Quantised<'_>, n: usize, bias: &[f32], outs: &mut [f32]) {
    let padded = m.blocks * BLOCK;
    for panel in 0..m.rows.div_ceil(PANEL_ROWS) {
        for j in 0..n {
            let mut sums = [0f32; PANEL_ROWS];
            for b in 0..m.blocks {
                let (w, s) = panel_block(m, panel, b);
                let x = &q.bytes[j * padded + b * BLOCK..j * padded + (b + 1) * BLOCK];
                for (r, sum) in sums.iter_mut().enumerate() {
                    let mut dot = 0i32;
                    for c in 0..CHUNKS {
                        for i in 0..CHUNK {
                            dot += m.weights[w + c * PANEL_ROWS * CHUNK + r * CHUNK + i] as i32 * x[c * CHUNK + i] as i32;
                        }
                    }
                    *sum = (dot as f32 * m.scales[s + r]).mul_add(q.scales[j * m.blocks + b], *sum);
                }
            }
            for (r, sum) in sums.iter().enumerate() {
                let row = panel * PANEL_ROWS + r;
                if row < m.rows {
                    outs[j * m.rows + row] = sum + bias[row];
                }
            }
        }
    }
}

/// AVX2: each 64-byte chunk as two halves of 8 rows; |w| times x carrying w's sign, pairs summed
/// to i16 (at most 2 x 127 x 127, so exact) and then to i32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<const N: usize>(m: &Int8Matrix, q: Quantised<'_>, bias: &[f32], outs: &mut [f32]) {
    use std::arch::x86_64::*;
    let padded = m.blocks * BLOCK;
    let ones = _mm256_set1_epi16(1);
    for panel in 0..m.rows.div_ceil(PANEL_ROWS) {
        for half in 0..2 {
            let first = panel * PANEL_ROWS + half * 8;
            if first >= m.rows {
                break;
            }
            let mut sums = [_mm256_setzero_ps(); N];
            for b in 0..m.blocks {
                let (w_at, s_at) = panel_block(m, panel, b);
                let mut dots = [_mm256_setzero_si256(); N];
                for c in 0..CHUNKS {
                    let w = _mm256_loadu_si256(m.weights.as_ptr().add(w_at + c * PANEL_ROWS * CHUNK + half * 8 * CHUNK) as *const __m256i);
                    let w_abs = _mm256_sign_epi8(w, w);
                    for (j, dot) in dots.iter_mut().enumerate() {
                        let four = (q.bytes.as_ptr().add(j * padded + b * BLOCK + c * CHUNK) as *const i32).read_unaligned();
                        let pairs = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(_mm256_set1_epi32(four), w));
                        *dot = _mm256_add_epi32(*dot, _mm256_madd_epi16(pairs, ones));
                    }
                }
                let w_scales = _mm256_loadu_ps(m.scales.as_ptr().add(s_at + half * 8));
                for (j, (sum, dot)) in sums.iter_mut().zip(&dots).enumerate() {
                    let x_scale = _mm256_set1_ps(*q.scales.get_unchecked(j * m.blocks + b));
                    *sum = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(*dot), w_scales), x_scale, *sum);
                }
            }
            let live = (m.rows - first).min(8);
            for (j, sum) in sums.iter().enumerate() {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), *sum);
                for (r, lane) in lanes.iter().take(live).enumerate() {
                    outs[j * m.rows + first + r] = lane + bias[first + r];
                }
            }
        }
    }
}

/// AVX-512 VNNI: per panel block, the 8 chunks (plus 128, unsigned) stay in registers while
/// each input's four bytes at a time are broadcast and multiplied into 16 row sums (two chains,
/// one starting from -128 x the input block's sum; added exactly).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn vnni<const N: usize>(m: &Int8Matrix, q: Quantised<'_>, bias: &[f32], outs: &mut [f32]) {
    use std::arch::x86_64::*;
    let padded = m.blocks * BLOCK;
    let flip = _mm512_set1_epi8(0x80u8 as i8);
    for panel in 0..m.rows.div_ceil(PANEL_ROWS) {
        let mut sums = [_mm512_setzero_ps(); N];
        for b in 0..m.blocks {
            let (w_at, s_at) = panel_block(m, panel, b);
            // The weights plus 128, as unsigned bytes.
            let w: [__m512i; CHUNKS] = std::array::from_fn(|c| _mm512_xor_si512(_mm512_loadu_si512(m.weights.as_ptr().add(w_at + c * PANEL_ROWS * CHUNK) as *const __m512i), flip));
            let w_scales = _mm512_loadu_ps(m.scales.as_ptr().add(s_at));
            for (j, sum) in sums.iter_mut().enumerate() {
                let x = q.bytes.as_ptr().add(j * padded + b * BLOCK) as *const i32;
                let (mut even, mut odd) = (_mm512_set1_epi32(-128 * *q.sums.get_unchecked(j * m.blocks + b)), _mm512_setzero_si512());
                for c in (0..CHUNKS).step_by(2) {
                    even = _mm512_dpbusd_epi32(even, w[c], _mm512_set1_epi32(x.add(c).read_unaligned()));
                    odd = _mm512_dpbusd_epi32(odd, w[c + 1], _mm512_set1_epi32(x.add(c + 1).read_unaligned()));
                }
                let dot = _mm512_cvtepi32_ps(_mm512_add_epi32(even, odd));
                let x_scale = _mm512_set1_ps(*q.scales.get_unchecked(j * m.blocks + b));
                *sum = _mm512_fmadd_ps(_mm512_mul_ps(dot, w_scales), x_scale, *sum);
            }
        }
        let first = panel * PANEL_ROWS;
        let live = (m.rows - first).min(PANEL_ROWS);
        let mask: __mmask16 = if live == PANEL_ROWS { 0xFFFF } else { (1u16 << live) - 1 };
        let b = _mm512_maskz_loadu_ps(mask, bias.as_ptr().add(first));
        for (j, sum) in sums.iter().enumerate() {
            _mm512_mask_storeu_ps(outs.as_mut_ptr().add(j * m.rows + first), mask, _mm512_add_ps(*sum, b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in about -2..2 with some exact zeros and ties.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if i % 29 == 0 {
                    0.0
                } else {
                    ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
                }
            })
            .collect()
    }

    /// Every build this CPU can run.
    fn kernels() -> Vec<Kernel> {
        match Kernel::best() {
            Kernel::Vnni => vec![Kernel::Portable, Kernel::Avx2, Kernel::Vnni],
            Kernel::Avx2 => vec![Kernel::Portable, Kernel::Avx2],
            Kernel::Portable => vec![Kernel::Portable],
        }
    }

    fn product(m: &Int8Matrix, kernel: Kernel, xs: &[f32], n: usize, bias: &[f32]) -> Vec<f32> {
        let mut buffer = QuantiseBuffer::default();
        let q = buffer.quantise(xs, n, m.cols, m.blocks);
        let mut outs = vec![f32::NAN; n * m.rows];
        m.multiply_quantised(kernel, q, n, bias, &mut outs);
        outs
    }

    #[test]
    fn every_build_gives_the_same_bits_alone_or_batched() {
        // Shapes with a partial panel and a partial block, and the model's own shapes.
        for (rows, cols) in [(3, 5), (17, 33), (40, 100), (64, 256), (256, 672)] {
            let m = Int8Matrix::quantise(&values(rows * cols, 1), rows, cols);
            let bias = values(rows, 2);
            let xs = values(MAX_INPUTS * cols, 3);
            let alone: Vec<Vec<f32>> = (0..MAX_INPUTS).map(|j| product(&m, Kernel::Portable, &xs[j * cols..(j + 1) * cols], 1, &bias)).collect();
            for kernel in kernels() {
                for n in 1..=MAX_INPUTS {
                    let together = product(&m, kernel, &xs[..n * cols], n, &bias);
                    for j in 0..n {
                        let (a, t) = (&alone[j], &together[j * rows..(j + 1) * rows]);
                        assert!(a.iter().zip(t).all(|(a, t)| a.to_bits() == t.to_bits()), "{kernel:?}, {rows}x{cols}, input {j} of {n}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_product_is_close_to_the_f32_product() {
        let (rows, cols) = (48, 200);
        let w = values(rows * cols, 4);
        let x = values(cols, 5);
        let bias = values(rows, 6);
        let m = Int8Matrix::quantise(&w, rows, cols);
        let mut out = vec![0f32; rows];
        m.multiply(&x, 1, &bias, &mut out);
        // Each value moves by at most half a step (its block's max / 254), so a row's error is
        // bounded by the sum of |x| times w's half steps and |w| times x's half steps.
        let half_step = |v: &[f32], i: usize| v[i / BLOCK * BLOCK..((i / BLOCK + 1) * BLOCK).min(v.len())].iter().fold(0f32, |m, a| m.max(a.abs())) / 254.0;
        for r in 0..rows {
            let row = &w[r * cols..(r + 1) * cols];
            let exact: f32 = row.iter().zip(&x).map(|(a, b)| a * b).sum::<f32>() + bias[r];
            let bound: f32 = (0..cols).map(|i| x[i].abs() * half_step(row, i) + row[i].abs() * half_step(&x, i) + half_step(row, i) * half_step(&x, i)).sum();
            assert!((out[r] - exact).abs() <= bound * 1.001 + 1e-4, "row {r}: {} against {exact} (bound {bound})", out[r]);
            assert!(bound < 0.02 * row.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum::<f32>());
        }
    }

    #[test]
    fn every_quantiser_gives_the_portable_bytes() {
        let builds = match isa() {
            Isa::Avx512 => vec![Isa::Avx512, Isa::Avx2],
            Isa::Avx2 => vec![Isa::Avx2],
            Isa::Baseline => vec![],
        };
        for build in builds {
            for cols in [5usize, 32, 33, 100, 672] {
                let blocks = cols.div_ceil(BLOCK);
                let mut xs = values(3 * cols, cols as u64);
                // A row whose largest magnitude is negative, and a row of zeros.
                xs[cols + 1] = -9.0;
                xs[2 * cols..].fill(0.0);
                let (mut a, mut sa, mut ua) = (vec![1i8; 3 * blocks * BLOCK], vec![1f32; 3 * blocks], vec![1i32; 3 * blocks]);
                let (mut b, mut sb, mut ub) = (vec![2i8; 3 * blocks * BLOCK], vec![2f32; 3 * blocks], vec![2i32; 3 * blocks]);
                quantise_rows_portable(&xs, cols, blocks, &mut a, &mut sa, &mut ua);
                quantise_rows_with(build, &xs, cols, blocks, &mut b, &mut sb, &mut ub);
                assert_eq!(a, b, "{build:?}, {cols} columns");
                assert_eq!(ua, ub, "{build:?}, {cols} columns");
                assert!(sa.iter().zip(&sb).all(|(x, y)| x.to_bits() == y.to_bits()), "{build:?}, {cols} columns");
            }
        }
    }

    #[test]
    fn blocks_quantise_to_the_nearest_step_ties_to_even() {
        let mut block = [0f32; BLOCK];
        block[0] = 127.0;
        block[1] = 2.5;
        block[2] = -3.5;
        block[3] = 0.49;
        let mut q = [0i8; BLOCK];
        assert_eq!(quantise_block(&block, &mut q), 1.0);
        assert_eq!(&q[..5], &[127, 2, -4, 0, 0]);
        assert_eq!(quantise_block(&[0.0; BLOCK], &mut q), 0.0);
        assert!(q.iter().all(|&v| v == 0));
    }
}
