//! The song the worker keeps: a generated song as the plugin saves it in the project, the
//! editor shows it and "Export MIDI" writes it. Plain data and its conversions; no threads.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::generate::{Finish, GenerationSettings, Generator, NoteEvent, WordModel};
use crate::tokens::cp::{Event, Word};

/// A generated song: what the plugin saves in the project and the editor shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSong {
    pub settings: GenerationSettings,
    pub notes: Vec<NoteEvent>,
    /// Song length in beats (a whole number of bars).
    pub end: f64,
    pub ended_with_eos: bool,
    pub words: usize,
    /// The song's CP words (token ids per family), so a reopened project can regenerate from a
    /// bar. Empty in states saved before they were kept.
    #[serde(default)]
    pub cp_words: Vec<[u16; crate::tokens::cp::FAMILIES]>,
}

impl StoredSong {
    /// A song from the plugin state's JSON.
    pub fn from_saved(text: &str) -> Result<StoredSong, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The song's chord changes (beat, chord), from its words: the chord row the editor shows.
    pub fn chords(&self) -> Vec<(f64, crate::music::chord::Chord)> {
        let words: Vec<Word> = self.cp_words.iter().map(|&w| Word(w)).collect();
        crate::tokens::cp::decode(&words)
            .grid
            .slots
            .iter()
            .filter_map(|s| s.chord.map(|c| (s.position as f64 / 4.0, c)))
            .collect()
    }

    /// The song as a plain `Song` (for MIDI export), at `bpm`.
    pub fn to_song(&self, bpm: f32) -> crate::music::song::Song {
        use crate::music::song::{Note, Song, TempoChange, TICKS_PER_BEAT};
        let mut song = Song { tempos: vec![TempoChange { tick: 0, bpm }], ..Song::default() };
        for n in &self.notes {
            song.notes.push(Note {
                onset: (n.start * TICKS_PER_BEAT as f64).round() as u32,
                duration: (n.duration * TICKS_PER_BEAT as f64).round() as u32,
                pitch: n.pitch,
                velocity: n.velocity,
            });
        }
        song.sort();
        song
    }
}

/// A finished song as the worker keeps it: its notes are the words' notes as the decoder reads
/// them (as `Io::stream` sends them for a song without a prime).
pub fn stored_song<M: WordModel>(generator: &Generator<'_, M>) -> StoredSong {
    let mut decoder = crate::tokens::cp::Decoder::new();
    let notes = generator
        .words()
        .iter()
        .filter_map(|&w| match decoder.push(w) {
            Event::Note(n) => Some(NoteEvent::from_placed(&n)),
            _ => None,
        })
        .collect();
    StoredSong {
        settings: generator.settings().clone(),
        notes,
        end: generator.grid().bars as f64 * 4.0,
        ended_with_eos: generator.finish() == Some(Finish::Eos),
        words: generator.words().len(),
        cp_words: generator.words().iter().map(|w| w.0).collect(),
    }
}

/// The folder "Export MIDI" writes to: `$HOME/Music/CP Piano` (the current folder without a
/// home).
pub fn default_export_dir() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from).join("Music").join("CP Piano")
}

/// Writes a song to `dir/cp-piano-seed<SEED>-<UNIX SECONDS>.mid` at `bpm`; returns the path.
pub fn export_midi(song: &StoredSong, bpm: f64, dir: &std::path::Path) -> Result<PathBuf, crate::data::dataset::DatasetError> {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let path = dir.join(format!("cp-piano-seed{}-{seconds}.mid", song.settings.seed));
    let bytes = crate::midi::export::export_bytes(&song.to_song(bpm as f32), 0);
    crate::data::dataset::write_atomically(&path, &bytes)?;
    Ok(path)
}
