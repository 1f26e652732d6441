//! Music in plain Rust, shared by every step: the song (`song`), chords and the chord
//! recogniser (`chord`), keys for key lock (`key`), and the 16th-note grid both token formats
//! quantise to (`grid`). No files, no tensors.

pub mod chord;
pub mod grid;
pub mod key;
pub mod song;
