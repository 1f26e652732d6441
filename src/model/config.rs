//! Model configuration: the sizes of the CP linear transformer, with the `paper` and `small`
//! presets and the hybrid `small-hybrid` (a few layers of sliding-window softmax attention among
//! the linear ones). Serialised as JSON beside the weights.

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
    #[error("softmax layer {layer} is not one of the {n_layers} layers, or is listed twice")]
    SoftmaxLayer { layer: usize, n_layers: usize },
    #[error("the softmax attention window must be at least 1 word")]
    ZeroWindow,
}

/// Words a softmax layer sees by default (itself and the 1,023 before it: about 30 POP909 bars).
pub const DEFAULT_WINDOW: usize = 1024;

fn default_window() -> usize {
    DEFAULT_WINDOW
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
    /// Layers (counted from 0) whose attention is causal softmax attention over the last
    /// `window` words instead of linear attention. Empty in the paper's presets. These layers
    /// have the same tensors as linear ones, so linear weights can start a hybrid run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub softmax_layers: Vec<usize>,
    /// Words each softmax layer attends to, the current one included.
    #[serde(default = "default_window")]
    pub window: usize,
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
            softmax_layers: Vec::new(),
            window: DEFAULT_WINDOW,
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
            softmax_layers: Vec::new(),
            window: DEFAULT_WINDOW,
        }
    }

    /// `small` with layers 2 and 4 (of 0-5) attending by softmax over the last 1,024 words:
    /// issue 8's structure experiment. Linear attention keeps one summed state per layer and
    /// recalls an exact bar from many bars back poorly; a softmax layer can look it up.
    pub fn small_hybrid() -> Config {
        Config { softmax_layers: vec![2, 4], ..Config::small() }
    }

    /// The name of the preset this config is, if it is one (`small-hybrid` for the shipped model).
    pub fn preset_name(&self) -> Option<&'static str> {
        ["paper", "small", "small-hybrid", "tiny", "tiny-hybrid"].into_iter().find(|name| Config::preset(name).as_ref() == Some(self))
    }

    /// A preset by name (`paper`, `small`, `small-hybrid`, or `tiny` and `tiny-hybrid` for
    /// tests; `tiny-hybrid`'s second layer attends by softmax over 64 words).
    pub fn preset(name: &str) -> Option<Config> {
        match name {
            "paper" => Some(Config::paper()),
            "small" => Some(Config::small()),
            "small-hybrid" => Some(Config::small_hybrid()),
            "tiny" => Some(Config {
                n_layers: 2,
                d_model: 64,
                n_heads: 2,
                d_ff: 128,
                emb_sizes: [16, 32, 16, 8, 32, 16, 16],
                vocab_sizes: FAMILY_SIZES,
                dropout: 0.1,
                softmax_layers: Vec::new(),
                window: DEFAULT_WINDOW,
            }),
            "tiny-hybrid" => Some(Config { softmax_layers: vec![1], window: 64, ..Config::preset("tiny")? }),
            _ => None,
        }
    }

    /// Whether layer `layer` attends by sliding-window softmax (else linear attention).
    pub fn is_softmax(&self, layer: usize) -> bool {
        self.softmax_layers.contains(&layer)
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
        if self.n_heads == 0 || !self.d_model.is_multiple_of(self.n_heads) {
            return Err(ConfigError::HeadsDoNotDivide { d_model: self.d_model, n_heads: self.n_heads });
        }
        if self.vocab_sizes != FAMILY_SIZES {
            return Err(ConfigError::Vocabulary { found: format!("{:?}", self.vocab_sizes), expected: format!("{FAMILY_SIZES:?}") });
        }
        if self.n_layers == 0 || self.d_ff == 0 || self.emb_sizes.contains(&0) {
            return Err(ConfigError::ZeroSize);
        }
        for (i, &layer) in self.softmax_layers.iter().enumerate() {
            if layer >= self.n_layers || self.softmax_layers[..i].contains(&layer) {
                return Err(ConfigError::SoftmaxLayer { layer, n_layers: self.n_layers });
            }
        }
        if self.window == 0 {
            return Err(ConfigError::ZeroWindow);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preset_is_named_and_a_changed_one_is_not() {
        for name in ["paper", "small", "small-hybrid", "tiny", "tiny-hybrid"] {
            assert_eq!(Config::preset(name).unwrap().preset_name(), Some(name));
        }
        assert_eq!(Config { window: 512, ..Config::small_hybrid() }.preset_name(), None);
    }
}
