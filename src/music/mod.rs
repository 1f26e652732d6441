//! Music in plain Rust, shared by every step: the song (`song`), chords and the chord
//! recogniser (`chord`), keys for key lock (`key`), and the 16th-note grid both token formats
//! quantise to (`grid`). No files, no tensors.

pub mod chord;
pub mod grid;
pub mod key;
pub mod song;

/// Why a producer's text (a chord, a key, a chord progression) does not read; the message says
/// what was expected, for the command line and the editor to show as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TextError(pub String);
