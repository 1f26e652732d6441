//! Training checkpoints: weights, optimizer moments and the trainer's state in one
//! safetensors file, written atomically (exported weights are `model::weights`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::data::dataset::{write_atomically, DatasetError};
use crate::model::weights::{from_safetensors, to_safetensors, WeightsError};

/// Why a checkpoint could not be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: cannot read checkpoint: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{}: {error}", path.display())]
    Damaged { path: PathBuf, error: Box<WeightsError> },
    #[error("{}: not a CP Piano checkpoint (no trainer state)", .0.display())]
    NoState(PathBuf),
    #[error("cannot serialise the checkpoint: {0}")]
    Serialise(Box<WeightsError>),
    #[error(transparent)]
    Write(#[from] DatasetError),
}

type Result<T> = std::result::Result<T, CheckpointError>;

/// Writes a checkpoint: `model.*` and `adam.*` tensors plus a JSON `state` in the metadata.
pub fn save_checkpoint(path: &Path, model: &[(String, Tensor)], optimizer: &[(String, Tensor)], state_json: String) -> Result<()> {
    let mut all: Vec<(String, Tensor)> = model.iter().map(|(n, t)| (format!("model.{n}"), t.clone())).collect();
    all.extend(optimizer.iter().map(|(n, t)| (format!("adam.{n}"), t.clone())));
    let bytes = to_safetensors(&all, DType::F32, HashMap::from([("state".to_string(), state_json)])).map_err(|error| CheckpointError::Serialise(Box::new(error)))?;
    Ok(write_atomically(path, &bytes)?)
}

/// A loaded checkpoint: model tensors, optimizer tensors (names without prefixes) and state.
pub struct Checkpoint {
    pub model: HashMap<String, Tensor>,
    pub optimizer: HashMap<String, Tensor>,
    pub state_json: String,
}

pub fn load_checkpoint(path: &Path, device: &Device) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|error| CheckpointError::Read { path: path.to_path_buf(), error })?;
    let (tensors, metadata) = from_safetensors(&bytes, device).map_err(|error| CheckpointError::Damaged { path: path.to_path_buf(), error: Box::new(error) })?;
    let Some(state_json) = metadata.get("state").cloned() else {
        return Err(CheckpointError::NoState(path.to_path_buf()));
    };
    let mut model = HashMap::new();
    let mut optimizer = HashMap::new();
    for (name, t) in tensors {
        if let Some(n) = name.strip_prefix("model.") {
            model.insert(n.to_string(), t);
        } else if let Some(n) = name.strip_prefix("adam.") {
            optimizer.insert(n.to_string(), t);
        }
    }
    Ok(Checkpoint { model, optimizer, state_json })
}

