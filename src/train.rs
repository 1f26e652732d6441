//! The trainer behind `cargo xtask train` / `cp-piano train`: AdamW with warm-up and cosine
//! decay, gradient clipping at 3, validation loss per family, atomic checkpoints, exact resume,
//! Ctrl-C saves, a progress bar, a JSON-lines log and a loss-curve PNG in the run folder.
//!
//! Run folder: `checkpoint.safetensors` (resume point), `last/` and `best/` (exported weights:
//! config.json + model.safetensors, best by validation loss), `log.jsonl`, `loss.png`.

pub mod checkpoint;
pub mod log;
pub mod optim;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::data::batches::{epoch_batches, make_batch, transposition, windows, Window};
use crate::model::weights::export_weights;
use crate::model::weights::WeightsError;
use crate::train::checkpoint::{load_checkpoint, save_checkpoint, CheckpointError};
use crate::data::dataset::{self, Dataset, DatasetError, Representation, Source, Split};
use crate::model::layers::Dropout;
use crate::model::{ModelConfig, ModelKind, Trainable};
use crate::train::optim::{learning_rate, AdamW, AdamWConfig};
use log::{append_log, read_log, LogLine};

/// Why a run could not start or go on. Every error leaves the last checkpoint as it was.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{}: no such file or folder", .0.display())]
    NoData(PathBuf),
    #[error("{}: a {found:?} data set; the {kind:?} model needs {needs:?} tokens", path.display())]
    WrongData { path: PathBuf, found: Representation, kind: ModelKind, needs: Representation },
    #[error("{}: no training songs", .0.display())]
    NoTrainingSongs(PathBuf),
    #[error("{}: cannot create: {error}", path.display())]
    CreateFolder { path: PathBuf, error: std::io::Error },
    #[error("{}: already holds a run ({what}); pass --resume to go on with it, or give another --out for a new run", out.display())]
    RunExists { out: PathBuf, what: String },
    #[error("{}: holds a run's {what} but no checkpoint.safetensors to resume from; give another --out for a new run", out.display())]
    NothingToResume { out: PathBuf, what: String },
    #[error("{}: a {found:?} run; pass --model accordingly", out.display())]
    WrongRun { out: PathBuf, found: ModelKind },
    #[error("{}: {found:?} weights; pass --model accordingly", dir.display())]
    WrongInit { dir: PathBuf, found: ModelKind },
    #[error("{}: weights do not fit their config: {error}", dir.display())]
    InitMismatch { dir: PathBuf, error: candle_core::Error },
    #[error("--start-step {start} needs --init (the weights of the run it continues) and a step below --steps {steps}")]
    StartStep { start: u64, steps: u64 },
    #[error("unknown preset {0:?} (paper, small, small-hybrid or tiny)")]
    UnknownPreset(String),
    #[error("--transpose moves CP words; the {0:?} model's data cannot be transposed (leave it off)")]
    TransposeNotCp(ModelKind),
    #[error("loss became {loss} at step {step}; the last checkpoint is intact (lower --lr and resume)")]
    Diverged { loss: f64, step: u64 },
    #[error("checkpoint state: {0}")]
    State(#[from] serde_json::Error),
    #[error("{}: cannot write the log: {error}", path.display())]
    Log { path: PathBuf, error: std::io::Error },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Plot(#[from] crate::eval::plot::PlotError),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

type Result<T> = std::result::Result<T, TrainError>;

/// Gradients are clipped to this global norm.
pub const CLIP_NORM: f64 = 3.0;

/// What to train and how.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainOptions {
    /// A data-set file, the POP909 root, or a folder of MIDI files.
    pub data: PathBuf,
    /// CP (the product) or REMI-XL (the baseline).
    #[serde(default)]
    pub model: ModelKind,
    /// The model's shape by preset name (`small` when absent). With `init`, absent means the
    /// weights' own config, and a name starts that preset from the weights, whose tensors must
    /// fit it (e.g. `small-hybrid` from `small` weights: the same tensors, other attention).
    pub preset: Option<String>,
    pub out: PathBuf,
    /// Total optimizer steps (the cosine schedule ends here).
    pub steps: u64,
    pub batch_size: usize,
    /// Words (CP) or tokens (REMI) per window.
    pub window: usize,
    pub lr: f64,
    pub warmup: u64,
    /// Validate (and checkpoint) every this many steps.
    pub eval_every: u64,
    /// Also checkpoint at least this often (minutes).
    pub save_minutes: f64,
    pub seed: u64,
    pub cuda: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Transpose each training song by a random -5..+6 semitones per epoch (CP data only;
    /// validation stays as it is).
    #[serde(default)]
    pub transpose: bool,
    /// Start a new run from these weights (a weights folder, e.g. `weights/` or a run's
    /// `best/`) instead of a random model (see `preset` for the model's shape).
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// With `init`: the step the new run starts at, so the learning-rate schedule, the data
    /// order and the transpositions go on from there (a run carried to a fresh machine by its
    /// exported weights; only the optimizer's moments start again). 0: a run of its own.
    #[serde(default)]
    pub start_step: u64,
}

/// What the checkpoint remembers besides tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub step: u64,
    pub config: ModelConfig,
    pub options: TrainOptions,
    pub best_valid: Option<f64>,
    pub seconds: f64,
    pub words: u64,
}

/// Loads the data named by `--data` for a model kind: a data-set file, the POP909 root
/// (index.csv inside), or a plain folder of MIDI files (built on the fly).
pub fn load_data(path: &Path, kind: ModelKind, progress: bool) -> Result<Dataset> {
    let repr = kind.representation();
    let data = if path.is_file() {
        Dataset::load(path)?
    } else if path.join("index.csv").is_file() {
        dataset::build(&Source::Pop909(path.to_path_buf()), repr, progress)?
    } else if path.is_dir() {
        dataset::build(&Source::MidiFolder(path.to_path_buf()), repr, progress)?
    } else {
        return Err(TrainError::NoData(path.to_path_buf()));
    };
    if data.representation != repr {
        return Err(TrainError::WrongData { path: path.to_path_buf(), found: data.representation, kind, needs: repr });
    }
    Ok(data)
}

/// A run in progress.
struct Run {
    options: TrainOptions,
    model: Trainable,
    optimizer: AdamW,
    state: TrainState,
    device: Device,
}

impl Run {
    fn checkpoint_path(&self) -> PathBuf {
        self.options.out.join(CHECKPOINT_FILE)
    }

    fn save(&self) -> Result<()> {
        save_checkpoint(
            &self.checkpoint_path(),
            &self.model.named_tensors(),
            &self.optimizer.state_tensors(),
            serde_json::to_string(&self.state)?,
        )?;
        let config = serde_json::to_string_pretty(&self.state.config)?;
        Ok(export_weights(&self.options.out.join("last"), &config, &self.model.named_tensors(), DType::F32)?)
    }
}

/// A run folder's checkpoint (weights, optimizer state and run state; `--resume` reads it).
const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// A run folder's log (`log`).
const LOG_FILE: &str = "log.jsonl";

/// Refuses, before anything is loaded or written, a new run in a folder that already holds a
/// run's files (it would overwrite its checkpoint, best/, last/ and log), and a resume where
/// those files are but the checkpoint is not.
fn check_run_folder(out: &Path, resume: bool) -> Result<()> {
    let found: Vec<&str> = [CHECKPOINT_FILE, "best", "last", LOG_FILE].into_iter().filter(|name| out.join(name).exists()).collect();
    let has_checkpoint = out.join(CHECKPOINT_FILE).exists();
    let what = found.join(", ");
    match (resume, has_checkpoint, found.is_empty()) {
        (false, _, false) => Err(TrainError::RunExists { out: out.to_path_buf(), what }),
        (true, false, false) => Err(TrainError::NothingToResume { out: out.to_path_buf(), what }),
        _ => Ok(()),
    }
}

/// Trains (or resumes) a run. Returns the final state.
pub fn train(options: TrainOptions, resume: bool, stop: Arc<AtomicBool>) -> Result<TrainState> {
    check_run_folder(&options.out, resume)?;
    let device = crate::model::cp_transformer::device(options.cuda)?;
    let data = load_data(&options.data, options.model, options.progress)?;
    // Refused before the run folder is touched (a new run clears its log). Whether a song
    // gives a window does not depend on the window length, so this holds for the run's own.
    if windows(&data, Split::Train, options.window).is_empty() {
        return Err(TrainError::NoTrainingSongs(options.data.clone()));
    }
    std::fs::create_dir_all(&options.out).map_err(|error| TrainError::CreateFolder { path: options.out.clone(), error })?;
    let checkpoint = options.out.join(CHECKPOINT_FILE);
    let log_path = options.out.join(LOG_FILE);
    let mut run = if resume && checkpoint.exists() {
        let ck = load_checkpoint(&checkpoint, &device)?;
        let mut state: TrainState = serde_json::from_str(&ck.state_json)?;
        if state.config.kind() != options.model {
            return Err(TrainError::WrongRun { out: options.out.clone(), found: state.config.kind() });
        }
        let model = Trainable::new(state.config.clone(), state.options.seed, &device)?;
        model.load(&ck.model)?;
        let mut optimizer = AdamW::new(model.named_vars(), AdamWConfig::default())?;
        optimizer.load_state(|n| ck.optimizer.get(n).cloned(), state.step)?;
        // The run keeps its shape; only its length, data path and device may change.
        let mut kept = state.options.clone();
        kept.steps = options.steps;
        kept.data = options.data.clone();
        kept.cuda = options.cuda;
        kept.progress = options.progress;
        kept.out = options.out.clone();
        kept.transpose = options.transpose;
        state.options = kept.clone();
        // Log lines after the checkpoint are redone: drop them so the curve stays one curve.
        let lines: Vec<LogLine> = read_log(&log_path).into_iter().filter(|l| l.step <= state.step).collect();
        let text: String = lines.iter().map(|l| serde_json::to_string(l).expect("log line") + "\n").collect();
        dataset::write_atomically(&log_path, text.as_bytes())?;
        Run { options: kept, model, optimizer, state, device }
    } else {
        if resume {
            eprintln!("note: {} has no checkpoint; starting a new run", options.out.display());
        }
        let (config, model) = match &options.init {
            Some(dir) => {
                let weights = crate::model::weights::Weights::load_dir(dir)?;
                let config = match &options.preset {
                    Some(name) => options.model.preset(name).ok_or_else(|| TrainError::UnknownPreset(name.clone()))?,
                    None => weights.model_config()?,
                };
                if config.kind() != options.model {
                    return Err(TrainError::WrongInit { dir: dir.clone(), found: config.kind() });
                }
                let model = Trainable::new(config.clone(), options.seed, &device)?;
                model.load(&weights.tensors).map_err(|error| TrainError::InitMismatch { dir: dir.clone(), error })?;
                (config, model)
            }
            None => {
                let name = options.preset.as_deref().unwrap_or("small");
                let config = options.model.preset(name).ok_or_else(|| TrainError::UnknownPreset(name.to_string()))?;
                let model = Trainable::new(config.clone(), options.seed, &device)?;
                (config, model)
            }
        };
        if options.start_step > 0 && (options.init.is_none() || options.start_step >= options.steps) {
            return Err(TrainError::StartStep { start: options.start_step, steps: options.steps });
        }
        let optimizer = AdamW::new(model.named_vars(), AdamWConfig::default())?;
        let _ = std::fs::remove_file(&log_path);
        let state = TrainState { step: options.start_step, config, options: options.clone(), best_valid: None, seconds: 0.0, words: 0 };
        Run { options, model, optimizer, state, device }
    };
    let o = run.options.clone();
    if o.transpose && o.model != ModelKind::Cp {
        return Err(TrainError::TransposeNotCp(o.model));
    }
    // The windows come from the run's own options: a resumed run keeps its window length
    // whatever the command line says, so its data and validation loss stay the same.
    let train_windows = windows(&data, Split::Train, o.window);
    let valid_windows = windows(&data, Split::Valid, o.window);
    let batches_per_epoch = epoch_batches(&train_windows, o.batch_size, o.seed, 0).len() as u64;
    eprintln!(
        "training {} parameters on {} train / {} validation windows ({} words per window, batch {}), {} batches per epoch; from step {} to {}",
        run.model.parameter_count(),
        train_windows.len(),
        valid_windows.len(),
        o.window,
        o.batch_size,
        batches_per_epoch,
        run.state.step,
        o.steps
    );
    let bar = if o.progress { ProgressBar::new(o.steps) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed_precise} eta {eta_precise} {msg}")
            .expect("static template"),
    );
    bar.set_position(run.state.step);
    let mut epoch_cache: Option<(u64, Vec<Vec<Window>>)> = None;
    let mut last_save = Instant::now();
    let mut window_start = Instant::now();
    let mut window_words = 0u64;
    while run.state.step < o.steps && !stop.load(Ordering::SeqCst) {
        let step = run.state.step;
        let epoch = step / batches_per_epoch;
        if epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
            epoch_cache = Some((epoch, epoch_batches(&train_windows, o.batch_size, o.seed, epoch)));
        }
        let windows = &epoch_cache.as_ref().expect("just set").1[(step % batches_per_epoch) as usize];
        let started = Instant::now();
        let semitones: Vec<i32> = if o.transpose { windows.iter().map(|w| transposition(o.seed, epoch, w.song)).collect() } else { Vec::new() };
        let batch = make_batch(&data, windows, &semitones, run.state.config.d_model(), &run.device)?;
        let mut dropout = Dropout::new(run.state.config.dropout(), o.seed ^ (step + 1).wrapping_mul(0x9E3779B97F4A7C15));
        let (loss, _) = run.model.loss(&batch, Some(&mut dropout))?;
        let loss_value = loss.to_scalar::<f32>()? as f64;
        if !loss_value.is_finite() {
            return Err(TrainError::Diverged { loss: loss_value, step });
        }
        let grads = loss.backward()?;
        let lr = learning_rate(step, o.lr, o.warmup, o.steps);
        let norm = run.optimizer.step(&grads, lr, CLIP_NORM)?;
        let words: u64 = windows.iter().map(|w| w.len as u64).sum();
        run.state.step += 1;
        run.state.words += words;
        run.state.seconds += started.elapsed().as_secs_f64();
        window_words += words;
        bar.set_position(run.state.step);
        let step = run.state.step;
        if step % 10 == 0 || step == o.steps {
            let wps = window_words as f64 / window_start.elapsed().as_secs_f64();
            bar.set_message(format!("loss {loss_value:.3} lr {lr:.2e} {wps:.0} words/s"));
            append_log(&log_path, &LogLine::train(step, run.state.seconds, lr, loss_value, norm, wps)).map_err(|error| TrainError::Log { path: log_path.clone(), error })?;
            window_start = Instant::now();
            window_words = 0;
        }
        let evaluate = step % o.eval_every == 0 || step == o.steps;
        if evaluate && !valid_windows.is_empty() {
            let family = run.model.validation_loss(&data, &valid_windows, o.batch_size, &run.device)?;
            let mean = family.iter().sum::<f64>() / family.len() as f64;
            let summary: Vec<String> = run.state.config.loss_names().iter().zip(&family).map(|(n, l)| format!("{n} {l:.3}")).collect();
            bar.println(format!("step {step}: validation {mean:.4} ({})", summary.join(", ")));
            append_log(&log_path, &LogLine::valid(step, run.state.seconds, lr, family)).map_err(|error| TrainError::Log { path: log_path.clone(), error })?;
            if run.state.best_valid.is_none_or(|b| mean < b) {
                run.state.best_valid = Some(mean);
                let config = serde_json::to_string_pretty(&run.state.config)?;
                export_weights(&o.out.join("best"), &config, &run.model.named_tensors(), DType::F32)?;
            }
            window_start = Instant::now();
            window_words = 0;
        }
        if evaluate || last_save.elapsed().as_secs_f64() > o.save_minutes * 60.0 {
            run.save()?;
            log::plot_loss(&read_log(&log_path), &run.state.config.loss_names(), &o.out.join("loss.png"))?;
            last_save = Instant::now();
        }
    }
    run.save()?;
    log::plot_loss(&read_log(&log_path), &run.state.config.loss_names(), &o.out.join("loss.png"))?;
    bar.finish_and_clear();
    if stop.load(Ordering::SeqCst) {
        eprintln!("stopped at step {}: checkpoint saved in {}", run.state.step, o.out.display());
    }
    Ok(run.state)
}
