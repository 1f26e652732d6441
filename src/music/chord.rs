//! Chords: the 12 roots x 11 qualities of the CP vocabulary (plus "no chord"), their names, and
//! a rule-based recogniser that labels every beat of a song from its sounding pitch classes.
//!
//! The recogniser is how user MIDI (which has no chord labels) and POP909 get chord tokens.
//! Pure functions over notes; no MIDI or model types.

use crate::music::song::{ChordChange, Note, TICKS_PER_BEAT};

/// Root names, pitch class 0 (C) to 11 (B).
pub const ROOT_NAMES: [&str; 12] = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];

/// The 11 chord qualities of the CP vocabulary, in vocabulary order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Quality {
    Major,
    Minor,
    Diminished,
    Augmented,
    Dominant7,
    Major7,
    Minor7,
    Diminished7,
    HalfDiminished7,
    Sus2,
    Sus4,
}

impl Quality {
    pub const ALL: [Quality; 11] = [
        Quality::Major,
        Quality::Minor,
        Quality::Diminished,
        Quality::Augmented,
        Quality::Dominant7,
        Quality::Major7,
        Quality::Minor7,
        Quality::Diminished7,
        Quality::HalfDiminished7,
        Quality::Sus2,
        Quality::Sus4,
    ];

    /// Short name as in the paper's vocabulary: M, m, o, +, 7, M7, m7, o7, /o7, sus2, sus4.
    pub fn name(self) -> &'static str {
        match self {
            Quality::Major => "M",
            Quality::Minor => "m",
            Quality::Diminished => "o",
            Quality::Augmented => "+",
            Quality::Dominant7 => "7",
            Quality::Major7 => "M7",
            Quality::Minor7 => "m7",
            Quality::Diminished7 => "o7",
            Quality::HalfDiminished7 => "/o7",
            Quality::Sus2 => "sus2",
            Quality::Sus4 => "sus4",
        }
    }

    /// Semitone intervals above the root.
    pub fn intervals(self) -> &'static [u8] {
        match self {
            Quality::Major => &[0, 4, 7],
            Quality::Minor => &[0, 3, 7],
            Quality::Diminished => &[0, 3, 6],
            Quality::Augmented => &[0, 4, 8],
            Quality::Dominant7 => &[0, 4, 7, 10],
            Quality::Major7 => &[0, 4, 7, 11],
            Quality::Minor7 => &[0, 3, 7, 10],
            Quality::Diminished7 => &[0, 3, 6, 9],
            Quality::HalfDiminished7 => &[0, 3, 6, 10],
            Quality::Sus2 => &[0, 2, 7],
            Quality::Sus4 => &[0, 5, 7],
        }
    }

    fn index(self) -> usize {
        Quality::ALL.iter().position(|&q| q == self).expect("every quality is in ALL")
    }
}

/// A chord label: a root and quality, or no chord (`N_N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Chord {
    NoChord,
    Chord { root: u8, quality: Quality },
}

/// A pitch-class name at the start of `text` (C..B, then # or b): the pitch class and the rest.
pub fn parse_root(text: &str) -> Option<(u8, &str)> {
    let mut chars = text.chars();
    let natural: i32 = match chars.next()?.to_ascii_uppercase() {
        'C' => 0,
        'D' => 2,
        'E' => 4,
        'F' => 5,
        'G' => 7,
        'A' => 9,
        'B' => 11,
        _ => return None,
    };
    let rest = chars.as_str();
    let (shift, rest) = match (rest.strip_prefix('#'), rest.strip_prefix('b')) {
        (Some(r), _) => (1, r),
        (None, Some(r)) => (-1, r),
        _ => (0, rest),
    };
    Some(((natural + shift).rem_euclid(12) as u8, rest))
}

impl std::str::FromStr for Chord {
    type Err = crate::music::TextError;

    /// A chord as a producer writes it: a root (C, C#, Db, ..., B) and a quality: none or M/maj,
    /// m/min, o/dim, +/aug, 7, M7/maj7, m7/min7, o7/dim7, /o7/m7b5, sus2, sus4; the vocabulary's
    /// spelling (`F#_m7`) too; N or N_N for no chord.
    fn from_str(text: &str) -> Result<Chord, crate::music::TextError> {
        let t = text.trim();
        if t == "N" || t == "N_N" {
            return Ok(Chord::NoChord);
        }
        let (root, rest) = parse_root(t).ok_or_else(|| crate::music::TextError(format!("{t:?}: a chord starts with its root, A to G")))?;
        let quality = match rest.trim_start_matches('_') {
            "" | "M" | "maj" => Quality::Major,
            "m" | "min" => Quality::Minor,
            "o" | "dim" => Quality::Diminished,
            "+" | "aug" => Quality::Augmented,
            "7" => Quality::Dominant7,
            "M7" | "maj7" => Quality::Major7,
            "m7" | "min7" => Quality::Minor7,
            "o7" | "dim7" => Quality::Diminished7,
            "/o7" | "m7b5" => Quality::HalfDiminished7,
            "sus2" => Quality::Sus2,
            "sus4" => Quality::Sus4,
            q => return Err(crate::music::TextError(format!("{t:?}: unknown chord quality {q:?} (M, m, o, +, 7, M7, m7, o7, m7b5, sus2 or sus4)"))),
        };
        Ok(Chord::Chord { root, quality })
    }
}

/// Number of chord labels (12 x 11 + no chord).
pub const CHORD_LABELS: usize = 12 * 11 + 1;

impl Chord {
    /// Dense index 0..133: root * 11 + quality, then 132 for no chord.
    pub fn index(self) -> usize {
        match self {
            Chord::Chord { root, quality } => root as usize * 11 + quality.index(),
            Chord::NoChord => 132,
        }
    }

    /// Inverse of [`Chord::index`]; `None` outside 0..133.
    pub fn from_index(i: usize) -> Option<Chord> {
        match i {
            0..=131 => Some(Chord::Chord { root: (i / 11) as u8, quality: Quality::ALL[i % 11] }),
            132 => Some(Chord::NoChord),
            _ => None,
        }
    }

    /// Name such as `C_M`, `F#_m7` or `N_N` (the paper's spelling).
    pub fn name(self) -> String {
        match self {
            Chord::Chord { root, quality } => format!("{}_{}", ROOT_NAMES[root as usize], quality.name()),
            Chord::NoChord => "N_N".to_string(),
        }
    }

    /// Name as a producer writes it and `--chords` reads it: `C`, `Am`, `F#m7`, `N`.
    pub fn label(self) -> String {
        match self {
            Chord::Chord { root, quality: Quality::Major } => ROOT_NAMES[root as usize].to_string(),
            Chord::Chord { root, quality } => format!("{}{}", ROOT_NAMES[root as usize], quality.name()),
            Chord::NoChord => "N".to_string(),
        }
    }

    /// Pitch classes of the chord as a 12-bit mask (empty for no chord).
    pub fn pitch_class_mask(self) -> u16 {
        match self {
            Chord::Chord { root, quality } => quality
                .intervals()
                .iter()
                .fold(0u16, |m, &iv| m | 1 << ((root + iv) % 12)),
            Chord::NoChord => 0,
        }
    }
}

/// Scores how well `chord` explains a beat's pitch-class weights (normalised to sum 1) with the
/// given bass pitch class: weight inside the chord minus weight outside, minus 0.15 per chord tone
/// that does not sound, plus 0.1 when the bass is the root.
fn score(chord: Chord, weights: &[f32; 12], bass: u8) -> f32 {
    let Chord::Chord { root, quality } = chord else { return f32::NEG_INFINITY };
    let mask = chord.pitch_class_mask();
    let mut inside = 0.0;
    let mut outside = 0.0;
    for (pc, &w) in weights.iter().enumerate() {
        if mask & (1 << pc) != 0 {
            inside += w;
        } else {
            outside += w;
        }
    }
    let missing = quality
        .intervals()
        .iter()
        .filter(|&&iv| weights[((root + iv) % 12) as usize] <= 0.0)
        .count() as f32;
    inside - outside - 0.15 * missing + if bass == root { 0.1 } else { 0.0 }
}

/// The best chord for one set of pitch-class weights and bass; `NoChord` when nothing sounds.
pub fn best_chord(weights: &[f32; 12], bass: u8) -> (Chord, f32) {
    let total: f32 = weights.iter().sum();
    if total <= 0.0 {
        return (Chord::NoChord, 0.0);
    }
    let normalised = weights.map(|w| w / total);
    let mut best = (Chord::NoChord, f32::NEG_INFINITY);
    for root in 0..12u8 {
        for quality in Quality::ALL {
            let chord = Chord::Chord { root, quality };
            let s = score(chord, &normalised, bass);
            if s > best.1 {
                best = (chord, s);
            }
        }
    }
    best
}

/// Labels every beat from tick 0 to the end of the last note and returns the chord changes
/// (consecutive duplicates removed). A beat's pitch classes are weighted by how long each note
/// sounds inside it; the lowest sounding note is the bass. A beat whose notes still fit the
/// previous chord nearly as well as the best candidate keeps the previous chord, so a lone
/// melody note does not flip the harmony.
pub fn recognise_chords(notes: &[Note]) -> Vec<ChordChange> {
    let end = notes.iter().map(|n| n.onset + n.duration.max(1)).max().unwrap_or(0);
    let beats = end.div_ceil(TICKS_PER_BEAT);
    // Bucket notes by the beats they touch so each beat looks only at its own notes.
    let mut per_beat: Vec<Vec<&Note>> = vec![Vec::new(); beats as usize];
    for n in notes {
        let first = n.onset / TICKS_PER_BEAT;
        let last = (n.onset + n.duration.max(1) - 1) / TICKS_PER_BEAT;
        for b in first..=last.min(beats.saturating_sub(1)) {
            per_beat[b as usize].push(n);
        }
    }
    let mut changes: Vec<ChordChange> = Vec::new();
    let mut current: Option<Chord> = None;
    // Beats that sound the same (a held note, silence) score the same: score them once.
    let mut last: Option<([f32; 12], u8, (Chord, f32))> = None;
    for (b, beat_notes) in per_beat.iter().enumerate() {
        let start = b as u32 * TICKS_PER_BEAT;
        let stop = start + TICKS_PER_BEAT;
        let mut weights = [0f32; 12];
        let mut bass = u8::MAX;
        for n in beat_notes {
            let overlap = (n.onset + n.duration.max(1)).min(stop) - n.onset.max(start);
            weights[(n.pitch % 12) as usize] += overlap as f32;
            bass = bass.min(n.pitch);
        }
        let bass_pc = if bass == u8::MAX { 0 } else { bass % 12 };
        let (mut chord, best_score) = match last {
            Some((w, b, best)) if w == weights && b == bass_pc => best,
            _ => best_chord(&weights, bass_pc),
        };
        last = Some((weights, bass_pc, (chord, best_score)));
        if let Some(prev) = current {
            let total: f32 = weights.iter().sum();
            if total > 0.0 && prev != Chord::NoChord {
                let normalised = weights.map(|w| w / total);
                let fits = weights
                    .iter()
                    .enumerate()
                    .all(|(pc, &w)| w <= 0.0 || prev.pitch_class_mask() & (1 << pc) != 0);
                if fits || score(prev, &normalised, bass_pc) >= best_score - 0.1 {
                    chord = prev;
                }
            }
        }
        if current != Some(chord) {
            changes.push(ChordChange { tick: start, chord });
            current = Some(chord);
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chord_label_reads_back_as_the_same_chord() {
        for i in 0..CHORD_LABELS {
            let chord = Chord::from_index(i).unwrap();
            assert_eq!(chord.label().parse::<Chord>(), Ok(chord), "{}", chord.label());
        }
    }

    fn chord_of(pitches: &[u8]) -> Chord {
        let notes: Vec<Note> = pitches
            .iter()
            .map(|&pitch| Note { onset: 0, duration: 480, pitch, velocity: 80 })
            .collect();
        recognise_chords(&notes)[0].chord
    }

    fn named(root: &str, q: &str) -> String {
        format!("{root}_{q}")
    }

    #[test]
    fn known_chords_are_recognised() {
        assert_eq!(chord_of(&[48, 52, 55]).name(), named("C", "M"));
        assert_eq!(chord_of(&[57, 60, 64]).name(), named("A", "m"));
        assert_eq!(chord_of(&[43, 47, 50, 53]).name(), named("G", "7"));
        assert_eq!(chord_of(&[48, 52, 55, 59]).name(), named("C", "M7"));
        assert_eq!(chord_of(&[50, 53, 57, 60]).name(), named("D", "m7"));
        assert_eq!(chord_of(&[47, 50, 53]).name(), named("B", "o"));
        assert_eq!(chord_of(&[47, 50, 53, 57]).name(), named("B", "/o7"));
        assert_eq!(chord_of(&[47, 50, 53, 56]).name(), named("B", "o7"));
        assert_eq!(chord_of(&[48, 52, 56]).name(), named("C", "+"));
        assert_eq!(chord_of(&[48, 50, 55]).name(), named("C", "sus2"));
        assert_eq!(chord_of(&[48, 53, 55]).name(), named("C", "sus4"));
        // Inversion: E in the bass still reads as C major.
        assert_eq!(chord_of(&[52, 55, 60]).name(), named("C", "M"));
    }

    #[test]
    fn silence_is_no_chord_and_indices_round_trip() {
        assert!(recognise_chords(&[]).is_empty());
        for i in 0..CHORD_LABELS {
            assert_eq!(Chord::from_index(i).unwrap().index(), i);
        }
        assert_eq!(Chord::from_index(CHORD_LABELS), None);
    }

    #[test]
    fn a_melody_note_inside_the_chord_keeps_it_and_changes_are_deduplicated() {
        let mut notes = vec![
            Note { onset: 0, duration: 480, pitch: 48, velocity: 80 },
            Note { onset: 0, duration: 480, pitch: 52, velocity: 80 },
            Note { onset: 0, duration: 480, pitch: 55, velocity: 80 },
            Note { onset: 480, duration: 480, pitch: 64, velocity: 80 },
        ];
        notes.push(Note { onset: 960, duration: 480, pitch: 45, velocity: 80 });
        notes.push(Note { onset: 960, duration: 480, pitch: 48, velocity: 80 });
        notes.push(Note { onset: 960, duration: 480, pitch: 52, velocity: 80 });
        let changes = recognise_chords(&notes);
        let names: Vec<(u32, String)> = changes.iter().map(|c| (c.tick, c.chord.name())).collect();
        assert_eq!(names, vec![(0, "C_M".to_string()), (960, "A_m".to_string())]);
    }
}
