//! MIDI files: any standard MIDI file into a `Song` (`import`), POP909's folders with their
//! downbeats (`pop909`), and a `Song` out as a MIDI file (`export`).

pub mod export;
pub mod import;
pub mod pop909;
