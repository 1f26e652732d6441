//! Playback in a host: the audio-thread engine that turns note events in beats into host notes
//! at sample offsets (`engine`: no allocation, no locks, nothing else of the crate), the
//! preview voice that can sound those notes on the audio thread (`preview`), Listen mode's
//! recorder of the producer's notes on the audio thread (`recorder`, the same rules), the
//! inference worker thread that owns the model, feeds the engine through a ring and continues
//! what the recorder heard (`worker`), the values they and the editor share (`shared`), and the
//! song the worker keeps, saves and exports (`song`).

pub mod engine;
pub mod preview;
pub mod recorder;
pub mod shared;
pub mod song;
pub mod worker;
