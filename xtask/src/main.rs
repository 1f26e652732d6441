//! `cargo xtask`: project tasks.
//! - `train`, `eval`, `generate`, `bench`, `dataset`: run the `cp-piano` binary (release build;
//!   with the `cuda` feature when `--device cuda` is given).
//! - `bundle cp-piano --release`: build the CLAP and VST3 bundles into target/bundled/
//!   (nice-plug's bundler, configured by bundler.toml).
//! - `test`: bundle the plugin's test build (which aborts if `process` allocates), then run
//!   `cargo test --release` (the test hosts load those bundles).

use std::process::{Command, ExitCode};

const DELEGATED: [&str; 5] = ["train", "eval", "generate", "bench", "dataset"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let run = |command: &mut Command| match command.status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8),
        Err(e) => {
            eprintln!("error: cannot run cargo: {e}");
            ExitCode::FAILURE
        }
    };
    match args.first().map(String::as_str) {
        Some("test") => {
            let bundle = ["bundle", "cp-piano", "--release", "--features", "assert-no-alloc"].map(String::from);
            if let Err(e) = nice_plug_xtask::main_with_args("cargo xtask", bundle) {
                eprintln!("error: bundling the test build: {e:#}");
                return ExitCode::FAILURE;
            }
            run(Command::new(&cargo).args(["test", "--release"]).args(&args[1..]))
        }
        Some(task) if DELEGATED.contains(&task) => {
            let mut command = Command::new(&cargo);
            command.args(["run", "--release", "--package", "cp-piano", "--bin", "cp-piano"]);
            if args.windows(2).any(|w| w[0] == "--device" && w[1] == "cuda") || args.iter().any(|a| a == "--device=cuda") {
                command.args(["--features", "cuda"]);
            }
            command.arg("--").args(&args);
            run(&mut command)
        }
        _ => match nice_plug_xtask::main_with_args("cargo xtask", args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
