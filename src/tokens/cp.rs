//! Compound-word (CP) tokens: a song as a sequence of words, each grouping seven token families
//! (tempo, chord, bar-beat, type, pitch, duration, velocity), as in Hsiao et al. (AAAI 2021).
//!
//! Id layout per family (index 0 is always "ignore", except in `type`):
//! - tempo (56): 0 ignore, 1 CONTI, 2.. the 54 tempo values in increasing order.
//! - chord (135): 0 ignore, 1 CONTI, 2 + root * 11 + quality (roots C..B, qualities M, m, o, +,
//!   7, M7, m7, o7, /o7, sus2, sus4), 134 N_N.
//! - bar-beat (18): 0 ignore, 1 Bar, 2 + k for Beat_k (k = 0..15).
//! - type (3): 0 EOS, 1 Metrical, 2 Note.
//! - pitch (87): 0 ignore, 1 + (pitch - 22) for pitches 22..=107.
//! - duration (18): 0 ignore, 1 + bin for 0, 120, ..., 1920 ticks.
//! - velocity (25): 0 ignore, 1 + bin for 40, 42, ..., 86.
//!
//! Word order per bar: a Bar word; then, per position with a tempo or chord change or with note
//! onsets, one Metrical word (tempo/chord value or CONTI, Beat_k) followed by one Note word per
//! onset in descending pitch. After the last bar: a closing Bar word, then the EOS word.

use crate::music::chord::{Chord, CHORD_LABELS};
use crate::music::grid::{fold_pitch, Grid, GridBuilder, GridNote, DURATION_BINS, PITCHES, PITCH_MIN, TEMPO_VALUES, VELOCITY_BINS};
use crate::music::song::POSITIONS_PER_BAR;

/// The seven token families, in word order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Tempo = 0,
    Chord = 1,
    BarBeat = 2,
    Type = 3,
    Pitch = 4,
    Duration = 5,
    Velocity = 6,
}

/// Number of families in a word.
pub const FAMILIES: usize = 7;
/// Family sizes, in family order (342 in all).
pub const FAMILY_SIZES: [usize; FAMILIES] = [
    2 + TEMPO_VALUES.len(),
    2 + CHORD_LABELS,
    2 + POSITIONS_PER_BAR as usize,
    3,
    1 + PITCHES,
    1 + DURATION_BINS,
    1 + VELOCITY_BINS,
];
/// Family names, in family order.
pub const FAMILY_NAMES: [&str; FAMILIES] = ["tempo", "chord", "bar-beat", "type", "pitch", "duration", "velocity"];

pub const IGNORE: u16 = 0;
pub const CONTI: u16 = 1;
pub const BAR: u16 = 1;
pub const TYPE_EOS: u16 = 0;
pub const TYPE_METRICAL: u16 = 1;
pub const TYPE_NOTE: u16 = 2;

impl Family {
    pub const ALL: [Family; FAMILIES] = [
        Family::Tempo,
        Family::Chord,
        Family::BarBeat,
        Family::Type,
        Family::Pitch,
        Family::Duration,
        Family::Velocity,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn size(self) -> usize {
        FAMILY_SIZES[self as usize]
    }

    pub fn name(self) -> &'static str {
        FAMILY_NAMES[self as usize]
    }
}

/// One compound word: a token id per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Word(pub [u16; FAMILIES]);

impl Word {
    /// The end-of-song word: every family ignored, type EOS.
    pub const EOS: Word = Word([IGNORE, IGNORE, IGNORE, TYPE_EOS, IGNORE, IGNORE, IGNORE]);
    /// The word that opens a bar.
    pub const BAR: Word = Word([IGNORE, IGNORE, BAR, TYPE_METRICAL, IGNORE, IGNORE, IGNORE]);

    pub fn get(&self, family: Family) -> u16 {
        self.0[family as usize]
    }

    /// Whether this word opens a bar (a Metrical word whose bar-beat is Bar).
    pub fn is_bar(&self) -> bool {
        self.get(Family::Type) == TYPE_METRICAL && self.get(Family::BarBeat) == BAR
    }

    /// A Metrical word for position `beat` (0..16) with optional tempo bin and chord.
    pub fn metrical(beat: u8, tempo: Option<u8>, chord: Option<Chord>) -> Word {
        Word([
            tempo.map_or(CONTI, |t| 2 + t as u16),
            chord.map_or(CONTI, |c| 2 + c.index() as u16),
            2 + beat as u16,
            TYPE_METRICAL,
            IGNORE,
            IGNORE,
            IGNORE,
        ])
    }

    /// A Note word.
    pub fn note(note: GridNote) -> Word {
        Word([
            IGNORE,
            IGNORE,
            IGNORE,
            TYPE_NOTE,
            1 + (note.pitch - PITCH_MIN) as u16,
            1 + note.duration as u16,
            1 + note.velocity as u16,
        ])
    }

    /// The word moved by `semitones` (training augmentation): a note's pitch moves and folds by
    /// octaves into 22..=107; a chord's root moves (its quality stays); everything else stays.
    pub fn transposed(self, semitones: i32) -> Word {
        let mut w = self;
        let pitch = &mut w.0[Family::Pitch.index()];
        if (1..=PITCHES as u16).contains(pitch) {
            let moved = (PITCH_MIN as i32 + *pitch as i32 - 1 + semitones).clamp(0, 127) as u8;
            *pitch = 1 + (fold_pitch(moved) - PITCH_MIN) as u16;
        }
        let chord = &mut w.0[Family::Chord.index()];
        let qualities = crate::music::chord::Quality::ALL.len() as i32;
        if (2..2 + 12 * qualities as u16).contains(chord) {
            let (root, quality) = ((*chord as i32 - 2) / qualities, (*chord as i32 - 2) % qualities);
            *chord = (2 + (root + semitones).rem_euclid(12) * qualities + quality) as u16;
        }
        w
    }

    /// True when every id is inside its family.
    pub fn in_vocabulary(&self) -> bool {
        self.0.iter().zip(FAMILY_SIZES).all(|(&id, size)| (id as usize) < size)
    }

    /// Human-readable form, e.g. `Note pitch=60 dur=480 vel=64`.
    pub fn describe(&self) -> String {
        let [tempo, chord, bar_beat, ty, pitch, duration, velocity] = self.0;
        match ty {
            TYPE_EOS => "EOS".to_string(),
            TYPE_METRICAL if bar_beat == BAR => "Bar".to_string(),
            TYPE_METRICAL => {
                let value = |id: u16, name: &dyn Fn(usize) -> String| match id {
                    IGNORE => "ignore".to_string(),
                    CONTI => "CONTI".to_string(),
                    v => name(v as usize - 2),
                };
                format!(
                    "Beat_{} tempo={} chord={}",
                    bar_beat as i32 - 2,
                    value(tempo, &|i| TEMPO_VALUES.get(i).map_or("?".into(), |t| t.to_string())),
                    value(chord, &|i| Chord::from_index(i).map_or("?".into(), |c| c.name())),
                )
            }
            _ => format!(
                "Note pitch={} dur={} vel={}",
                pitch as i32 + PITCH_MIN as i32 - 1,
                (duration as i32 - 1) * 120,
                (velocity as i32 - 1) * 2 + 40
            ),
        }
    }
}

/// Encodes a quantised song as CP words, ending with the closing Bar word and EOS.
pub fn encode(grid: &Grid) -> Vec<Word> {
    let mut words = Vec::with_capacity(grid.bars as usize + grid.slots.len() * 2 + 2);
    let mut slots = grid.slots.iter().peekable();
    for bar in 0..grid.bars {
        words.push(Word::BAR);
        while let Some(slot) = slots.next_if(|s| s.bar() == bar) {
            words.push(Word::metrical(slot.beat(), slot.tempo, slot.chord));
            words.extend(slot.notes.iter().map(|&n| Word::note(n)));
        }
    }
    if grid.bars > 0 {
        words.push(Word::BAR);
    }
    words.push(Word::EOS);
    words
}

/// What decoding made of a word sequence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded {
    pub grid: Grid,
    /// Words that did not fit their type (a note without pitch, a beat before any bar is fine).
    pub skipped: usize,
    /// Whether an EOS word ended the sequence.
    pub ended: bool,
}

/// Streaming CP decoder: feed words one at a time (as a model samples them). Words that do not
/// fit their type are counted and skipped; nothing panics.
#[derive(Debug, Default)]
pub struct Decoder {
    builder: GridBuilder,
    bar: Option<u32>,
    position: Option<u32>,
    bar_words: u32,
    skipped: usize,
    ended: bool,
}

/// A note decoded from a word, at a grid position (16ths from song start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedNote {
    pub position: u32,
    pub note: GridNote,
}

/// What one word did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Bar(u32),
    Position { position: u32, tempo: Option<u8>, chord: Option<Chord> },
    Note(PlacedNote),
    End,
    Skipped,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Decodes one word.
    pub fn push(&mut self, word: Word) -> Event {
        if self.ended {
            self.skipped += 1;
            return Event::Skipped;
        }
        let [tempo, chord, bar_beat, ty, pitch, duration, velocity] = word.0;
        let event = match ty {
            TYPE_EOS => {
                self.ended = true;
                Event::End
            }
            TYPE_METRICAL if bar_beat == BAR => {
                let bar = self.bar.map_or(0, |b| b + 1);
                self.bar = Some(bar);
                self.position = None;
                self.bar_words += 1;
                Event::Bar(bar)
            }
            TYPE_METRICAL if (2..2 + POSITIONS_PER_BAR as u16).contains(&bar_beat) => {
                let bar = *self.bar.get_or_insert(0);
                let position = bar * POSITIONS_PER_BAR + (bar_beat - 2) as u32;
                self.position = Some(position);
                let tempo = (tempo >= 2 && ((tempo - 2) as usize) < TEMPO_VALUES.len()).then(|| (tempo - 2) as u8);
                let chord = if chord >= 2 { Chord::from_index((chord - 2) as usize) } else { None };
                let slot = self.builder.slot(position);
                slot.tempo = tempo.or(slot.tempo);
                slot.chord = chord.or(slot.chord);
                Event::Position { position, tempo, chord }
            }
            TYPE_NOTE
                if self.position.is_some()
                    && (1..=PITCHES as u16).contains(&pitch)
                    && (1..=DURATION_BINS as u16).contains(&duration)
                    && (1..=VELOCITY_BINS as u16).contains(&velocity) =>
            {
                let position = self.position.expect("checked above");
                let note = GridNote {
                    pitch: PITCH_MIN + (pitch - 1) as u8,
                    duration: (duration - 1) as u8,
                    velocity: (velocity - 1) as u8,
                };
                self.builder.slot(position).notes.push(note);
                Event::Note(PlacedNote { position, note })
            }
            _ => Event::Skipped,
        };
        if event == Event::Skipped {
            self.skipped += 1;
        }
        event
    }

    /// The grid decoded so far.
    pub fn finish(self) -> Decoded {
        let mut builder = self.builder;
        // The closing Bar word ends the song: bars = Bar words - 1 when it is there.
        builder.bars = builder.bars.max(self.bar_words.saturating_sub(1));
        Decoded { grid: builder.finish(), skipped: self.skipped, ended: self.ended }
    }
}

/// The words of the first `bars` bars, ending with the Bar word that opens the next one (so a
/// continuation starts there); all the words but EOS when the song is shorter.
pub fn first_bars(words: &[Word], bars: u32) -> &[Word] {
    let mut seen = 0;
    for (i, w) in words.iter().enumerate() {
        if w.get(Family::Type) == TYPE_EOS {
            return &words[..i];
        }
        if w.is_bar() {
            if seen == bars {
                return &words[..=i];
            }
            seen += 1;
        }
    }
    words
}

/// Decodes a whole word sequence (stops at EOS).
pub fn decode(words: &[Word]) -> Decoded {
    let mut decoder = Decoder::new();
    for &w in words {
        if decoder.push(w) == Event::End {
            break;
        }
    }
    decoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_has_342_tokens() {
        assert_eq!(FAMILY_SIZES, [56, 135, 18, 3, 87, 18, 25]);
        assert_eq!(FAMILY_SIZES.iter().sum::<usize>(), 342);
    }

    #[test]
    fn out_of_place_words_are_skipped_not_fatal() {
        let words = [
            Word([0, 0, 0, TYPE_NOTE, 30, 3, 3]), // note before any position
            Word([0, 0, 0, TYPE_METRICAL, 0, 0, 0]), // metrical without bar-beat
            Word::BAR,
            Word::metrical(4, Some(10), None),
            Word([0, 0, 0, TYPE_NOTE, 0, 3, 3]), // note without pitch
            Word([0, 0, 0, TYPE_NOTE, 40, 3, 3]),
            Word([0, 0, 0, 7, 40, 3, 3]), // unknown type
            Word::EOS,
            Word::BAR, // after EOS
        ];
        let d = decode(&words);
        assert!(d.ended);
        assert_eq!(d.skipped, 4);
        assert_eq!(d.grid.note_count(), 1);
        assert_eq!(d.grid.slots[0].position, 4);
    }
}
