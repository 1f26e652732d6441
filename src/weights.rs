//! The shipped model, embedded in the binary (CLI and plugin alike) so a fresh checkout
//! generates with no download, and loading of user weights folders.

use std::path::Path;

use anyhow::{bail, Result};

use crate::checkpoint::Weights;
use crate::model::cp_rnn::{CpRnn, Precision};
use crate::model::remi_xl_stream::RemiXlStream;

/// The shipped weights (config JSON, safetensors bytes), when this build has them.
pub fn shipped() -> Option<(&'static str, &'static [u8])> {
    #[cfg(shipped_weights)]
    {
        Some((
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/config.json")),
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/model.safetensors")),
        ))
    }
    #[cfg(not(shipped_weights))]
    {
        None
    }
}

/// Loads CP weights from `dir`, or the shipped weights when `dir` is `None`.
pub fn load_weights(dir: Option<&Path>) -> Result<Weights> {
    match dir {
        Some(dir) => Weights::load_dir(dir),
        None => match shipped() {
            Some((config, bytes)) => Weights::from_bytes(config, bytes),
            None => bail!("this build has no shipped weights (weights/ is empty): pass --weights DIR, e.g. a run's best/ folder"),
        },
    }
}

/// The recurrent CP model from `dir` or the shipped weights.
pub fn load_cp_rnn(dir: Option<&Path>, precision: Precision) -> Result<CpRnn> {
    let weights = load_weights(dir)?;
    CpRnn::from_tensors(&weights.cp_config()?, &weights.tensors, precision)
}

/// REMI-XL weights from `dir`, or from `shipped` (config JSON, safetensors bytes: the command
/// line embeds weights/remi-xl/) when `dir` is `None`.
pub fn load_remi_xl_weights(dir: Option<&Path>, shipped: Option<(&str, &[u8])>) -> Result<Weights> {
    match (dir, shipped) {
        (Some(dir), _) => Weights::load_dir(dir),
        (None, Some((config, bytes))) => Weights::from_bytes(config, bytes),
        (None, None) => bail!("this build has no REMI-XL weights (weights/remi-xl/ is empty): pass a weights folder, e.g. a run's best/"),
    }
}

/// The streaming REMI-XL model from `dir` or the shipped weights.
pub fn load_remi_xl_stream(dir: Option<&Path>, shipped: Option<(&str, &[u8])>, precision: Precision) -> Result<RemiXlStream> {
    let weights = load_remi_xl_weights(dir, shipped)?;
    RemiXlStream::from_tensors(&weights.xl_config()?, &weights.tensors, precision)
}
