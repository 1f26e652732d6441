//! `cargo xtask`: project tasks.
//! - `train`, `eval`, `generate`, `bench`, `dataset`: run the `cp-piano` binary (release build;
//!   with the `cuda` feature when `--device cuda` is given).
//! - `bundle cp-piano --release [--no-editor]`: build the CLAP and VST3 bundles into
//!   target/bundled/ (nice-plug's bundler, configured by bundler.toml), with the editor unless
//!   `--no-editor` is given (the editor needs X11 and OpenGL libraries).
//! - `test`: bundle the plugin's test build (with the editor, and aborting if `process`
//!   allocates), then run `cargo test --release` with the same features and CP_PIANO_BUNDLES
//!   naming target/bundled (the test hosts load those bundles; without it they skip).

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
            // The tests build with the bundle's features, so dependencies compile once.
            let features = "assert-no-alloc,editor";
            let bundle = ["bundle", "cp-piano", "--release", "--features", features].map(String::from);
            if let Err(e) = nice_plug_xtask::main_with_args("cargo xtask", bundle) {
                eprintln!("error: bundling the test build: {e:#}");
                return ExitCode::FAILURE;
            }
            // The host tests load the bundles from the folder named here (plain `cargo test`
            // leaves it unset, and they skip).
            let bundles = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bundled");
            run(Command::new(&cargo).args(["test", "--release", "--features", features]).env("CP_PIANO_BUNDLES", bundles).args(&args[1..]))
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
        // Bundles get the editor unless `--no-editor` is given.
        Some("bundle") if !args.iter().any(|a| a == "--features" || a.starts_with("--features=")) => {
            let no_editor = args.iter().any(|a| a == "--no-editor");
            let mut args: Vec<String> = args.into_iter().filter(|a| a != "--no-editor").collect();
            if !no_editor {
                args.extend(["--features".to_string(), "editor".to_string()]);
            }
            match nice_plug_xtask::main_with_args("cargo xtask", args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
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
