//! CP Piano: compound-word transformer pop-piano generation (Hsiao et al., AAAI 2021).
//!
//! Data flows one way, one module per step, in this order:
//!
//! | module | its one job |
//! |---|---|
//! | `music` | the plain song (notes, tempos, chords in ticks), chords and their recogniser, keys, the 16th grid |
//! | `midi` | MIDI files in (any file, POP909's layout) and out |
//! | `tokens` | a grid as CP words or REMI tokens and back, and the round-trip report |
//! | `data` | data-set files of token sequences, and the training windows and batches cut from them |
//! | `model` | the CP linear transformer (training form in candle, recurrent form in plain Rust), the REMI-XL baseline, fused CPU ops, configs, weights files |
//! | `train` | the trainer: AdamW, checkpoints, the log |
//! | `generate` | sampling, and the CP and REMI-XL generators: words -> note events in beats |
//! | `eval` | metrics, the CP / REMI-XL comparison, plots |
//! | `playback` | the audio-thread engine (note events -> host notes at sample offsets) and the inference worker that feeds it |
//! | `plugin` | the nice-plug plugin: parameters, process, state, editor |
//! | `bench` | speed figures |

pub mod music;
pub mod midi;
pub mod tokens;
pub mod data;
pub mod model;
pub mod train;
pub mod generate;
pub mod eval;
pub mod playback;
pub mod plugin;
pub mod bench;

/// The plugin test build checks that `process` never allocates (see `plugin.rs`).
#[cfg(feature = "assert-no-alloc")]
#[global_allocator]
static ALLOCATOR: assert_no_alloc::AllocDisabler = assert_no_alloc::AllocDisabler;
