//! The quantisation layer shared by the CP and REMI tokenizers: a song as a grid of 16th
//! positions holding tempo changes, chord changes and notes with binned duration and velocity.
//!
//! Quantisation follows the paper: onsets rounded to the 120-tick grid, duration min(len, 1920)
//! rounded to 120, velocity snapped to steps of 2 then clamped to [40, 86], tempo snapped to the
//! nearest of 54 values, leading empty bars dropped. Pitches outside 22..=107 are moved by
//! octaves into that range. Plain data only: no MIDI, no model.

use std::collections::BTreeMap;

use crate::music::chord::Chord;
use crate::music::song::{ChordChange, Note, Song, TempoChange, POSITIONS_PER_BAR, TICKS_PER_BAR, TICKS_PER_POSITION};

/// The 54 tempo values (BPM) of the paper's vocabulary.
pub const TEMPO_VALUES: [u16; 54] = [
    32, 35, 38, 41, 44, 47, 50, 53, 56, 59, 62, 65, 68, 71, 74, 77, 80, 83, 86, 89, 92, 95, 98, 101,
    104, 107, 110, 113, 116, 119, 122, 125, 128, 131, 134, 137, 140, 143, 146, 149, 155, 158, 161,
    167, 170, 176, 182, 188, 194, 200, 206, 215, 221, 224,
];
/// Lowest and highest pitch of the vocabulary.
pub const PITCH_MIN: u8 = 22;
pub const PITCH_MAX: u8 = 107;
/// Number of pitch values (86).
pub const PITCHES: usize = (PITCH_MAX - PITCH_MIN + 1) as usize;
/// Duration bins: 0, 120, ..., 1920 ticks (17 values).
pub const DURATION_BINS: usize = 17;
/// Velocity bins: 40, 42, ..., 86 (24 values).
pub const VELOCITY_BINS: usize = 24;
pub const VELOCITY_MIN: u8 = 40;
pub const VELOCITY_MAX: u8 = 86;

/// Index of the tempo value nearest to `bpm` (ties go to the slower value).
pub fn tempo_bin(bpm: f32) -> u8 {
    let mut best = 0;
    for (i, &v) in TEMPO_VALUES.iter().enumerate() {
        if (v as f32 - bpm).abs() < (TEMPO_VALUES[best] as f32 - bpm).abs() {
            best = i;
        }
    }
    best as u8
}

/// Duration bin of a length in ticks: min(len, 1920) rounded to the nearest 120.
pub fn duration_bin(ticks: u32) -> u8 {
    ((ticks.min(TICKS_PER_BAR) + TICKS_PER_POSITION / 2) / TICKS_PER_POSITION) as u8
}

/// Ticks of a duration bin.
pub fn duration_ticks(bin: u8) -> u32 {
    bin as u32 * TICKS_PER_POSITION
}

/// Velocity bin: snapped to steps of 2, clamped to [40, 86], as 0..24.
pub fn velocity_bin(velocity: u8) -> u8 {
    let snapped = ((velocity as u32).div_ceil(2) * 2) as u8;
    (snapped.clamp(VELOCITY_MIN, VELOCITY_MAX) - VELOCITY_MIN) / 2
}

/// MIDI velocity of a velocity bin.
pub fn velocity_value(bin: u8) -> u8 {
    VELOCITY_MIN + 2 * bin
}

/// Moves a pitch by octaves into 22..=107.
pub fn fold_pitch(pitch: u8) -> u8 {
    let mut p = pitch;
    while p < PITCH_MIN {
        p += 12;
    }
    while p > PITCH_MAX {
        p -= 12;
    }
    p
}

/// The 16th position nearest to a tick.
fn position_of(tick: u32) -> u32 {
    (tick + TICKS_PER_POSITION / 2) / TICKS_PER_POSITION
}

/// A note on the grid: MIDI pitch (22..=107), duration bin (0..17), velocity bin (0..24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridNote {
    pub pitch: u8,
    pub duration: u8,
    pub velocity: u8,
}

/// One 16th position with something on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slot {
    /// 16ths from the start of the song's first bar.
    pub position: u32,
    /// Tempo bin that starts here, if the tempo changes here.
    pub tempo: Option<u8>,
    /// Chord that starts here, if the chord changes here.
    pub chord: Option<Chord>,
    /// Notes starting here, in descending pitch (then duration, velocity).
    pub notes: Vec<GridNote>,
}

impl Slot {
    /// Bar index of this slot.
    pub fn bar(&self) -> u32 {
        self.position / POSITIONS_PER_BAR
    }

    /// Position inside its bar, 0..16.
    pub fn beat(&self) -> u8 {
        (self.position % POSITIONS_PER_BAR) as u8
    }
}

/// A quantised song: the number of bars and its non-empty slots in time order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grid {
    pub bars: u32,
    pub slots: Vec<Slot>,
}

impl Grid {
    /// Number of leading empty bars that quantisation drops from `song`.
    pub fn leading_bars(song: &Song) -> u32 {
        song.notes.iter().map(|n| position_of(n.onset)).min().unwrap_or(0) / POSITIONS_PER_BAR
    }

    /// Quantises a song. Empty songs give an empty grid (0 bars).
    pub fn from_song(song: &Song) -> Grid {
        if song.notes.is_empty() {
            return Grid::default();
        }
        let offset = Grid::leading_bars(song) * POSITIONS_PER_BAR;
        let mut slots: BTreeMap<u32, Slot> = BTreeMap::new();
        for n in &song.notes {
            let position = position_of(n.onset) - offset;
            let slot = slots.entry(position).or_insert_with(|| Slot { position, ..Slot::default() });
            // Doubled notes (the same key in two tracks) are kept: dropping them loses notes.
            slot.notes.push(GridNote {
                pitch: fold_pitch(n.pitch),
                duration: duration_bin(n.duration),
                velocity: velocity_bin(n.velocity),
            });
        }
        let last = *slots.keys().next_back().expect("at least one note");
        let bars = last / POSITIONS_PER_BAR + 1;
        let end = bars * POSITIONS_PER_BAR;
        // Changes before the first bar collapse onto position 0; a change that repeats the value
        // in force is no change.
        let relative = |tick: u32| position_of(tick).saturating_sub(offset);
        let mut tempo_at: BTreeMap<u32, u8> = BTreeMap::new();
        for t in &song.tempos {
            tempo_at.insert(relative(t.tick), tempo_bin(t.bpm));
        }
        let mut chord_at: BTreeMap<u32, Chord> = BTreeMap::new();
        for c in &song.chords {
            chord_at.insert(relative(c.tick), c.chord);
        }
        let mut in_force = None;
        for (&position, &tempo) in tempo_at.iter().filter(|(&p, _)| p < end) {
            if in_force != Some(tempo) {
                slots.entry(position).or_insert_with(|| Slot { position, ..Slot::default() }).tempo =
                    Some(tempo);
                in_force = Some(tempo);
            }
        }
        let mut in_force = None;
        for (&position, &chord) in chord_at.iter().filter(|(&p, _)| p < end) {
            if in_force != Some(chord) {
                slots.entry(position).or_insert_with(|| Slot { position, ..Slot::default() }).chord =
                    Some(chord);
                in_force = Some(chord);
            }
        }
        let mut slots: Vec<Slot> = slots.into_values().collect();
        for s in &mut slots {
            s.notes.sort_by_key(|n| std::cmp::Reverse((n.pitch, n.duration, n.velocity)));
        }
        Grid { bars, slots }
    }

    /// The song this grid stands for (tempo and chord changes at their positions).
    pub fn to_song(&self) -> Song {
        let mut song = Song::default();
        for slot in &self.slots {
            let tick = slot.position * TICKS_PER_POSITION;
            if let Some(t) = slot.tempo {
                song.tempos.push(TempoChange { tick, bpm: TEMPO_VALUES[t as usize] as f32 });
            }
            if let Some(chord) = slot.chord {
                song.chords.push(ChordChange { tick, chord });
            }
            for n in &slot.notes {
                song.notes.push(Note {
                    onset: tick,
                    duration: duration_ticks(n.duration),
                    pitch: n.pitch,
                    velocity: velocity_value(n.velocity),
                });
            }
        }
        song.sort();
        song
    }

    /// Number of notes on the grid.
    pub fn note_count(&self) -> usize {
        self.slots.iter().map(|s| s.notes.len()).sum()
    }
}

/// Builds a grid from decoded events: slots may arrive out of order or repeat a position; this
/// merges them, sorts notes, and drops repeated tempo/chord values. Used by the decoders.
#[derive(Debug, Default)]
pub(crate) struct GridBuilder {
    slots: BTreeMap<u32, Slot>,
    pub bars: u32,
}

impl GridBuilder {
    pub fn slot(&mut self, position: u32) -> &mut Slot {
        self.bars = self.bars.max(position / POSITIONS_PER_BAR + 1);
        self.slots.entry(position).or_insert_with(|| Slot { position, ..Slot::default() })
    }

    pub fn finish(self) -> Grid {
        let mut slots: Vec<Slot> = self.slots.into_values().collect();
        let (mut tempo, mut chord) = (None, None);
        for s in &mut slots {
            s.notes.sort_by_key(|n| std::cmp::Reverse((n.pitch, n.duration, n.velocity)));
            if s.tempo.is_some() && s.tempo == tempo {
                s.tempo = None;
            }
            tempo = s.tempo.or(tempo);
            if s.chord.is_some() && s.chord == chord {
                s.chord = None;
            }
            chord = s.chord.or(chord);
        }
        slots.retain(|s| s.tempo.is_some() || s.chord.is_some() || !s.notes.is_empty());
        Grid { bars: self.bars, slots }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_follow_the_paper() {
        assert_eq!(TEMPO_VALUES.len(), 54);
        assert_eq!(TEMPO_VALUES[tempo_bin(120.0) as usize], 119);
        assert_eq!(TEMPO_VALUES[tempo_bin(152.0) as usize], 149);
        assert_eq!(TEMPO_VALUES[tempo_bin(400.0) as usize], 224);
        assert_eq!(duration_bin(59), 0);
        assert_eq!(duration_bin(61), 1);
        assert_eq!(duration_bin(5000), 16);
        assert_eq!(velocity_value(velocity_bin(127)), 86);
        assert_eq!(velocity_value(velocity_bin(10)), 40);
        assert_eq!(velocity_value(velocity_bin(63)), 64);
        assert_eq!(fold_pitch(10), 22);
        assert_eq!(fold_pitch(120), 108 - 12);
    }

    #[test]
    fn leading_empty_bars_are_dropped_and_changes_before_them_collapse() {
        let song = Song {
            notes: vec![Note { onset: 2 * TICKS_PER_BAR + 240, duration: 480, pitch: 60, velocity: 80 }],
            tempos: vec![TempoChange { tick: 0, bpm: 90.0 }],
            chords: vec![],
        };
        let grid = Grid::from_song(&song);
        assert_eq!(grid.bars, 1);
        assert_eq!(grid.slots[0].position, 0);
        assert_eq!(grid.slots[0].tempo, Some(tempo_bin(90.0)));
        assert_eq!(grid.slots[1].position, 2);
        assert_eq!(grid.note_count(), 1);
    }
}
