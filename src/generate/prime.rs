//! Primes: the CP words a continued song begins with. A clip from a MIDI file (`--prime`,
//! optionally only its first bars), or the notes Listen mode heard in the plugin, exactly
//! `bars` bars long. Either way the prime ends with the Bar word that opens the bar after it,
//! so the model writes on from there; chords come from the recogniser.

use crate::music::chord::recognise_chords;
use crate::music::grid::Grid;
use crate::music::song::{Note, Song, TempoChange, POSITIONS_PER_BAR};
use crate::tokens::cp::{self, Word};

/// The words of a clip (an imported song), all of it or only its first `bars` bars.
pub fn from_clip(song: &Song, bars: Option<u32>) -> Vec<Word> {
    let words = cp::encode(&Grid::from_song(song));
    match bars {
        Some(n) => cp::first_bars(&words, n).to_vec(),
        None => words,
    }
}

/// The words of exactly `bars` bars holding `notes` (ticks from the first bar's start) at
/// `bpm`, with the chords the recogniser hears in them: silent bars at the end count, and notes
/// after the last bar are left out.
pub fn from_notes(notes: &[Note], bars: u32, bpm: f32) -> Vec<Word> {
    let mut song = Song { notes: notes.to_vec(), tempos: vec![TempoChange { tick: 0, bpm }], chords: Vec::new() };
    song.sort();
    song.chords = recognise_chords(&song.notes);
    let mut grid = Grid::from_song(&song);
    grid.slots.retain(|s| s.position < bars * POSITIONS_PER_BAR);
    grid.bars = bars;
    cp::encode(&grid)
}
