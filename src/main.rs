//! The `cp-piano` command line: a thin layer over the library. Every failure prints one line
//! naming the file and the reason, and exits non-zero.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use cp_piano::data::dataset::{self, Representation, Source, Split};
use cp_piano::music::grid::Grid;
use cp_piano::midi::import::import_file;
use cp_piano::tokens::round_trip::RoundTrip;
use cp_piano::generate::{Finish, GenerationSettings, Generator, Inference};
use cp_piano::model::cpu::Precision;
use cp_piano::model::ModelKind;
use cp_piano::generate::remi::{RemiGenerator, RemiSettings, SEED_MAX_TOKENS, SEED_SAMPLING};
use cp_piano::generate::form::Form;
use cp_piano::generate::sampling::SamplingSettings;
use cp_piano::tokens::{cp, remi};

// mimalloc reuses freed pages: candle allocates large temporaries every step, and the system
// allocator's fresh pages (page faults) cost a quarter of a training step.
#[cfg(not(feature = "assert-no-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its place in the `mi_option_e` enum of mimalloc.h, the
/// same in the v2 and v3 sources libmimalloc-sys builds).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory in the process: by default mimalloc hands it back to the OS after a short
/// delay, shorter than a training step, so every step's big buffers came back as fresh pages
/// (page faults were ~15 % of a step).
fn keep_freed_memory() {
    // SAFETY: setting an option is allowed at any time; -1 means "never purge".
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// The REMI-XL baseline's weights (weights/remi-xl/), in this binary only: the plugin plays CP.
fn shipped_remi_xl() -> Option<(&'static str, &'static [u8])> {
    #[cfg(shipped_remi_xl)]
    {
        Some((
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/remi-xl/config.json")),
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/remi-xl/model.safetensors")),
        ))
    }
    #[cfg(not(shipped_remi_xl))]
    {
        None
    }
}

/// A data-set split on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SplitArg {
    Train,
    Validation,
}

#[derive(Parser)]
#[command(name = "cp-piano", version, about = "Compound Word Transformer pop-piano generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a MIDI file's tokens and how much of it survives encode -> decode.
    Tokens {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "cp")]
        repr: Representation,
        /// Print only the round-trip report, not every token.
        #[arg(long)]
        quiet: bool,
        /// Read FILE as a POP909 song (bars from the beat_midi.txt beside it).
        #[arg(long)]
        pop909: bool,
    },
    /// Build a data set file from a folder of MIDI files (or the POP909 data set).
    Dataset {
        /// Folder of .mid files, or the POP909 root with --pop909.
        #[arg(long)]
        midi: PathBuf,
        /// Read the folder as POP909 (index.csv, beat and downbeat annotations).
        #[arg(long)]
        pop909: bool,
        #[arg(long, value_enum, default_value = "cp")]
        repr: Representation,
        /// Output file.
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Train a model (or resume a run).
    Train {
        /// A data-set file, the POP909 root, or a folder of MIDI files (built on the fly).
        #[arg(long)]
        data: PathBuf,
        /// cp (the product) or remi-xl (the baseline).
        #[arg(long, value_enum, default_value = "cp")]
        model: ModelKind,
        /// paper, small, small-hybrid or tiny (default small). With --init: the weights' own
        /// config, unless a preset is named; its tensors must then match the weights'.
        #[arg(long)]
        preset: Option<String>,
        /// Run folder (checkpoint, exported weights, log, loss curve).
        #[arg(long)]
        out: PathBuf,
        /// Continue from the run folder's checkpoint.
        #[arg(long)]
        resume: bool,
        /// Total optimizer steps (the learning-rate schedule ends here).
        #[arg(long, default_value_t = 20_000)]
        steps: u64,
        #[arg(long, default_value_t = 2)]
        batch_size: usize,
        /// Words (CP) or tokens (REMI) per training window.
        #[arg(long, default_value_t = 2048)]
        window: usize,
        /// Peak learning rate.
        #[arg(long, default_value_t = 3e-4)]
        lr: f64,
        #[arg(long, default_value_t = 500)]
        warmup: u64,
        #[arg(long, default_value_t = 250)]
        eval_every: u64,
        #[arg(long, default_value_t = 10.0)]
        save_minutes: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceKind,
        /// Start from these weights (e.g. weights/ or a run's best/) instead of a random model.
        #[arg(long)]
        init: Option<PathBuf>,
        /// With --init: start at this step, so the learning-rate schedule, the data order and the
        /// transpositions go on from there (a run carried to a fresh machine by its exported
        /// weights; the optimizer's moments start again)
        #[arg(long, default_value_t = 0)]
        start_step: u64,
        /// Train CP on the songs as they are (by default each training song is transposed by a
        /// random -5..+6 semitones per epoch).
        #[arg(long)]
        no_transpose: bool,
    },
    /// Generate a song to a MIDI file (the shipped model unless --weights is given).
    Generate {
        #[arg(short, long)]
        out: PathBuf,
        /// cp (the product) or remi-xl (the baseline).
        #[arg(long, value_enum, default_value = "cp")]
        model: ModelKind,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// A weights folder (config.json + model.safetensors), e.g. a training run's best/.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Word cap (CP, default 8192) or token cap (REMI-XL, default 7680).
        #[arg(long)]
        max_words: Option<usize>,
        /// Stop after this many bars.
        #[arg(long)]
        max_bars: Option<u32>,
        /// Do not end (EOS) before this many bars.
        #[arg(long, default_value_t = GenerationSettings::default().min_bars)]
        min_bars: u32,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// A MIDI clip to continue (or a song to regenerate from a bar, with --prime-bars).
        #[arg(long)]
        prime: Option<PathBuf>,
        /// Use only the first N bars of the prime: the song goes on from bar N + 1.
        #[arg(long, requires = "prime")]
        prime_bars: Option<u32>,
        /// Keep pitches in a key, e.g. C, F#m, Bb, "E minor".
        #[arg(long)]
        key: Option<cp_piano::music::key::Key>,
        /// Follow a chord progression: "C G Am F" (one chord per bar) or "C:2 G:2 | Am F" (bars
        /// split by |, beats after a colon). The song ends when it does, unless --chords-loop.
        #[arg(long)]
        chords: Option<cp_piano::generate::chords::Progression>,
        /// Repeat the chord progression until the song ends.
        #[arg(long, requires = "chords")]
        chords_loop: bool,
        /// With --chords: the bonus (nats) on the pitch logits of the current chord's tones (0:
        /// the chord words alone steer).
        #[arg(long, requires = "chords", default_value_t = cp_piano::generate::CHORD_TONES)]
        chord_tones: f32,
        /// Write the two hands as two tracks: notes from middle C up on channel 1, below on 2.
        #[arg(long)]
        hands: bool,
        /// Fewer (-1) to more (+1) notes per bar; 0 leaves the model alone.
        #[arg(long, default_value_t = 0.0, allow_hyphen_values = true, value_parser = density)]
        density: f32,
        #[command(flatten)]
        form: FormArgs,
        /// Write K takes of the request (1-8, at seeds SEED..SEED+K-1, generated together):
        /// -o song.mid gives song-1.mid .. song-K.mid.
        #[arg(long)]
        variations: Option<usize>,
        /// Weight precision on the CPU: int8 is the fast path.
        #[arg(long, value_enum, default_value = "int8")]
        precision: Precision,
        /// cuda runs the CP model on GPU 0 (a build with the `cuda` feature; falls back to the
        /// CPU, saying so, when no GPU answers). REMI-XL generates on the CPU.
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceKind,
    },
    /// Print speed figures: generation ms per word (small and paper, f32 and int8, one thread)
    /// and training words/s.
    Bench {
        /// Words per timed song (the paper's mean song length).
        #[arg(long, default_value_t = 1430)]
        words: usize,
        /// Weights of the `small` model to time (default: the shipped weights).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Skip the training-speed figures.
        #[arg(long)]
        no_training: bool,
        /// Only the training-speed figures (and the GEMM figure they compare against).
        #[arg(long, conflicts_with = "no_training")]
        training_only: bool,
    },
    /// Metrics (H1, H4, GS, CPI, longest repeat, ...) of a folder of MIDI files, or, without
    /// --midi, the comparison of CP and REMI-XL against the POP909 validation songs.
    Eval {
        /// A folder of MIDI files to measure (instead of the comparison).
        #[arg(long)]
        midi: Option<PathBuf>,
        /// Songs per model (seeds 0..N) [default: 50 in the comparison, 100 with --candidate]
        #[arg(long)]
        songs: Option<usize>,
        /// Check these CP weights against issue 8's section-4 targets (the ship check), next
        /// to --cp-weights (default: the shipped model), instead of the comparison
        #[arg(long)]
        candidate: Option<PathBuf>,
        /// The POP909 root (validation songs and losses); the comparison skips both without it.
        #[arg(long)]
        pop909: Option<PathBuf>,
        /// CP weights (default: the shipped ones).
        #[arg(long)]
        cp_weights: Option<PathBuf>,
        /// REMI-XL weights (default: the shipped weights/remi-xl).
        #[arg(long)]
        remi_weights: Option<PathBuf>,
        /// Neither model ends a song before this many bars.
        #[arg(long, default_value_t = GenerationSettings::default().min_bars)]
        min_bars: u32,
        /// Sampling for the ship check (with --candidate), the same for both models.
        #[command(flatten)]
        sampling: SamplingArgs,
        /// The CP songs' form (both CP models in the ship check; the CP model in the comparison).
        #[command(flatten)]
        form: FormArgs,
        /// Output folder (report.md, figures, songs).
        #[arg(short, long, default_value = "runs/eval")]
        out: PathBuf,
    },
    /// Print the teacher-forced loss per family of a model on whole songs of a data set.
    Loss {
        /// A weights folder (default: the shipped CP weights).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// A data-set file, the POP909 root, or a folder of MIDI files.
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_enum, default_value = "validation")]
        split: SplitArg,
    },
    /// Copy a weights folder (e.g. a run's best/) into another, in bf16 (to ship) or f32.
    ExportWeights {
        /// A weights folder; given several times, their mean is exported (checkpoint
        /// averaging, e.g. a run's last three validation steps).
        #[arg(long, required = true)]
        from: Vec<PathBuf>,
        #[arg(long)]
        to: PathBuf,
        /// Keep f32 instead of converting to bf16.
        #[arg(long)]
        f32: bool,
    },
}

/// How the CP model samples: the product's defaults, changed by these flags.
#[derive(clap::Args)]
struct SamplingArgs {
    /// Scales every family's sampling temperature (REMI-XL: its 1.2).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Replaces the nucleus threshold of the families that use one (REMI-XL: its 0.9).
    #[arg(long)]
    top_p: Option<f32>,
    /// One family's sampling, after --temperature and --top-p: FAMILY=TEMPERATURE[:TOP_P],
    /// e.g. velocity=1.5 or duration=1:0.8 (TOP_P "none": the whole distribution). Families:
    /// tempo, chord, bar-beat, type, pitch, duration, velocity. Repeatable.
    #[arg(long = "family", value_name = "FAMILY=T[:P]")]
    families: Vec<cp_piano::generate::sampling::FamilyOverride>,
    /// Nats added to the EOS logit where EOS is drawn (above 0: songs end sooner).
    #[arg(long, allow_hyphen_values = true)]
    eos_bias: Option<f32>,
}

impl SamplingArgs {
    fn settings(&self) -> SamplingSettings {
        let settings = SamplingSettings::default().adjusted(self.temperature, self.top_p).with_overrides(&self.families);
        SamplingSettings { eos_bias: self.eos_bias.unwrap_or(settings.eos_bias), ..settings }
    }
}

/// The CP song's form (`generate::form`): the product's default unless these flags say otherwise.
#[derive(clap::Args)]
struct FormArgs {
    /// Section letters: a later section with an earlier one's letter repeats it bar for bar
    /// (ABABCB: verse, chorus, verse, chorus, bridge, chorus); past the last letter the song goes
    /// on free. "none": every bar sampled. Not applied with --chords.
    #[arg(long = "form", default_value = cp_piano::generate::form::POP_FORM)]
    letters: String,
    /// Bars in each section of --form (1-64).
    #[arg(long, default_value_t = cp_piano::generate::form::SECTION_BARS)]
    section_bars: u32,
}

impl FormArgs {
    fn form(&self) -> Result<Form> {
        use cp_piano::generate::form::FormError;
        Form::new(&self.letters, self.section_bars).map_err(|e| match e {
            FormError::SectionBars(_) => anyhow::anyhow!("--section-bars: {e}"),
            FormError::Letters(_) => anyhow::anyhow!("--form: {e}"),
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DeviceKind {
    Cpu,
    Cuda,
}

fn tokens(file: &Path, repr: Representation, quiet: bool, pop909: bool) -> Result<()> {
    let song = if pop909 {
        cp_piano::midi::pop909::load_song(file.parent().unwrap_or(file))
    } else {
        import_file(file)
    }
    .with_context(|| file.display().to_string())?;
    let grid = Grid::from_song(&song);
    let decoded = match repr {
        Representation::Cp => {
            let words = cp::encode(&grid);
            if !quiet {
                for (i, w) in words.iter().enumerate() {
                    println!("{i:6} {:?} {}", w.0, w.describe());
                }
            }
            println!("{} CP words, {} bars", words.len(), grid.bars);
            cp::decode(&words).grid
        }
        Representation::Remi => {
            let tokens = remi::encode(&grid);
            if !quiet {
                for (i, &t) in tokens.iter().enumerate() {
                    println!("{i:6} {t:3} {}", remi::describe(t));
                }
            }
            println!("{} REMI tokens, {} bars", tokens.len(), grid.bars);
            remi::decode(&tokens).grid
        }
    };
    println!("round trip: {}", RoundTrip::compare(&song, &decoded.to_song()).summary());
    Ok(())
}

/// Prints the summary line of a generated song and writes it.
#[allow(clippy::too_many_arguments)]
fn write_song(out: &Path, grid: &Grid, steps: usize, new: usize, finish: Option<Finish>, seconds: f64, unit: &str, hands: bool) -> Result<()> {
    let song = grid.to_song();
    let bytes = if hands { cp_piano::midi::export::export_hands(&song) } else { cp_piano::midi::export::export_bytes(&song, 0) };
    dataset::write_atomically(out, &bytes).with_context(|| out.display().to_string())?;
    println!(
        "{}: {steps} {unit}s ({new} new), {} bars, {} notes, EOS: {}, {:.2} s, {:.3} ms per {unit}",
        out.display(),
        grid.bars,
        song.notes.len(),
        match finish {
            Some(Finish::Eos) => "yes".to_string(),
            other => format!("no ({other:?})"),
        },
        seconds,
        seconds * 1000.0 / new.max(1) as f64
    );
    Ok(())
}

/// A prime clip, saying which sections in other meters import cut out of it.
fn import_prime(path: &std::path::Path) -> Result<cp_piano::music::song::Song> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let (song, dropped) = cp_piano::midi::import::import_reporting(&bytes).with_context(|| path.display().to_string())?;
    for d in dropped {
        eprintln!("note: {}: {d}", path.display());
    }
    Ok(song)
}

fn generate_remi(out: PathBuf, settings: RemiSettings, weights: Option<PathBuf>, prime: Option<PathBuf>, precision: Precision) -> Result<()> {
    let model = cp_piano::model::weights::load_remi_xl_stream(weights.as_deref(), shipped_remi_xl(), precision)?;
    let prime_tokens = match &prime {
        Some(path) => {
            let song = import_prime(path)?;
            remi::encode(&Grid::from_song(&song))
        }
        None => vec![remi::BAR],
    };
    let start = Instant::now();
    let mut generator = RemiGenerator::with_prime(&model, settings, &prime_tokens);
    let primed = generator.tokens().len();
    let grid = generator.run_to_end();
    let seconds = start.elapsed().as_secs_f64();
    write_song(&out, &grid, generator.tokens().len(), generator.tokens().len() - primed, generator.finish(), seconds, "token", false)
}

#[allow(clippy::too_many_arguments)]
fn generate(
    out: PathBuf,
    settings: GenerationSettings,
    weights: Option<PathBuf>,
    prime: Option<PathBuf>,
    prime_bars: Option<u32>,
    hands: bool,
    variations: Option<usize>,
    precision: Precision,
    device: DeviceKind,
) -> Result<()> {
    if let Some(k) = variations {
        cp_piano::generate::takes::check_count(k).context("--variations")?;
    }
    let (model, place) = Inference::load(weights.as_deref(), device == DeviceKind::Cuda, precision)?;
    if device == DeviceKind::Cuda {
        println!("generating on {place}");
    }
    match settings.form_in_force() {
        None if !settings.form.letters().is_empty() => println!("form {}: not applied while following --chords", settings.form),
        _ => println!("form: {}", settings.form),
    }
    let prime_words = match &prime {
        Some(path) => {
            cp_piano::generate::prime::from_clip(&import_prime(path)?, prime_bars)
        }
        None => vec![cp::Word::BAR],
    };
    if let Some(k) = variations {
        return generate_takes(&out, &model, &settings, &prime_words, k, hands);
    }
    let start = Instant::now();
    let generator = run_song(&model, settings, &prime_words)?;
    let primed = generator.primed();
    let grid = generator.grid();
    let seconds = start.elapsed().as_secs_f64();
    write_song(&out, &grid, generator.words().len(), generator.words().len() - primed, generator.finish(), seconds, "word", hands)?;
    if generator.copied() > 0 {
        println!("form: {} of the new words repeat earlier sections", generator.copied());
    }
    Ok(())
}

/// One song continuing `prime` to its end; a model failure is an error naming where it came.
fn run_song<'m>(model: &'m Inference, settings: GenerationSettings, prime: &[cp::Word]) -> Result<Generator<'m, Inference>> {
    let mut generator = Generator::try_with_prime(model, settings, prime).map_err(|e| anyhow::anyhow!("the model failed: {e}"))?;
    generator.run_to_end();
    if let Some(e) = generator.error() {
        anyhow::bail!("the model failed after {} words: {e}", generator.words().len());
    }
    Ok(generator)
}

/// K takes of one request: `stem-1.mid` .. `stem-K.mid` beside `out`. On the CPU they are
/// generated together (`Takes`); on a GPU one after another (the same songs).
fn generate_takes(out: &std::path::Path, model: &Inference, settings: &GenerationSettings, prime: &[cp::Word], k: usize, hands: bool) -> Result<()> {
    let start = Instant::now();
    // Each take: its words, how many of them it began with, how it ended.
    let takes: Vec<(Vec<cp::Word>, usize, Option<cp_piano::generate::Finish>)> = match model {
        Inference::Cpu(rnn) => {
            let mut takes = cp_piano::generate::takes::Takes::new(rnn, settings, prime, k)?;
            takes.run_to_end();
            takes.takes().iter().map(|t| (t.words().to_vec(), t.primed(), t.finish())).collect()
        }
        Inference::Device(_) => (0..k as u64)
            .map(|i| {
                let generator = run_song(model, GenerationSettings { seed: settings.seed.wrapping_add(i), ..settings.clone() }, prime)?;
                Ok((generator.words().to_vec(), generator.primed(), generator.finish()))
            })
            .collect::<Result<_>>()?,
    };
    let seconds = start.elapsed().as_secs_f64();
    let stem = out.file_stem().map_or_else(|| "song".into(), |s| s.to_string_lossy().into_owned());
    let new_words = |(words, primed, _): &(Vec<cp::Word>, usize, _)| words.len() - primed;
    let total: usize = takes.iter().map(new_words).sum();
    for (i, take) in takes.iter().enumerate() {
        let (words, _, finish) = take;
        let path = out.with_file_name(format!("{stem}-{}.mid", i + 1));
        let grid = cp::decode(words).grid;
        print!("take {} (seed {}): ", i + 1, settings.seed.wrapping_add(i as u64));
        // Each take's share of the time, by its words.
        let share = seconds * new_words(take) as f64 / total.max(1) as f64;
        write_song(&path, &grid, words.len(), new_words(take), *finish, share, "word", hands)?;
    }
    println!("{k} takes in {seconds:.2} s: {:.3} ms per word over all takes", seconds * 1000.0 / total.max(1) as f64);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn eval(midi: Option<PathBuf>, songs: Option<usize>, candidate: Option<PathBuf>, pop909: Option<PathBuf>, cp_weights: Option<PathBuf>, remi_weights: Option<PathBuf>, min_bars: u32, sampling: SamplingSettings, form: Form, out: PathBuf) -> Result<()> {
    use cp_piano::eval::{check_candidate, compare, folder_metrics, CandidateOptions, CompareOptions, Group};
    if let Some(dir) = midi {
        let (results, skipped) = folder_metrics(&dir, true)?;
        for (name, reason) in &skipped {
            println!("skipped {name}: {reason}");
        }
        for r in &results {
            let m = r.metrics;
            println!(
                "{}: {} bars, {} notes, H1 {:.3}, H4 {:.3}, GS {:.3}, CPI {:.3}, longest repeat {} bars",
                r.name, m.bars, m.notes, m.h1, m.h4, m.gs, m.cpi, m.longest_repeat_bars
            );
        }
        let s = Group { name: dir.display().to_string(), unit: "word", songs: results, parameters: None, validation_loss: None }.summary();
        println!(
            "mean of {} songs: {:.1} bars, {:.0} notes, H1 {:.3}, H4 {:.3}, GS {:.3}, CPI {:.3}, longest repeat {:.1} bars",
            s.songs, s.bars, s.notes, s.h1, s.h4, s.gs, s.cpi, s.longest_repeat
        );
        return Ok(());
    }
    let cp = cp_piano::model::weights::load_weights(cp_weights.as_deref())?;
    let command = std::iter::once("cp-piano".to_string()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ");
    let start = Instant::now();
    let report = if let Some(path) = candidate {
        let names = (path.display().to_string(), cp_weights.map_or("weights (shipped)".into(), |p| p.display().to_string()));
        let candidate = cp_piano::model::weights::load_weights(Some(&path))?;
        check_candidate(&CandidateOptions { songs: songs.unwrap_or(100).max(1), pop909, candidate, shipped: cp, names, min_bars, sampling, form, out: out.clone(), progress: true, command })?
    } else {
        let remi_xl = cp_piano::model::weights::load_remi_xl_weights(remi_weights.as_deref(), shipped_remi_xl())?;
        compare(&CompareOptions { songs: songs.unwrap_or(50).max(1), pop909, cp, remi_xl, min_bars, form, out: out.clone(), progress: true, command })?
    };
    println!("{report}");
    println!("written to {} in {:.0} s", out.display(), start.elapsed().as_secs_f64());
    Ok(())
}

fn build_dataset(midi: PathBuf, pop909: bool, repr: Representation, out: PathBuf) -> Result<()> {
    let start = Instant::now();
    let source = if pop909 { Source::Pop909(midi.clone()) } else { Source::MidiFolder(midi.clone()) };
    let data = dataset::build(&source, repr, true).with_context(|| midi.display().to_string())?;
    data.save(&out)?;
    let lens: Vec<usize> = data.songs.iter().map(|s| s.len).collect();
    let total: usize = lens.iter().sum();
    println!(
        "{}: {} songs ({} train, {} validation), {} steps; per song mean {:.0}, max {}; {} skipped; {:.1} s",
        out.display(),
        data.songs.len(),
        data.split(Split::Train).count(),
        data.split(Split::Valid).count(),
        total,
        total as f64 / lens.len() as f64,
        lens.iter().max().unwrap_or(&0),
        data.skipped.len(),
        start.elapsed().as_secs_f64()
    );
    for s in &data.skipped {
        println!("skipped {}: {}", s.name, s.reason);
    }
    // The reasons with their counts (where in a file it happened left out).
    let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
    for s in &data.skipped {
        *reasons.entry(s.reason.split(" at tick").next().unwrap_or(&s.reason)).or_default() += 1;
    }
    for (reason, count) in reasons {
        println!("skip reason: {count} x {reason}");
    }
    Ok(())
}

/// `--density`: a number in -1..=1.
fn density(text: &str) -> std::result::Result<f32, String> {
    match text.parse::<f32>() {
        Ok(d) if (-1.0..=1.0).contains(&d) => Ok(d),
        _ => Err(format!("{text:?}: density is a number from -1 to 1")),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate { out, model, seed, weights, max_words, max_bars, min_bars, sampling, prime, prime_bars, key, chords, chords_loop, chord_tones, hands, density, form, variations, precision, device } => {
            let form = form.form()?;
            if model == ModelKind::RemiXl && form != Form::pop() {
                anyhow::bail!("--form and --section-bars shape the CP model's songs; the REMI-XL baseline takes neither");
            }
            if model == ModelKind::RemiXl && (chords.is_some() || prime_bars.is_some() || density != 0.0 || variations.is_some() || !sampling.families.is_empty() || sampling.eos_bias.is_some()) {
                anyhow::bail!("--chords, --prime-bars, --density, --variations, --family and --eos-bias steer the CP model; the REMI-XL baseline takes none of them");
            }
            if model == ModelKind::RemiXl {
                // The baseline's own settings: one sampling for every token, a cap in tokens.
                let settings = RemiSettings {
                    seed,
                    sampling: cp_piano::generate::sampling::FamilySampling {
                        temperature: SEED_SAMPLING.temperature * sampling.temperature.max(1e-3),
                        top_p: sampling.top_p.map(|p| p.clamp(0.0, 1.0)).or(SEED_SAMPLING.top_p),
                    },
                    max_tokens: max_words.unwrap_or(SEED_MAX_TOKENS),
                    max_bars,
                    min_bars,
                    key,
                };
                return generate_remi(out, settings, weights, prime, precision);
            }
            let settings = GenerationSettings {
                seed,
                sampling: sampling.settings(),
                max_words: max_words.unwrap_or(GenerationSettings::default().max_words),
                max_bars,
                min_bars,
                key,
                chords,
                chords_loop,
                chord_tones,
                density,
                form,
            };
            generate(out, settings, weights, prime, prime_bars, hands, variations, precision, device)
        }
        Command::Bench { words, weights, no_training, training_only } => Ok(cp_piano::bench::print(words, weights.as_deref(), no_training, training_only)?),
        Command::Eval { midi, songs, candidate, pop909, cp_weights, remi_weights, min_bars, sampling, form, out } => {
            let sampling = sampling.settings();
            if candidate.is_none() && sampling != SamplingSettings::default() {
                anyhow::bail!("--temperature, --top-p and --family set the ship check's sampling (with --candidate); the comparison samples each model as its paper does");
            }
            eval(midi, songs, candidate, pop909, cp_weights, remi_weights, min_bars, sampling, form.form()?, out)
        }
        Command::Loss { weights, data, split } => {
            let weights = cp_piano::model::weights::load_weights(weights.as_deref())?;
            let kind = weights.model_config()?.kind();
            let data = cp_piano::train::load_data(&data, kind, true)?;
            let split = match split {
                SplitArg::Train => Split::Train,
                SplitArg::Validation => Split::Valid,
            };
            let start = Instant::now();
            let losses = cp_piano::eval::teacher_forced_loss(&weights, &data, split)?;
            let names = weights.model_config()?.loss_names();
            let mean = losses.iter().sum::<f64>() / losses.len() as f64;
            let parts: Vec<String> = names.iter().zip(&losses).map(|(n, l)| format!("{n} {l:.4}")).collect();
            let songs = data.songs.iter().filter(|s| s.split == split).count();
            println!("{:?} loss on {songs} whole {split:?} songs: {mean:.4} ({}), {:.0} s", kind, parts.join(", "), start.elapsed().as_secs_f64());
            if kind == ModelKind::Cp {
                let e = cp_piano::eval::song_endings(&weights, &data, split)?;
                println!(
                    "P(EOS) after the closing bar line, teacher-forced: mean {:.3}, median {:.3} over {} songs; after the other bar lines: mean {:.4}; the true end is the most likely end in {:.0} % of songs",
                    e.at_end_mean,
                    e.at_end_median,
                    e.songs,
                    e.elsewhere_mean,
                    e.end_is_highest * 100.0
                );
                let r = cp_piano::eval::repeated_bars(&weights, &data, split)?;
                println!(
                    "bars that repeat an earlier bar exactly: {:.1} % of the words, loss {:.4} per word; the other bars: loss {:.4}",
                    100.0 * r.repeated_words as f64 / (r.repeated_words + r.other_words).max(1) as f64,
                    r.repeated_loss,
                    r.other_loss
                );
            }
            Ok(())
        }
        Command::ExportWeights { from, to, f32 } => {
            let all = from.iter().map(|dir| cp_piano::model::weights::Weights::load_dir(dir)).collect::<Result<Vec<_>, _>>()?;
            let weights = cp_piano::model::weights::Weights::average(&all)?;
            weights.model_config()?;
            let mut tensors: Vec<(String, candle_core::Tensor)> = weights.tensors.into_iter().collect();
            tensors.sort_by(|a, b| a.0.cmp(&b.0));
            let dtype = if f32 { candle_core::DType::F32 } else { candle_core::DType::BF16 };
            cp_piano::model::weights::export_weights(&to, &weights.config_json, &tensors, dtype)?;
            let names: Vec<String> = from.iter().map(|p| p.display().to_string()).collect();
            let what = if names.len() > 1 { format!("the mean of {}", names.join(", ")) } else { names.concat() };
            println!("{what} -> {} ({dtype:?})", to.display());
            Ok(())
        }
        Command::Train {
            data,
            model,
            preset,
            out,
            resume,
            steps,
            batch_size,
            window,
            lr,
            warmup,
            eval_every,
            save_minutes,
            seed,
            device,
            init,
            start_step,
            no_transpose,
        } => {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            ctrlc::set_handler(move || {
                eprintln!("\nCtrl-C: saving a checkpoint after this step (press again to abort)");
                if flag.swap(true, Ordering::SeqCst) {
                    std::process::exit(130);
                }
            })?;
            let options = cp_piano::train::TrainOptions {
                data,
                model,
                preset,
                out,
                steps,
                batch_size,
                window,
                lr,
                warmup,
                eval_every: eval_every.max(1),
                save_minutes,
                seed,
                cuda: device == DeviceKind::Cuda,
                progress: true,
                init,
                start_step,
                transpose: model == ModelKind::Cp && !no_transpose,
            };
            let state = cp_piano::train::train(options, resume, stop)?;
            println!(
                "step {}: best validation loss {}, {:.0} s, {} words ({:.0} words/s)",
                state.step,
                state.best_valid.map_or("-".into(), |v| format!("{v:.4}")),
                state.seconds,
                state.words,
                state.words as f64 / state.seconds.max(1e-9)
            );
            Ok(())
        }
        Command::Tokens { file, repr, quiet, pop909 } => tokens(&file, repr, quiet, pop909),
        Command::Dataset { midi, pop909, repr, out } => build_dataset(midi, pop909, repr, out),
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    // `cp-piano tokens f.mid | head` ends quietly instead of panicking on a closed pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default SIGPIPE action at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
