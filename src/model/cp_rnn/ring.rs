//! One softmax-attention layer's memory in generation: the keys and values of the last
//! `window` words in a ring (word p in slot p % window), and one word's attention over them.
//!
//! - Elements are f32 next to f32 weights (exact) and bf16 next to int8 weights: the upper half
//!   of an f32, rounded to nearest even. That halves the bytes every word reads, which is what
//!   several takes' rings together cost once they outgrow the core's cache.
//! - Keys are stored feature-major (d_model x window: head h's dimension j in row h * dh + j),
//!   so the scores of 16 slots are one vector per dimension and need no horizontal sums. Values
//!   are stored word-major (window x d_model), so each head reads its dh values per word in one
//!   run.
//! - Each score is summed over the dimensions in order and each output over the slots in
//!   order, so every instruction-set build gives the same bits.
//!
//! Plain slices: no tensors, no threads, no allocation after `Ring::new`.

use crate::model::fused::simd::multiversion;
use crate::model::fused::window::softmax_in_place;

/// A ring element, read and written as f32.
trait Element: Copy + Default {
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    #[inline(always)]
    fn from_f32(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

/// bfloat16: the sign, exponent and top 7 mantissa bits of an f32.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct Bf16(u16);

impl Element for Bf16 {
    /// Rounds to nearest, ties to even (NaN does not occur in a ring).
    #[inline(always)]
    fn from_f32(x: f32) -> Bf16 {
        let bits = x.to_bits();
        Bf16((bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits((self.0 as u32) << 16)
    }
}

/// Keys (d_model x window) and values (window x d_model) of one element type.
#[derive(Clone)]
struct Store<T> {
    keys: Vec<T>,
    values: Vec<T>,
}

/// The last `window` words' keys and values of one layer.
#[derive(Clone)]
pub struct Ring(Elements);

#[derive(Clone)]
enum Elements {
    F32(Store<f32>),
    Bf16(Store<Bf16>),
}

impl Ring {
    /// An empty ring of `window` words of `d` features, in bf16 when `bf16`.
    pub fn new(window: usize, d: usize, bf16: bool) -> Ring {
        assert!(window > 0 && d > 0);
        if bf16 {
            Ring(Elements::Bf16(Store { keys: vec![Bf16::default(); window * d], values: vec![Bf16::default(); window * d] }))
        } else {
            Ring(Elements::F32(Store { keys: vec![0.0; window * d], values: vec![0.0; window * d] }))
        }
    }

    /// Bytes the ring holds.
    pub fn bytes(&self) -> usize {
        match &self.0 {
            Elements::F32(s) => (s.keys.len() + s.values.len()) * std::mem::size_of::<f32>(),
            Elements::Bf16(s) => (s.keys.len() + s.values.len()) * std::mem::size_of::<Bf16>(),
        }
    }

    /// Stores word `position`'s key `k` and value `v` (d_model each), then attends with its
    /// queries `q` (all heads side by side, `dh` each) over the last min(position + 1, window)
    /// words: per head softmax(q . k / sqrt(dh)) over those words, times their values, into
    /// `out`. `scores` is work space of heads x window.
    #[allow(clippy::too_many_arguments)]
    pub fn push_and_attend(&mut self, position: usize, k: &[f32], v: &[f32], q: &[f32], dh: usize, scores: &mut [f32], out: &mut [f32]) {
        match &mut self.0 {
            Elements::F32(s) => {
                push(s, position, k, v);
                attend_f32(s, position, q, dh, scores, out);
            }
            Elements::Bf16(s) => {
                push(s, position, k, v);
                attend_bf16(s, position, q, dh, scores, out);
            }
        }
    }
}

/// Writes word `position` into its slot.
fn push<T: Element>(s: &mut Store<T>, position: usize, k: &[f32], v: &[f32]) {
    let d = k.len();
    let window = s.keys.len() / d;
    assert!(v.len() == d && s.values.len() == window * d);
    let slot = position % window;
    for (i, &x) in k.iter().enumerate() {
        s.keys[i * window + slot] = T::from_f32(x);
    }
    for (o, &x) in s.values[slot * d..(slot + 1) * d].iter_mut().zip(v) {
        *o = T::from_f32(x);
    }
}

multiversion! {
    fn attend_f32(s: &Store<f32>, position: usize, q: &[f32], dh: usize, scores: &mut [f32], out: &mut [f32]) {
        attend(s, position, q, dh, scores, out)
    }
}

multiversion! {
    fn attend_bf16(s: &Store<Bf16>, position: usize, q: &[f32], dh: usize, scores: &mut [f32], out: &mut [f32]) {
        attend(s, position, q, dh, scores, out)
    }
}

/// The attention of `Ring::push_and_attend`, inlined into each instruction-set build.
#[inline(always)]
fn attend<T: Element>(s: &Store<T>, position: usize, q: &[f32], dh: usize, scores: &mut [f32], out: &mut [f32]) {
    let d = q.len();
    let window = s.keys.len() / d;
    let heads = d / dh;
    let words = (position + 1).min(window);
    assert!(d.is_multiple_of(dh) && out.len() == d && scores.len() >= heads * window && s.values.len() == window * d);
    let scale = 1.0 / (dh as f32).sqrt();
    for head in 0..heads {
        let row = &mut scores[head * window..head * window + words];
        row.fill(0.0);
        // Four dimensions per pass over the row, added one after another.
        let dims = &q[head * dh..(head + 1) * dh];
        let keys = |j: usize| &s.keys[(head * dh + j) * window..(head * dh + j) * window + words];
        let mut j = 0;
        while j + 4 <= dh {
            let (q0, q1, q2, q3) = (dims[j], dims[j + 1], dims[j + 2], dims[j + 3]);
            let (k0, k1, k2, k3) = (keys(j), keys(j + 1), keys(j + 2), keys(j + 3));
            for (w, o) in row.iter_mut().enumerate() {
                *o = *o + q0 * k0[w].to_f32() + q1 * k1[w].to_f32() + q2 * k2[w].to_f32() + q3 * k3[w].to_f32();
            }
            j += 4;
        }
        for (j, &qj) in dims.iter().enumerate().skip(j) {
            for (o, k) in row.iter_mut().zip(keys(j)) {
                *o += qj * k.to_f32();
            }
        }
        softmax_in_place(row, scale);
        let out = &mut out[head * dh..(head + 1) * dh];
        out.fill(0.0);
        for (w, &p) in row.iter().enumerate() {
            let v = &s.values[w * d + head * dh..w * d + (head + 1) * dh];
            out.iter_mut().zip(v).for_each(|(o, v)| *o += p * v.to_f32());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even_and_reads_back_exactly() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        assert_eq!(Bf16::from_f32(1.0 + 2f32.powi(-8)).to_f32(), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties go up to even.
        assert_eq!(Bf16::from_f32(1.0 + 3.0 * 2f32.powi(-8)).to_f32(), 1.0 + 2f32.powi(-6));
        // Just above halfway rounds up.
        assert_eq!(Bf16::from_f32(1.0 + 2f32.powi(-8) + 2f32.powi(-20)).to_f32(), 1.0 + 2f32.powi(-7));
        for x in [0.0f32, -2.5, 3.0e-3, 1.0e30, -7.0e-30] {
            let r = Bf16::from_f32(x).to_f32();
            assert!((r - x).abs() <= x.abs() * 2f32.powi(-8), "{x} -> {r}");
            assert_eq!(Bf16::from_f32(r).to_f32(), r, "a bf16 value is stored unchanged");
        }
    }

    /// The attention straight from the definition, in f64, over the words a ring should hold.
    fn reference(keys: &[Vec<f32>], values: &[Vec<f32>], q: &[f32], dh: usize) -> Vec<f32> {
        let mut out = vec![0.0; q.len()];
        for head in 0..q.len() / dh {
            let span = head * dh..(head + 1) * dh;
            let logits: Vec<f64> = keys.iter().map(|k| q[span.clone()].iter().zip(&k[span.clone()]).map(|(a, b)| (a * b) as f64).sum::<f64>() / (dh as f64).sqrt()).collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for (w, v) in weights.iter().zip(values) {
                for (o, x) in out[span.clone()].iter_mut().zip(&v[span.clone()]) {
                    *o += (w / total * *x as f64) as f32;
                }
            }
        }
        out
    }

    /// Feeds 50 words to a ring of 16 and checks each word's attention against `reference`
    /// over the last 16 words (so the ring wraps three times), within `tolerance`.
    fn matches_reference(bf16: bool, tolerance: f32) {
        let (d, dh, window) = (24, 6, 16);
        let mut ring = Ring::new(window, d, bf16);
        let mut scores = vec![0.0; d / dh * window];
        let value = |seed: usize| ((seed * 7919 % 1013) as f32 / 1013.0 - 0.5) * 4.0;
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for position in 0..50 {
            let k: Vec<f32> = (0..d).map(|i| value(position * 31 + i)).collect();
            let v: Vec<f32> = (0..d).map(|i| value(position * 57 + i + 5)).collect();
            let q: Vec<f32> = (0..d).map(|i| value(position * 13 + i + 11)).collect();
            let mut out = vec![0.0; d];
            ring.push_and_attend(position, &k, &v, &q, dh, &mut scores, &mut out);
            keys.push(k);
            values.push(v);
            let from = keys.len().saturating_sub(window);
            let want = reference(&keys[from..], &values[from..], &q, dh);
            for (a, b) in out.iter().zip(&want) {
                assert!((a - b).abs() <= tolerance, "word {position}: {a} against {b}");
            }
        }
    }

    #[test]
    fn an_f32_ring_attends_over_exactly_the_last_window_words() {
        matches_reference(false, 1e-5);
    }

    #[test]
    fn a_bf16_ring_stays_within_bf16_rounding_of_the_f32_attention() {
        // Values up to 2 in size, each stored to 2^-8 of itself; keys move the weights a little.
        matches_reference(true, 0.05);
    }

}
