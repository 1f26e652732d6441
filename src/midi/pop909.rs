//! POP909 loader: one song folder (NNN/NNN.mid + beat_midi.txt) becomes a 4/4 `Song`.
//!
//! The time-signature events in POP909's files are unreliable, so bars come from the downbeat
//! flags in beat_midi.txt and the meter from index.csv (`four_four_songs`). Beat k of the file is
//! placed at its bar and slot: a downbeat starts a new bar; a bar that runs past four beats
//! continues in a new bar; a bar with fewer beats is padded with rest. Beats before the first
//! downbeat form a pickup bar. Note times are mapped through the beat table (seconds to
//! fractional beats), so tempo drift in the file does not move notes off the grid.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::midi::import::{ImportError, RawMidi};
use crate::music::chord::Chord;
use crate::music::song::{ChordChange, Song, BEATS_PER_BAR, TICKS_PER_BAR, TICKS_PER_BEAT};

/// Song ids refused, each with its meter as `index.csv` gives it.
pub type Refused = Vec<(String, String)>;

/// Song ids of `index.csv` whose meter is 4/4-compatible (2 beats per measure of 2 quavers, as
/// the file spells 4/4), and the ids refused with their meter.
pub fn four_four_songs(root: &Path) -> Result<(BTreeSet<String>, Refused), ImportError> {
    let path = root.join("index.csv");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ImportError::Annotation(format!("{}: {e}", path.display())))?;
    let mut kept = BTreeSet::new();
    let mut refused = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() < 6 {
            continue;
        }
        let n = fields.len();
        let (id, beats, quavers) = (fields[0].trim(), fields[n - 2].trim(), fields[n - 1].trim());
        if (beats, quavers) == ("2", "2") {
            kept.insert(id.to_string());
        } else {
            refused.push((id.to_string(), format!("not in 4/4: index.csv meter {beats} beats x {quavers} quavers")));
        }
    }
    Ok((kept, refused))
}

/// The song folder of a POP909 id.
pub fn song_dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// One beat of beat_midi.txt: time in seconds and whether it is a downbeat.
#[derive(Debug, Clone, Copy)]
struct Beat {
    seconds: f64,
    downbeat: bool,
}

fn read_beats(path: &Path) -> Result<Vec<Beat>, ImportError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ImportError::Annotation(format!("{}: {e}", path.display())))?;
    let mut beats = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let parse = |s: Option<&&str>| s.and_then(|s| s.parse::<f64>().ok());
        match (parse(f.first()), parse(f.get(2))) {
            (Some(seconds), Some(flag)) if seconds.is_finite() => beats.push(Beat { seconds, downbeat: flag >= 0.5 }),
            _ => {
                return Err(ImportError::Annotation(format!("{}: line {}: expected 'seconds flag flag'", path.display(), i + 1)))
            }
        }
    }
    if beats.len() < 2 || beats.windows(2).any(|w| w[1].seconds <= w[0].seconds) {
        return Err(ImportError::Annotation(format!("{}: needs at least two increasing beat times", path.display())));
    }
    Ok(beats)
}

/// Song tick of each beat: bars from the downbeat flags, as described in the module docs.
fn beat_ticks(beats: &[Beat]) -> Vec<u32> {
    let first_downbeat = beats.iter().position(|b| b.downbeat).unwrap_or(0);
    // The pickup bar is bar 0; the first downbeat opens bar 1.
    let pickup = first_downbeat.min(BEATS_PER_BAR as usize);
    let mut ticks = Vec::with_capacity(beats.len());
    for k in 0..first_downbeat {
        let slot = (BEATS_PER_BAR as usize - pickup + k).saturating_sub(first_downbeat - pickup);
        ticks.push(slot as u32 * TICKS_PER_BEAT);
    }
    let (mut bar, mut slot) = (1u32, 0u32);
    for (k, beat) in beats.iter().enumerate().skip(first_downbeat) {
        if k > first_downbeat {
            slot += 1;
            if beat.downbeat || slot == BEATS_PER_BAR {
                bar += 1;
                slot = 0;
            }
        }
        ticks.push(bar * TICKS_PER_BAR + slot * TICKS_PER_BEAT);
    }
    ticks
}

/// A song tick from seconds through the beat table: fractional beats are interpolated inside
/// the table and extrapolated beyond its ends (every beat spans 480 ticks, also the last beat
/// of a padded short bar).
fn song_tick_at(seconds: f64, beats: &[Beat], ticks: &[u32]) -> u32 {
    let last = beats.len() - 1;
    let k = beats.partition_point(|b| b.seconds <= seconds).clamp(1, last);
    let (a, b) = (&beats[k - 1], &beats[k]);
    let fraction = (seconds - a.seconds) / (b.seconds - a.seconds);
    (ticks[k - 1] as f64 + fraction * TICKS_PER_BEAT as f64).round().max(0.0) as u32
}

/// Loads one POP909 song folder (the caller checks the meter with `four_four_songs`).
pub fn load_song(dir: &Path) -> Result<Song, ImportError> {
    let id = dir.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let midi = std::fs::read(dir.join(format!("{id}.mid")))?;
    let raw = RawMidi::parse(&midi)?;
    let beats = read_beats(&dir.join("beat_midi.txt"))?;
    let ticks = beat_ticks(&beats);
    Ok(raw.to_song(|tick: u64| song_tick_at(raw.seconds_at(tick), &beats, &ticks)))
}

/// A chord label of POP909's annotations (`B:maj`, `C#:min7/b7`, `N`) as the nearest chord of
/// the vocabulary (inversions and added sixths dropped); `None` for labels it cannot read.
fn annotated_chord(label: &str) -> Option<Chord> {
    if label == "N" {
        return Some(Chord::NoChord);
    }
    let (root, kind) = label.split_once(':')?;
    let kind = kind.split('/').next()?;
    let quality = match kind {
        "maj" | "maj6" => "M",
        "min" | "min6" | "minmaj7" => "m",
        "dim" => "o",
        "aug" => "+",
        "7" => "7",
        "maj7" => "M7",
        "min7" => "m7",
        "dim7" => "o7",
        "hdim7" => "m7b5",
        "sus2" => "sus2",
        "sus4" | "sus4(b7)" => "sus4",
        _ => return None,
    };
    format!("{root}{quality}").parse().ok()
}

/// The chords annotated in a song folder's `chord_midi.txt` (start and end in seconds, then a
/// label), on the song's ticks as `load_song` places its notes; unreadable labels are skipped.
pub fn annotated_chords(dir: &Path) -> Result<Vec<ChordChange>, ImportError> {
    let beats = read_beats(&dir.join("beat_midi.txt"))?;
    let ticks = beat_ticks(&beats);
    let path = dir.join("chord_midi.txt");
    let text = std::fs::read_to_string(&path)?;
    let mut changes: Vec<ChordChange> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(start), Some(label)) = (fields.first().and_then(|s| s.parse::<f64>().ok()), fields.get(2)) else { continue };
        if let Some(chord) = annotated_chord(label) {
            if changes.last().is_none_or(|c| c.chord != chord) {
                changes.push(ChordChange { tick: song_tick_at(start, &beats, &ticks), chord });
            }
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beats(flags: &[bool]) -> Vec<Beat> {
        flags.iter().enumerate().map(|(i, &downbeat)| Beat { seconds: i as f64 * 0.5, downbeat }).collect()
    }

    #[test]
    fn bars_follow_downbeats_with_pickup_padding_and_splitting() {
        // Two pickup beats, a 4-beat bar, a 2-beat bar (padded), a 6-beat bar (split 4 + 2).
        let flags = [false, false, true, false, false, false, true, false, true, false, false, false, false, false, true];
        let t: Vec<u32> = beat_ticks(&beats(&flags)).iter().map(|t| t / TICKS_PER_BEAT).collect();
        assert_eq!(t, vec![2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17, 20]);
    }
}
