//! The `cp-piano` command line: a thin layer over the library. Every failure prints one line
//! naming the file and the reason, and exits non-zero.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use cp_piano::dataset::{self, Representation, Source, Split};
use cp_piano::grid::Grid;
use cp_piano::midi_import::import_file;
use cp_piano::round_trip::RoundTrip;
use cp_piano::{cp, remi};

// mimalloc reuses freed pages: candle allocates large temporaries every step, and the system
// allocator's fresh pages (page faults) cost a quarter of a training step.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        #[arg(long, default_value = "small")]
        preset: String,
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
        /// Words per training window.
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
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DeviceKind {
    Cpu,
    Cuda,
}

fn tokens(file: &PathBuf, repr: Representation, quiet: bool, pop909: bool) -> Result<()> {
    let song = if pop909 {
        cp_piano::pop909::load_song(file.parent().unwrap_or(file))
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
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train {
            data,
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
