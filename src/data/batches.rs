//! Training batches: songs cut into windows (songs longer than the window are split, each window
//! keeping its true positions in the song), a reproducible order per epoch, each CP training
//! song transposed per epoch (augmentation), and padding to a multiple of the attention chunk
//! with a mask.

use candle_core::{DType, Device, Result, Tensor};

use crate::tokens::cp::Word;
use crate::data::dataset::{Dataset, Representation, Split};
use crate::model::cp_transformer::CHUNK;
use crate::model::cpu::positional_encoding;
use crate::model::init::Rng;

/// A batch for teacher forcing: words, next words, which steps count, and true positions.
pub struct Batch {
    /// (batch, time, 7) u32 input words.
    pub inputs: Tensor,
    /// (batch, time, 7) u32 target words (the next word of each input).
    pub targets: Tensor,
    /// (batch, time) f32: 1 for real steps, 0 for padding.
    pub mask: Tensor,
    /// (batch, time, d_model) positional encodings of the inputs' positions in their songs.
    pub positions: Tensor,
}

/// A training example: `len` input words from `start` of one song, and the `len` next words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub song: usize,
    pub start: usize,
    pub len: usize,
}

/// All windows of a split, in song order.
pub fn windows(data: &Dataset, split: Split, window: usize) -> Vec<Window> {
    let mut out = Vec::new();
    for (i, song) in data.songs.iter().enumerate().filter(|(_, s)| s.split == split) {
        out.extend(song_windows(song.len.saturating_sub(1), window).map(|(start, len)| Window { song: i, start, len }));
    }
    out
}

/// `(start, len)` of the windows over a song of `steps` prediction steps: back to back from the
/// start, except that the last one of a song longer than a window ends at the song's end with a
/// full window of context (overlapping the one before). The end of a song, and its EOS, is then
/// learnt with the long context that generation has when it gets there, not after a cut.
pub fn song_windows(steps: usize, window: usize) -> impl Iterator<Item = (usize, usize)> {
    let count = steps.div_ceil(window.max(1));
    (0..count).map(move |k| {
        let start = if k + 1 == count { steps.saturating_sub(window) } else { k * window };
        (start, window.min(steps - start))
    })
}

/// The batches of one epoch: windows shuffled from (seed, epoch); within groups of 16 batches,
/// windows of similar length go together (less padding); then the batch order is shuffled.
pub fn epoch_batches(windows: &[Window], batch_size: usize, seed: u64, epoch: u64) -> Vec<Vec<Window>> {
    let mut rng = Rng::new(seed ^ epoch.wrapping_mul(0xA24BAED4963EE407));
    let order = rng.permutation(windows.len());
    let mut batches = Vec::new();
    for group in order.chunks(batch_size * 16) {
        let mut group: Vec<Window> = group.iter().map(|&i| windows[i]).collect();
        group.sort_by_key(|w| std::cmp::Reverse(w.len));
        batches.extend(group.chunks(batch_size).map(|c| c.to_vec()));
    }
    let shuffle = rng.permutation(batches.len());
    shuffle.into_iter().map(|i| batches[i].clone()).collect()
}

/// Lowest and highest transposition of the augmentation, in semitones.
pub const TRANSPOSE_RANGE: (i32, i32) = (-5, 6);

/// The transposition of a song in an epoch: uniform over `TRANSPOSE_RANGE`, a pure function of
/// (seed, epoch, song), so a resumed run sees the same data.
pub fn transposition(seed: u64, epoch: u64, song: usize) -> i32 {
    let mut rng = Rng::new(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (song as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
    let (lo, hi) = TRANSPOSE_RANGE;
    lo + (rng.next_u64() % (hi - lo + 1) as u64) as i32
}

/// Builds the tensors of a batch, each window's song moved by its entry of `semitones` (CP data
/// only; empty for none); time is padded up to a multiple of `CHUNK`.
pub fn make_batch(data: &Dataset, windows: &[Window], semitones: &[i32], d_model: usize, device: &Device) -> Result<Batch> {
    if !semitones.is_empty() && (semitones.len() != windows.len() || data.representation != Representation::Cp) {
        candle_core::bail!("transposition needs CP data and one shift per window");
    }
    let width = data.width();
    let longest = windows.iter().map(|w| w.len).max().unwrap_or(1);
    let t = longest.div_ceil(CHUNK) * CHUNK;
    let b = windows.len();
    let mut inputs = vec![0u32; b * t * width];
    let mut targets = vec![0u32; b * t * width];
    let mut mask = vec![0f32; b * t];
    let mut positions = vec![0u32; b * t];
    for (row, w) in windows.iter().enumerate() {
        let song = data.song_tokens(&data.songs[w.song]);
        for i in 0..t {
            positions[row * t + i] = (w.start + i) as u32;
        }
        let shift = semitones.get(row).copied().unwrap_or(0);
        // Step `step` of the song into `dst`, moved by `shift` (only CP words are moved).
        let copy = |dst: &mut [u32], step: usize| {
            let src = &song[step * width..(step + 1) * width];
            if shift == 0 {
                dst.iter_mut().zip(src).for_each(|(d, &s)| *d = s as u32);
            } else {
                let word = Word(src.try_into().expect("CP words are 7 ids wide")).transposed(shift);
                dst.iter_mut().zip(word.0).for_each(|(d, s)| *d = s as u32);
            }
        };
        for i in 0..w.len {
            let at = (row * t + i) * width;
            copy(&mut inputs[at..at + width], w.start + i);
            copy(&mut targets[at..at + width], w.start + i + 1);
            mask[row * t + i] = 1.0;
        }
    }
    Ok(Batch {
        inputs: Tensor::from_vec(inputs, (b, t, width), device)?,
        targets: Tensor::from_vec(targets, (b, t, width), device)?,
        mask: Tensor::from_vec(mask, (b, t), device)?.to_dtype(DType::F32)?,
        positions: Tensor::from_vec(positional_encoding(&positions, d_model), (b, t, d_model), device)?,
    })
}

#[cfg(test)]
mod tests {
    use super::song_windows;

    #[test]
    fn windows_cover_every_step_and_the_last_one_ends_the_song_with_full_context() {
        for (steps, window) in [(0, 8), (5, 8), (8, 8), (9, 8), (17, 8), (2600, 2048), (5639, 2048)] {
            let all: Vec<(usize, usize)> = song_windows(steps, window).collect();
            let mut covered = vec![false; steps];
            for &(start, len) in &all {
                assert!(len <= window && start + len <= steps);
                covered[start..start + len].iter_mut().for_each(|c| *c = true);
            }
            assert!(covered.iter().all(|&c| c), "steps {steps}: {all:?}");
            if let Some(&(start, len)) = all.last() {
                assert_eq!(start + len, steps, "the last window ends the song");
                assert_eq!(len, window.min(steps), "with as much context as a window holds");
            }
            assert_eq!(all.len(), steps.div_ceil(window), "no more windows than needed");
        }
    }
}
