//! Evaluation behind `cargo xtask eval` / `cp-piano eval`: the metrics of `metrics` over a
//! folder of MIDI files, and the side-by-side comparison of the paper: N songs from the CP model
//! and from the REMI-XL baseline (the same seeds and caps), the POP909 validation songs as the
//! reference, each model's validation loss, then a markdown report and PNG figures (metric bars
//! against the data, one piano roll per model) in the output folder; and the ship check of a
//! candidate CP model against issue 8's section-4 targets, next to the shipped model
//! (`targets`).

pub mod metrics;
pub mod plot;
pub mod targets;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::data::batches::windows;
use crate::model::weights::{Weights, WeightsError};
use crate::data::dataset::{self, DatasetError, Representation, Source, Split};
use crate::generate::form::Form;
use crate::generate::sampling::{SamplingSettings, DEFAULT_DESCRIPTION};
use crate::generate::{Finish, GenerationSettings, Generator};
use crate::music::grid::Grid;
use crate::eval::metrics::{mean, SongMetrics};
use crate::midi::import::{import_file, ImportError};
use crate::model::cp_rnn::CpRnn;
use crate::model::cpu::{LoadError, Precision};
use crate::model::remi_xl_stream::RemiXlStream;
use crate::model::{ModelKind, Trainable};
use plot::{MetricPanel, PlotError, Rgb, BLUE, RED};
use crate::generate::remi::{RemiGenerator, RemiSettings};
use crate::midi::pop909;
use crate::tokens::cp;

/// Why an evaluation could not run or write its report.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{}: cannot read the folder: {error}", dir.display())]
    ReadFolder { dir: PathBuf, error: std::io::Error },
    #[error("{}: no .mid files in it or its sub-folders", .0.display())]
    NoMidi(PathBuf),
    #[error("the {kind:?} model needs {needs:?} data")]
    WrongData { kind: ModelKind, needs: Representation },
    #[error("the data set has no {0:?} songs")]
    NoSongs(Split),
    #[error("{}: cannot create: {error}", path.display())]
    CreateFolder { path: PathBuf, error: std::io::Error },
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Model(#[from] LoadError),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Plot(#[from] PlotError),
}

type Result<T> = std::result::Result<T, EvalError>;

/// One evaluated song.
#[derive(Debug, Clone)]
pub struct SongResult {
    pub name: String,
    pub metrics: SongMetrics,
    /// Words (CP) or tokens (REMI) of the song.
    pub steps: usize,
    /// Whether the model ended the song itself (generated songs only).
    pub eos: Option<bool>,
    /// Seconds to generate it, one thread (generated songs only).
    pub seconds: Option<f64>,
    pub grid: Grid,
}

/// Songs from one source with what is known about the source.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    /// "word" or "token".
    pub unit: &'static str,
    pub songs: Vec<SongResult>,
    pub parameters: Option<usize>,
    pub validation_loss: Option<f64>,
}

/// Means over a group's songs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub songs: usize,
    pub eos_rate: Option<f64>,
    pub steps: f64,
    pub bars: f64,
    pub notes: f64,
    pub h1: f64,
    pub h4: f64,
    pub gs: f64,
    pub cpi: f64,
    pub longest_repeat: f64,
    pub seconds_per_song: Option<f64>,
    pub ms_per_step: Option<f64>,
}

impl Group {
    pub fn summary(&self) -> Summary {
        let m = |f: &dyn Fn(&SongResult) -> f64| mean(&self.songs.iter().map(f).collect::<Vec<_>>());
        let eos: Vec<bool> = self.songs.iter().filter_map(|s| s.eos).collect();
        let seconds: Vec<f64> = self.songs.iter().filter_map(|s| s.seconds).collect();
        let total_steps: usize = self.songs.iter().filter(|s| s.seconds.is_some()).map(|s| s.steps).sum();
        Summary {
            songs: self.songs.len(),
            eos_rate: (!eos.is_empty()).then(|| eos.iter().filter(|&&e| e).count() as f64 / eos.len() as f64),
            steps: m(&|s| s.steps as f64),
            bars: m(&|s| s.metrics.bars as f64),
            notes: m(&|s| s.metrics.notes as f64),
            h1: m(&|s| s.metrics.h1),
            h4: m(&|s| s.metrics.h4),
            gs: m(&|s| s.metrics.gs),
            cpi: m(&|s| s.metrics.cpi),
            longest_repeat: m(&|s| s.metrics.longest_repeat_bars as f64),
            seconds_per_song: (!seconds.is_empty()).then(|| mean(&seconds)),
            ms_per_step: (total_steps > 0).then(|| seconds.iter().sum::<f64>() * 1000.0 / total_steps as f64),
        }
    }
}

fn progress_bar(len: usize, what: &str, show: bool) -> ProgressBar {
    let bar = if show { ProgressBar::new(len as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} {elapsed_precise} eta {eta_precise}").expect("static template"));
    bar.set_message(what.to_string());
    bar
}

/// Files that do not import, each as (name, reason).
pub type Skipped = Vec<(String, String)>;

/// The metrics of every MIDI file in `dir` (sorted by name), and the files that do not import.
pub fn folder_metrics(dir: &Path, progress: bool) -> Result<(Vec<SongResult>, Skipped)> {
    let paths = crate::midi::midi_files(dir).map_err(|error| EvalError::ReadFolder { dir: dir.to_path_buf(), error })?;
    if paths.is_empty() {
        return Err(EvalError::NoMidi(dir.to_path_buf()));
    }
    let bar = progress_bar(paths.len(), "songs", progress);
    let results: Vec<std::result::Result<SongResult, (String, String)>> = paths
        .par_iter()
        .map(|path| {
            // Named by the path under `dir`, so songs of different sub-folders stay apart.
            let name = path.strip_prefix(dir).unwrap_or(path).to_string_lossy().into_owned();
            let song = import_file(path).map_err(|e| (name.clone(), e.to_string()));
            bar.inc(1);
            let grid = Grid::from_song(&song?);
            Ok(SongResult { name, metrics: SongMetrics::of(&grid), steps: cp::encode(&grid).len(), eos: None, seconds: None, grid })
        })
        .collect();
    bar.finish_and_clear();
    let (ok, bad): (Vec<_>, Vec<_>) = results.into_iter().partition(|r| r.is_ok());
    Ok((ok.into_iter().map(|r| r.expect("ok")).collect(), bad.into_iter().map(|r| r.expect_err("err")).collect()))
}

/// Songs with seeds 0..n, in parallel (each song on one thread): `write(seed)` returns the
/// song's grid, its words or tokens, and why it ended.
fn generate_songs(n: usize, what: &str, progress: bool, write: impl Fn(u64) -> (Grid, usize, Option<Finish>) + Sync) -> Vec<SongResult> {
    let bar = progress_bar(n, what, progress);
    let songs = (0..n as u64)
        .into_par_iter()
        .map(|seed| {
            let start = Instant::now();
            let (grid, steps, finish) = write(seed);
            let seconds = start.elapsed().as_secs_f64();
            bar.inc(1);
            SongResult { name: format!("seed {seed}"), metrics: SongMetrics::of(&grid), steps, eos: Some(finish == Some(Finish::Eos)), seconds: Some(seconds), grid }
        })
        .collect();
    bar.finish_and_clear();
    songs
}

/// Generates songs with seeds 0..n from the CP model.
pub fn generate_cp(model: &CpRnn, n: usize, settings: &GenerationSettings, progress: bool) -> Vec<SongResult> {
    generate_songs(n, "CP songs", progress, |seed| {
        let mut generator = Generator::new(model, GenerationSettings { seed, ..settings.clone() });
        let grid = generator.run_to_end();
        (grid, generator.words().len(), generator.finish())
    })
}

/// Generates songs with seeds 0..n from the REMI-XL model with the seed's sampling.
pub fn generate_remi(model: &RemiXlStream, n: usize, settings: &RemiSettings, progress: bool) -> Vec<SongResult> {
    generate_songs(n, "REMI-XL songs", progress, |seed| {
        let mut generator = RemiGenerator::with_prime(model, RemiSettings { seed, ..settings.clone() }, &[]);
        let grid = generator.run_to_end();
        (grid, generator.tokens().len(), generator.finish())
    })
}

/// The teacher-forced loss of `weights` on the songs of one split of `data`, each song whole
/// (with its true positions): CP, one cross-entropy per family (family order); REMI, one per
/// token. Means per word (token).
pub fn teacher_forced_loss(weights: &Weights, data: &dataset::Dataset, split: Split) -> Result<Vec<f64>> {
    let config = weights.model_config()?;
    if config.kind().representation() != data.representation {
        return Err(EvalError::WrongData { kind: config.kind(), needs: config.kind().representation() });
    }
    let model = Trainable::new(config, 0, &Device::Cpu)?;
    model.load(&weights.tensors)?;
    let longest = data.songs.iter().map(|s| s.len).max().unwrap_or(1);
    let songs = windows(data, split, longest);
    if songs.is_empty() {
        return Err(EvalError::NoSongs(split));
    }
    Ok(model.validation_loss(data, &songs, 1, &Device::Cpu)?)
}

/// The mean validation loss of `weights` on the validation songs of `data`, whole songs: CP,
/// the mean of the seven families' cross-entropies per word; REMI, the cross-entropy per token.
pub fn validation_loss(weights: &Weights, data: &dataset::Dataset) -> Result<f64> {
    let losses = teacher_forced_loss(weights, data, Split::Valid)?;
    Ok(losses.iter().sum::<f64>() / losses.len() as f64)
}

/// How the model ends songs, teacher-forced on real ones: the probability it gives EOS after
/// each song's closing Bar word (its true end), against after every other Bar word.
#[derive(Debug, Clone, PartialEq)]
pub struct EndingReport {
    pub songs: usize,
    /// Mean and median P(EOS) at the true ends.
    pub at_end_mean: f64,
    pub at_end_median: f64,
    /// Mean P(EOS) after the other bar lines.
    pub elsewhere_mean: f64,
    /// Share of songs whose true end has a higher P(EOS) than every other bar line of the song.
    pub end_is_highest: f64,
}

/// The CP model of `weights` in recurrent form (f32) and the songs of `split` as words, for
/// the word-by-word teacher-forced measurements.
fn recurrent_model_and_songs(weights: &Weights, data: &dataset::Dataset, split: Split) -> Result<(CpRnn, Vec<Vec<cp::Word>>)> {
    let config = weights.cp_config()?;
    if data.representation != Representation::Cp {
        return Err(EvalError::WrongData { kind: ModelKind::Cp, needs: Representation::Cp });
    }
    let model = CpRnn::from_tensors(&config, &weights.tensors, Precision::F32)?;
    let songs: Vec<Vec<cp::Word>> = data
        .split(split)
        .map(|song| data.song_tokens(song).chunks(cp::FAMILIES).map(|w| cp::Word(std::array::from_fn(|f| w[f]))).collect())
        .collect();
    if songs.is_empty() {
        return Err(EvalError::NoSongs(split));
    }
    Ok((model, songs))
}

/// `EndingReport` for the CP model of `weights` on the songs of `split` (the recurrent model, f32,
/// word by word on one thread).
pub fn song_endings(weights: &Weights, data: &dataset::Dataset, split: Split) -> Result<EndingReport> {
    use crate::tokens::cp::TYPE_EOS;
    let (model, songs) = recurrent_model_and_songs(weights, data, split)?;
    let per_song: Vec<(Option<f64>, Vec<f64>)> = songs
        .par_iter()
        .map(|words| {
            let mut state = model.new_state();
            let mut logits = vec![0f32; 3];
            let (mut end, mut elsewhere) = (None, Vec::new());
            for (i, word) in words.iter().enumerate().take(words.len().saturating_sub(1)) {
                model.step(&mut state, *word);
                if !word.is_bar() {
                    continue;
                }
                model.type_logits(&state, &mut logits);
                let top = logits.iter().fold(f32::MIN, |a, &b| a.max(b));
                let total: f64 = logits.iter().map(|&l| ((l - top) as f64).exp()).sum();
                let p_eos = ((logits[TYPE_EOS as usize] - top) as f64).exp() / total;
                if words[i + 1].get(crate::tokens::cp::Family::Type) == TYPE_EOS {
                    end = Some(p_eos);
                } else {
                    elsewhere.push(p_eos);
                }
            }
            (end, elsewhere)
        })
        .collect();
    let mut ends: Vec<f64> = per_song.iter().filter_map(|s| s.0).collect();
    ends.sort_by(f64::total_cmp);
    let others: Vec<f64> = per_song.iter().flat_map(|s| s.1.iter().copied()).collect();
    let highest = per_song.iter().filter(|(end, rest)| end.is_some_and(|e| rest.iter().all(|&r| r < e))).count();
    Ok(EndingReport {
        songs: ends.len(),
        at_end_mean: mean(&ends),
        at_end_median: ends.get(ends.len() / 2).copied().unwrap_or(f64::NAN),
        elsewhere_mean: mean(&others),
        end_is_highest: highest as f64 / ends.len().max(1) as f64,
    })
}

/// How well the model predicts bars that repeat, teacher-forced on real songs: the mean loss
/// (the seven families' cross-entropies, as in training) of the words of bars whose words repeat
/// an earlier bar of the song exactly, against the words of the other bars. A model that copies
/// what it has heard predicts the repeats far better than the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatReport {
    /// Words in repeating bars, and in the other bars (Bar words excluded).
    pub repeated_words: usize,
    pub other_words: usize,
    pub repeated_loss: f64,
    pub other_loss: f64,
}

/// `RepeatReport` for the CP model of `weights` on the songs of `split` (the recurrent model,
/// f32, word by word).
pub fn repeated_bars(weights: &Weights, data: &dataset::Dataset, split: Split) -> Result<RepeatReport> {
    use crate::tokens::cp::{Family, Word, FAMILIES};
    use std::collections::HashSet;
    let (model, songs) = recurrent_model_and_songs(weights, data, split)?;
    let cross_entropy = |logits: &[f32], target: usize| -> f64 {
        let top = logits.iter().fold(f32::MIN, |a, &b| a.max(b));
        let total: f64 = logits.iter().map(|&l| ((l - top) as f64).exp()).sum();
        total.ln() - (logits[target.min(logits.len() - 1)] - top) as f64
    };
    // Per song: (sum, count) of word losses in repeating bars, then in the others.
    let per_song: Vec<[(f64, usize); 2]> = songs
        .par_iter()
        .map(|words| {
            // Whether each word lies in a bar whose words (after its Bar word) repeat an earlier bar's.
            let mut repeats = vec![false; words.len()];
            let mut seen: HashSet<&[Word]> = HashSet::new();
            let starts: Vec<usize> = (0..words.len()).filter(|&i| words[i].is_bar()).chain([words.len()]).collect();
            for pair in starts.windows(2) {
                let body = &words[pair[0] + 1..pair[1]];
                if !body.is_empty() && !seen.insert(body) {
                    repeats[pair[0] + 1..pair[1]].fill(true);
                }
            }
            let mut state = model.new_state();
            let mut type_logits = vec![0f32; 3];
            let mut logits = model.logit_buffers();
            let mut sums = [(0.0, 0usize); 2];
            for i in 0..words.len().saturating_sub(1) {
                model.step(&mut state, words[i]);
                let next = words[i + 1];
                if next.is_bar() {
                    continue;
                }
                model.type_logits(&state, &mut type_logits);
                let word_type = next.get(Family::Type);
                model.family_logits(&mut state, word_type, &mut logits);
                let mut loss = cross_entropy(&type_logits, word_type as usize);
                for f in Family::ALL.into_iter().filter(|&f| f != Family::Type) {
                    loss += cross_entropy(&logits[f.index()], next.get(f) as usize);
                }
                let slot = &mut sums[if repeats[i + 1] { 0 } else { 1 }];
                slot.0 += loss / FAMILIES as f64;
                slot.1 += 1;
            }
            sums
        })
        .collect();
    let total = |k: usize| per_song.iter().fold((0.0, 0usize), |(s, n), song| (s + song[k].0, n + song[k].1));
    let ((rs, rn), (os, on)) = (total(0), total(1));
    Ok(RepeatReport { repeated_words: rn, other_words: on, repeated_loss: rs / rn.max(1) as f64, other_loss: os / on.max(1) as f64 })
}

/// What the comparison run uses.
pub struct CompareOptions {
    pub songs: usize,
    /// The POP909 root: the validation songs and the validation losses. `None` skips both.
    pub pop909: Option<PathBuf>,
    pub cp: Weights,
    pub remi_xl: Weights,
    /// Caps and minimum length shared by both models (each keeps its own sampling).
    pub min_bars: u32,
    /// The CP model's song form (the REMI-XL baseline has none).
    pub form: Form,
    pub out: PathBuf,
    pub progress: bool,
    /// The command line that reproduces the run, for the report.
    pub command: String,
}

/// Runs the comparison and writes `report.md`, `metrics.png`, `piano_roll_cp.png`,
/// `piano_roll_remi_xl.png` and the songs (`cp/seed_N.mid`, `remi-xl/seed_N.mid`) in `out`.
/// Returns the report.
pub fn compare(o: &CompareOptions) -> Result<String> {
    create_folder(&o.out)?;
    let count = |w: &Weights| w.tensors.values().map(|t| t.elem_count()).sum::<usize>();
    let cp_model = CpRnn::from_tensors(&o.cp.cp_config()?, &o.cp.tensors, Precision::Int8)?;
    let remi_model = RemiXlStream::from_tensors(&o.remi_xl.xl_config()?, &o.remi_xl.tensors, Precision::Int8)?;
    let base = GenerationSettings { min_bars: o.min_bars, form: o.form.clone(), ..GenerationSettings::default() };
    let cp_songs = generate_cp(&cp_model, o.songs, &base, o.progress);
    let remi_songs = generate_remi(&remi_model, o.songs, &RemiSettings { min_bars: o.min_bars, ..RemiSettings::default() }, o.progress);
    let mut groups = vec![
        Group { name: "CP + linear transformer".into(), unit: "word", songs: cp_songs, parameters: Some(count(&o.cp)), validation_loss: None },
        Group { name: "REMI + Transformer-XL".into(), unit: "token", songs: remi_songs, parameters: Some(count(&o.remi_xl)), validation_loss: None },
    ];
    for (group, dir) in groups.iter().zip(["cp", "remi-xl"]) {
        write_songs(&o.out.join(dir), &group.songs)?;
    }
    if let Some(root) = &o.pop909 {
        let cp_data = dataset::build(&Source::Pop909(root.clone()), Representation::Cp, false)?;
        let remi_data = dataset::build(&Source::Pop909(root.clone()), Representation::Remi, false)?;
        let bar = progress_bar(2, "validation losses", o.progress);
        groups[0].validation_loss = Some(validation_loss(&o.cp, &cp_data)?);
        bar.inc(1);
        groups[1].validation_loss = Some(validation_loss(&o.remi_xl, &remi_data)?);
        bar.finish_and_clear();
        groups.push(Group { name: "POP909 validation songs".into(), unit: "word", songs: validation_songs(root, &cp_data)?, parameters: None, validation_loss: None });
    }
    let models: [(&str, Rgb); 2] = [("CP", BLUE), ("REMI-XL", RED)];
    let summaries: Vec<Summary> = groups.iter().map(Group::summary).collect();
    let panel = |name: &'static str, f: fn(&Summary) -> f64| MetricPanel {
        name,
        values: summaries[..2].iter().map(f).collect(),
        reference: summaries.get(2).map(f),
    };
    plot::metric_bars(
        "metrics: generated songs against the data",
        &models,
        &[panel("H1", |s| s.h1), panel("H4", |s| s.h4), panel("GS", |s| s.gs), panel("CPI", |s| s.cpi), panel("longest repeat (bars)", |s| s.longest_repeat)],
        "POP909 validation songs",
        &o.out.join("metrics.png"),
    )?;
    plot::piano_roll("CP seed 0: first 16 bars", &groups[0].songs[0].grid, 16, BLUE, &o.out.join("piano_roll_cp.png"))?;
    plot::piano_roll("REMI-XL seed 0: first 16 bars", &groups[1].songs[0].grid, 16, RED, &o.out.join("piano_roll_remi_xl.png"))?;
    let report = report_markdown(&groups, o);
    dataset::write_atomically(&o.out.join("report.md"), report.as_bytes())?;
    Ok(report)
}

fn create_folder(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|error| EvalError::CreateFolder { path: path.to_path_buf(), error })
}

/// Writes generated songs to `dir` as `seed_N.mid`.
fn write_songs(dir: &Path, songs: &[SongResult]) -> Result<()> {
    create_folder(dir)?;
    for (i, song) in songs.iter().enumerate() {
        let bytes = crate::midi::export::export_bytes(&song.grid.to_song(), 0);
        dataset::write_atomically(&dir.join(format!("seed_{i}.mid")), &bytes)?;
    }
    Ok(())
}

/// The POP909 validation songs of `cp_data` (built from `root`), measured as the reference.
fn validation_songs(root: &Path, cp_data: &dataset::Dataset) -> Result<Vec<SongResult>> {
    cp_data
        .split(Split::Valid)
        .map(|entry| -> Result<SongResult> {
            let song = pop909::load_song(&pop909::song_dir(root, &entry.name))?;
            let grid = Grid::from_song(&song);
            Ok(SongResult { name: entry.name.clone(), metrics: SongMetrics::of(&grid), steps: entry.len, eos: None, seconds: None, grid })
        })
        .collect()
}

/// What the ship check uses.
pub struct CandidateOptions {
    pub songs: usize,
    /// The POP909 root: both validation losses and the data's H1, H4, GS and CPI, which those
    /// targets are relative to. `None` leaves those targets unjudged.
    pub pop909: Option<PathBuf>,
    pub candidate: Weights,
    /// The model it would replace (the shipped weights).
    pub shipped: Weights,
    /// Names of the two for the table (their folders).
    pub names: (String, String),
    /// Generation settings as the product's defaults, with this minimum length...
    pub min_bars: u32,
    /// ...this sampling, for both models (`SamplingSettings::default()`: the product's)...
    pub sampling: SamplingSettings,
    /// ...and this form (`Form::pop()`: the product's; `Form::free()`: the models alone).
    pub form: Form,
    pub out: PathBuf,
    pub progress: bool,
    pub command: String,
}

/// Issue 8's section-4 check: `songs` songs (seeds 0..N, int8, the product's default settings)
/// from the candidate and from the shipped model, each model's validation loss, and the table of
/// targets met. Writes `ship-check.md` and the songs (`candidate/seed_N.mid`,
/// `shipped/seed_N.mid`) in `out`; returns the report.
pub fn check_candidate(o: &CandidateOptions) -> Result<String> {
    create_folder(&o.out)?;
    let settings = GenerationSettings { min_bars: o.min_bars, sampling: o.sampling, form: o.form.clone(), ..GenerationSettings::default() };
    // The POP909 data first: a wrong path fails before a minute of generation, not after it.
    let pop909 = match &o.pop909 {
        Some(root) => Some((root, dataset::build(&Source::Pop909(root.clone()), Representation::Cp, false)?)),
        None => None,
    };
    let songs = |w: &Weights| -> Result<Vec<SongResult>> {
        let model = CpRnn::from_tensors(&w.cp_config()?, &w.tensors, Precision::Int8)?;
        Ok(generate_cp(&model, o.songs, &settings, o.progress))
    };
    let (candidate_songs, shipped_songs) = (songs(&o.candidate)?, songs(&o.shipped)?);
    write_songs(&o.out.join("candidate"), &candidate_songs)?;
    write_songs(&o.out.join("shipped"), &shipped_songs)?;
    let (mut losses, mut data) = ((None, None), None);
    if let Some((root, cp_data)) = &pop909 {
        let bar = progress_bar(2, "validation losses", o.progress);
        losses.0 = Some(validation_loss(&o.candidate, cp_data)?);
        bar.inc(1);
        losses.1 = Some(validation_loss(&o.shipped, cp_data)?);
        bar.finish_and_clear();
        let reference = validation_songs(root, cp_data)?;
        data = Some(Group { name: String::new(), unit: "word", songs: reference, parameters: None, validation_loss: None }.summary());
    }
    let rows = targets::rows(&targets::ShipFigures::of(&candidate_songs, losses.0), &targets::ShipFigures::of(&shipped_songs, losses.1), data.as_ref());
    let report = format!(
        "# Ship check (issue 8, section 4)\n\nCommand: `{}`\n\n{} songs per model, seeds 0..{}, int8, the product's default settings (no song ends before {} bars, \
         word cap 8,192), sampling {}, form {}.\n\n{}",
        o.command,
        o.songs,
        o.songs.saturating_sub(1),
        o.min_bars,
        if o.sampling == SamplingSettings::default() { DEFAULT_DESCRIPTION.to_string() } else { o.sampling.describe() },
        o.form,
        targets::report_markdown(&rows, &o.names.0, &o.names.1)
    );
    dataset::write_atomically(&o.out.join("ship-check.md"), report.as_bytes())?;
    Ok(report)
}

fn cell(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "-".into(),
    }
}

/// Which of CP and REMI-XL is better on a figure: `closer` compares distances to the data's
/// value, else `higher_better` says the direction.
fn verdict(cp: f64, remi: f64, data: Option<f64>, higher_better: bool) -> &'static str {
    let (a, b) = match data {
        Some(d) if d.is_finite() => (-(cp - d).abs(), -(remi - d).abs()),
        _ if higher_better => (cp, remi),
        _ => (-cp, -remi),
    };
    if !a.is_finite() || !b.is_finite() {
        "-"
    } else if (a - b).abs() < 1e-9 {
        "tie"
    } else if a > b {
        "CP"
    } else {
        "REMI-XL (CP does not beat it here)"
    }
}

/// The report: settings, the table of the seed's comparison with our numbers, figures.
pub fn report_markdown(groups: &[Group], o: &CompareOptions) -> String {
    let s: Vec<Summary> = groups.iter().map(Group::summary).collect();
    let data = s.get(2);
    let mut out = String::new();
    out.push_str("# CP + linear transformer against REMI + Transformer-XL\n\n");
    out.push_str(&format!("Command: `{}`\n\n", o.command));
    out.push_str(&format!(
        "{} songs per model, seeds 0..{}; both models int8 weights, one thread per song; no song ends before {} bars \
         (the product's default; EOS is masked until then for both); caps: CP 8,192 words, REMI-XL 7,680 tokens (the seed's). \
         Sampling: CP per family as {DEFAULT_DESCRIPTION}, REMI-XL temperature 1.2 and nucleus 0.9 (the seed's). \
         CP song form: {}.\n\n",
        o.songs,
        o.songs.saturating_sub(1),
        o.min_bars,
        o.form
    ));
    let header: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
    out.push_str(&format!("| | {} | better |\n|---|{}---|\n", header.join(" | "), "---|".repeat(groups.len())));
    let mut row = |name: &str, values: Vec<String>, better: &str| {
        out.push_str(&format!("| {name} | {} | {better} |\n", values.join(" | ")));
    };
    let pick = |f: &dyn Fn(&Summary) -> Option<f64>, digits: usize| s.iter().map(|x| cell(f(x), digits)).collect::<Vec<_>>();
    let vs = |f: &dyn Fn(&Summary) -> f64, to_data: bool, higher: bool| {
        verdict(f(&s[0]), f(&s[1]), if to_data { data.map(f) } else { None }, higher).to_string()
    };
    row("parameters", groups.iter().map(|g| g.parameters.map_or("-".into(), |p| format!("{p}"))).collect(), "");
    row(
        "validation loss (CP: mean of 7 families per word; REMI: per token; not comparable)",
        groups.iter().map(|g| cell(g.validation_loss, 4)).collect(),
        "",
    );
    row("time per song (s)", pick(&|x| x.seconds_per_song, 2), &vs(&|x| x.seconds_per_song.unwrap_or(f64::NAN), false, false));
    row("ms per word / token", pick(&|x| x.ms_per_step, 3), "");
    row("EOS rate (ended by itself)", pick(&|x| x.eos_rate, 2), &vs(&|x| x.eos_rate.unwrap_or(f64::NAN), false, true));
    row("words / tokens per song", pick(&|x| Some(x.steps), 0), "");
    row("bars per song", pick(&|x| Some(x.bars), 1), &vs(&|x| x.bars, true, true));
    row("notes per song", pick(&|x| Some(x.notes), 0), &vs(&|x| x.notes, true, true));
    row("H1 (pitch-class entropy, 1 bar)", pick(&|x| Some(x.h1), 3), &vs(&|x| x.h1, true, true));
    row("H4 (pitch-class entropy, 4 bars)", pick(&|x| Some(x.h4), 3), &vs(&|x| x.h4, true, true));
    row("GS (grooving similarity)", pick(&|x| Some(x.gs), 3), &vs(&|x| x.gs, true, true));
    row("CPI (chord progression irregularity)", pick(&|x| Some(x.cpi), 3), &vs(&|x| x.cpi, true, true));
    row("longest exact repeat (bars)", pick(&|x| Some(x.longest_repeat), 1), &vs(&|x| x.longest_repeat, true, false));
    out.push_str(
        "\n\"better\": for bars, notes and the MusDr metrics, the model whose mean is closer to the POP909 validation songs \
         (when they were measured); for time, lower; for EOS rate, higher. Metric definitions: `src/eval/metrics.rs`.\n\n",
    );
    out.push_str("![metrics against the data](metrics.png)\n\n![CP piano roll](piano_roll_cp.png)\n\n![REMI-XL piano roll](piano_roll_remi_xl.png)\n");
    out
}
