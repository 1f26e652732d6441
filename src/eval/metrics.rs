//! Objective metrics of a song, after MusDr (Wu & Yang, "The Jazz Transformer on the Front
//! Line", ISMIR 2020), computed on the quantised grid (16 positions per 4/4 bar). Plain Rust:
//! no model, no files.
//!
//! - **H1, H4** (pitch-class histogram entropy): for every window of w consecutive bars
//!   (w = 1, 4; sliding by one bar), the histogram h of the pitch classes of the notes that
//!   start in it, normalised to sum 1; H = -sum_i h_i log2 h_i. The song's value is the mean over
//!   windows with at least one note. Range 0 (one pitch class) to log2 12 = 3.585.
//! - **GS** (grooving pattern similarity): each bar's grooving pattern g is the binary vector
//!   of its 16 positions with at least one onset; for every pair of bars (i < j),
//!   GS(i, j) = 1 - |g_i XOR g_j| / 16; the song's value is the mean over all pairs (MusDr samples
//!   at most 1,000 pairs; all are used here). Range 0 to 1; higher is steadier rhythm.
//! - **CPI** (chord progression irregularity): the song's chord sequence (the chord recogniser's
//!   changes, "no chord" left out, consecutive repeats merged), its n - 2 trigrams;
//!   CPI = unique trigrams / trigrams (1 when there are fewer than 3 chords). MusDr's code
//!   counts n - 3 trigrams; every trigram counts here. Lower means more repetitive harmony.
//! - **Longest repeat**: the longest run of consecutive bars, none of them empty, that occurs
//!   note for note (position, pitch, duration and velocity bins) at another place in the song.

use std::collections::HashSet;

use crate::music::chord::{recognise_chords, Chord};
use crate::music::grid::{Grid, GridNote};
use crate::music::song::{Song, POSITIONS_PER_BAR, TICKS_PER_BEAT};

/// The metrics of one song.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SongMetrics {
    pub bars: u32,
    pub notes: usize,
    /// NaN when no bar has a note.
    pub h1: f64,
    /// NaN when no 4-bar window has a note (songs shorter than 4 bars).
    pub h4: f64,
    /// NaN for songs under 2 bars.
    pub gs: f64,
    pub cpi: f64,
    pub longest_repeat_bars: u32,
}

impl SongMetrics {
    pub fn of(grid: &Grid) -> SongMetrics {
        SongMetrics {
            bars: grid.bars,
            notes: grid.note_count(),
            h1: pitch_class_entropy(grid, 1),
            h4: pitch_class_entropy(grid, 4),
            gs: grooving_similarity(grid),
            cpi: chord_progression_irregularity(grid),
            longest_repeat_bars: longest_repeat(grid),
        }
    }
}

/// Notes per bar, in order, for the song's bars (a bar's notes keep the grid's order).
fn bars_of(grid: &Grid) -> Vec<Vec<(u8, GridNote)>> {
    let bars = grid.bars.max(grid.slots.last().map_or(0, |s| s.bar() + 1)) as usize;
    let mut out = vec![Vec::new(); bars];
    for slot in &grid.slots {
        out[slot.bar() as usize].extend(slot.notes.iter().map(|&n| (slot.beat(), n)));
    }
    out
}

/// Shannon entropy (bits) of a histogram given as counts.
pub fn entropy(counts: &[f64]) -> f64 {
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return f64::NAN;
    }
    counts.iter().filter(|&&c| c > 0.0).map(|&c| -(c / total) * (c / total).log2()).sum()
}

/// H_w: mean pitch-class entropy over windows of `window` bars.
pub fn pitch_class_entropy(grid: &Grid, window: usize) -> f64 {
    let bars = bars_of(grid);
    let histograms: Vec<[f64; 12]> = bars
        .iter()
        .map(|notes| {
            let mut h = [0f64; 12];
            for (_, n) in notes {
                h[(n.pitch % 12) as usize] += 1.0;
            }
            h
        })
        .collect();
    let values: Vec<f64> = (0..(histograms.len() + 1).saturating_sub(window))
        .filter_map(|start| {
            let mut h = [0f64; 12];
            for bar in &histograms[start..start + window] {
                h.iter_mut().zip(bar).for_each(|(a, b)| *a += b);
            }
            let e = entropy(&h);
            (!e.is_nan()).then_some(e)
        })
        .collect();
    mean(&values)
}

/// GS: mean grooving-pattern similarity over all pairs of bars.
pub fn grooving_similarity(grid: &Grid) -> f64 {
    let patterns: Vec<u16> = bars_of(grid).iter().map(|notes| notes.iter().fold(0u16, |g, (beat, _)| g | 1 << beat)).collect();
    let mut sum = 0f64;
    let mut pairs = 0u64;
    for i in 0..patterns.len() {
        for j in i + 1..patterns.len() {
            sum += 1.0 - (patterns[i] ^ patterns[j]).count_ones() as f64 / POSITIONS_PER_BAR as f64;
            pairs += 1;
        }
    }
    if pairs == 0 {
        f64::NAN
    } else {
        sum / pairs as f64
    }
}

/// The chord sequence the recogniser hears in the song ("no chord" out, repeats merged).
pub fn chord_sequence(grid: &Grid) -> Vec<Chord> {
    let mut chords: Vec<Chord> = Vec::new();
    for change in recognise_chords(&grid.to_song().notes) {
        if change.chord != Chord::NoChord && chords.last() != Some(&change.chord) {
            chords.push(change.chord);
        }
    }
    chords
}

/// CPI of a chord sequence: unique trigrams over trigrams.
pub fn irregularity(chords: &[Chord]) -> f64 {
    if chords.len() < 3 {
        return 1.0;
    }
    let unique: HashSet<&[Chord]> = chords.windows(3).collect();
    unique.len() as f64 / (chords.len() - 2) as f64
}

/// CPI of a song.
pub fn chord_progression_irregularity(grid: &Grid) -> f64 {
    irregularity(&chord_sequence(grid))
}

/// The longest run of non-empty bars that repeats exactly elsewhere in the song.
pub fn longest_repeat(grid: &Grid) -> u32 {
    let bars = bars_of(grid);
    let n = bars.len();
    // run[j] after row i: length of the common run starting at bars i and j (j > i).
    let mut best = 0;
    let mut next_row = vec![0u32; n + 1];
    for i in (0..n).rev() {
        let mut row = vec![0u32; n + 1];
        for j in (i + 1..n).rev() {
            if !bars[i].is_empty() && bars[i] == bars[j] {
                row[j] = next_row[j + 1] + 1;
                best = best.max(row[j]);
            }
        }
        next_row = row;
    }
    best
}

/// Mean of the values that are not NaN (NaN when none are).
/// The share of a song's beats (those where the recogniser hears a chord) whose chord, as the recogniser
/// hears it in the notes, is `expected(beat)`: how well a song follows the chords it was given
/// or annotated with. `None` for a song without notes.
pub fn chord_agreement(song: &Song, expected: impl Fn(u32) -> Chord) -> Option<f64> {
    let heard = recognise_chords(&song.notes);
    let end = song.notes.iter().map(|n| n.onset + n.duration.max(1)).max()?;
    let (mut beats, mut agree) = (0usize, 0usize);
    for beat in 0..end.div_ceil(TICKS_PER_BEAT) {
        let tick = beat * TICKS_PER_BEAT;
        let heard_here = heard.iter().rev().find(|c| c.tick <= tick).map_or(Chord::NoChord, |c| c.chord);
        if heard_here == Chord::NoChord {
            continue;
        }
        beats += 1;
        agree += (heard_here == expected(beat)) as usize;
    }
    (beats > 0).then(|| agree as f64 / beats as f64)
}

pub fn mean(values: &[f64]) -> f64 {
    let kept: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if kept.is_empty() {
        f64::NAN
    } else {
        kept.iter().sum::<f64>() / kept.len() as f64
    }
}
