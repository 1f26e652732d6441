//! CP Piano: compound-word transformer pop-piano generation.
//!
//! Data flows one way, one module per step:
//! MIDI file (`midi_import`, `pop909`) -> `Song` (`song`, `chord`) -> quantised `Grid` (`grid`)
//! -> tokens (`cp`, `remi`) -> data sets (`dataset`).

pub mod chord;
pub mod cp;
pub mod grid;
pub mod midi_export;
pub mod midi_import;
pub mod remi;
pub mod song;
pub mod dataset;
pub mod pop909;
pub mod round_trip;
pub mod model;
pub mod checkpoint;
pub mod optim;
pub mod batches;
pub mod plot;
pub mod train;
pub mod generate;
pub mod remi_generate;
pub mod metrics;
pub mod eval;
pub mod key;
pub mod sampling;
pub mod weights;
pub mod bench;
pub mod engine;
#[cfg(feature = "editor")]
pub mod editor;
pub mod worker;
pub mod plugin;

/// The plugin test build checks that `process` never allocates (see `plugin.rs`).
#[cfg(feature = "assert-no-alloc")]
#[global_allocator]
static ALLOCATOR: assert_no_alloc::AllocDisabler = assert_no_alloc::AllocDisabler;
