//! The run's log (`log.jsonl`): one JSON line per logged training step or validation, read
//! back for resumes and for the loss curve (`loss.png`).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::eval::plot;

/// One line of the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    pub step: u64,
    pub seconds: f64,
    pub lr: f64,
    pub train_loss: Option<f64>,
    pub grad_norm: Option<f64>,
    pub words_per_second: Option<f64>,
    /// Validation loss: mean, then per family (family order).
    pub valid_loss: Option<f64>,
    pub valid_family: Option<Vec<f64>>,
}

impl LogLine {
    pub fn train(step: u64, seconds: f64, lr: f64, loss: f64, grad_norm: f64, words_per_second: f64) -> LogLine {
        LogLine {
            step,
            seconds,
            lr,
            train_loss: Some(loss),
            grad_norm: Some(grad_norm),
            words_per_second: Some(words_per_second),
            valid_loss: None,
            valid_family: None,
        }
    }

    pub fn valid(step: u64, seconds: f64, lr: f64, family: Vec<f64>) -> LogLine {
        let mean = family.iter().sum::<f64>() / family.len().max(1) as f64;
        LogLine {
            step,
            seconds,
            lr,
            train_loss: None,
            grad_norm: None,
            words_per_second: None,
            valid_loss: Some(mean),
            valid_family: Some(family),
        }
    }
}

/// Appends one line to the log at `path`.
pub fn append_log(path: &Path, line: &LogLine) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(f, "{}", serde_json::to_string(line)?)
}

/// Reads a run's log.
pub fn read_log(path: &Path) -> Vec<LogLine> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Draws the loss curve of a log: the training loss, the mean validation loss and one line per
/// validation family (`families`: the model's loss names, in the log's family order).
pub fn plot_loss(log: &[LogLine], families: &[&str], path: &Path) -> Result<(), plot::PlotError> {
    let train: Vec<(f64, f64)> = log.iter().filter_map(|l| l.train_loss.map(|v| (l.step as f64, v))).collect();
    let valid: Vec<(f64, f64)> = log.iter().filter_map(|l| l.valid_loss.map(|v| (l.step as f64, v))).collect();
    let per_family: Vec<(&str, Vec<(f64, f64)>)> = families
        .iter()
        .enumerate()
        .map(|(i, name)| (*name, log.iter().filter_map(|l| l.valid_family.as_ref()?.get(i).map(|v| (l.step as f64, *v))).collect()))
        .collect();
    plot::loss_curve(&train, &valid, &per_family, path)
}
