//! The plain-Rust song that every step shares: notes, tempo changes and chord changes on a
//! 480-ticks-per-beat, 4/4 timeline whose tick 0 is a bar line.
//!
//! Importers produce a `Song`, the quantiser turns it into a grid of 16th positions, and the
//! decoders turn tokens back into a `Song`. Nothing here knows about MIDI files or models.

use crate::music::chord::Chord;

/// Ticks per beat (quarter note) of every `Song`.
pub const TICKS_PER_BEAT: u32 = 480;
/// Beats per bar: every song is 4/4.
pub const BEATS_PER_BAR: u32 = 4;
/// Ticks per bar.
pub const TICKS_PER_BAR: u32 = TICKS_PER_BEAT * BEATS_PER_BAR;
/// Positions (16th notes) per bar.
pub const POSITIONS_PER_BAR: u32 = 16;
/// The pitch that splits the two hands: notes below middle C are the left hand's (`--hands`,
/// the plugin's left-hand channel).
pub const HAND_SPLIT: u8 = 60;

/// Whether a note of this pitch is played by the left hand (a fixed split at `HAND_SPLIT`).
pub fn is_left_hand(pitch: u8) -> bool {
    pitch < HAND_SPLIT
}
/// Ticks per position (one 16th note).
pub const TICKS_PER_POSITION: u32 = TICKS_PER_BAR / POSITIONS_PER_BAR;

/// One note: onset and duration in ticks, MIDI pitch and velocity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Note {
    pub onset: u32,
    pub duration: u32,
    pub pitch: u8,
    pub velocity: u8,
}

/// A tempo (beats per minute) starting at a tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TempoChange {
    pub tick: u32,
    pub bpm: f32,
}

/// A chord starting at a tick (it lasts until the next change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChordChange {
    pub tick: u32,
    pub chord: Chord,
}

/// A 4/4 song at 480 ticks per beat. Notes are sorted by onset, then by descending pitch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Song {
    pub notes: Vec<Note>,
    pub tempos: Vec<TempoChange>,
    pub chords: Vec<ChordChange>,
}

impl Song {
    /// Sorts notes (onset, then descending pitch) and tempo/chord changes by tick.
    pub fn sort(&mut self) {
        self.notes.sort_by(|a, b| {
            (a.onset, std::cmp::Reverse(a.pitch), a.duration, a.velocity).cmp(&(
                b.onset,
                std::cmp::Reverse(b.pitch),
                b.duration,
                b.velocity,
            ))
        });
        self.tempos.sort_by_key(|t| t.tick);
        self.chords.sort_by_key(|c| c.tick);
    }
}
