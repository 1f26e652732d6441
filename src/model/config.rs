//! Model configuration: the sizes of the CP linear transformer, with the `paper` and `small`
//! presets. Serialised as JSON beside the weights.

use serde::{Deserialize, Serialize};

use crate::tokens::cp::{FAMILIES, FAMILY_SIZES};

/// Why a model config (CP or REMI-XL) cannot make a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("d_model {d_model} is not a multiple of n_heads {n_heads}")]
    HeadsDoNotDivide { d_model: usize, n_heads: usize },
    #[error("vocabulary {found} differs from this build's {expected}")]
    Vocabulary { found: String, expected: String },
    #[error("every size must be positive")]
    ZeroSize,
    #[error("d_model {0} is odd (the sinusoidal encoding needs it even)")]
    OddWidth(usize),
    #[error("d_head {0} is over 256")]
    HeadTooWide(usize),
}

/// Sizes of a CP linear transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub d_ff: usize,
    /// Embedding size per family (tempo, chord, bar-beat, type, pitch, duration, velocity).
    pub emb_sizes: [usize; FAMILIES],
    /// Vocabulary size per family (the CP vocabulary; stored so weights can be checked).
    pub vocab_sizes: [usize; FAMILIES],
    pub dropout: f32,
}

/// The paper's embedding sizes.
pub const PAPER_EMB_SIZES: [usize; FAMILIES] = [128, 256, 64, 32, 512, 128, 128];

impl Config {
    /// The paper's model: 12 layers, d 512, 8 heads, FFN 2048 (39,016,630 parameters).
    pub fn paper() -> Config {
        Config {
            n_layers: 12,
            d_model: 512,
            n_heads: 8,
            d_ff: 2048,
            emb_sizes: PAPER_EMB_SIZES,
            vocab_sizes: FAMILY_SIZES,
            dropout: 0.1,
        }
    }

    /// The model this 2-core machine trains: 6 layers, d 256, 4 heads, FFN 1024 (~4.9 M
    /// parameters; see weights/TRAINING.md for the measurements behind the choice).
    pub fn small() -> Config {
        Config {
            n_layers: 6,
            d_model: 256,
            n_heads: 4,
            d_ff: 1024,
            emb_sizes: [64, 128, 32, 32, 256, 64, 64],
            vocab_sizes: FAMILY_SIZES,
            dropout: 0.1,
        }
    }

    /// A preset by name (`paper`, `small`, or `tiny` for tests).
    pub fn preset(name: &str) -> Option<Config> {
        match name {
            "paper" => Some(Config::paper()),
            "small" => Some(Config::small()),
            "tiny" => Some(Config {
                n_layers: 2,
                d_model: 64,
                n_heads: 2,
                d_ff: 128,
                emb_sizes: [16, 32, 16, 8, 32, 16, 16],
                vocab_sizes: FAMILY_SIZES,
                dropout: 0.1,
            }),
            _ => None,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// Sum of the family embedding sizes (the input linear's width).
    pub fn emb_total(&self) -> usize {
        self.emb_sizes.iter().sum()
    }

    /// Checks the sizes fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.n_heads == 0 || self.d_model % self.n_heads != 0 {
            return Err(ConfigError::HeadsDoNotDivide { d_model: self.d_model, n_heads: self.n_heads });
        }
        if self.vocab_sizes != FAMILY_SIZES {
            return Err(ConfigError::Vocabulary { found: format!("{:?}", self.vocab_sizes), expected: format!("{FAMILY_SIZES:?}") });
        }
        if self.n_layers == 0 || self.d_ff == 0 || self.emb_sizes.contains(&0) {
            return Err(ConfigError::ZeroSize);
        }
        Ok(())
    }
}
