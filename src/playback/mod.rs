//! Playback in a host: the audio-thread engine that turns note events in beats into host notes
//! at sample offsets (`engine`: no allocation, no locks, nothing else of the crate), the
//! preview voice that can sound those notes on the audio thread (`preview`), and the inference
//! worker thread that owns the model and feeds the engine through a ring (`worker`).

pub mod engine;
pub mod preview;
pub mod worker;
