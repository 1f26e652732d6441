//! Every input the cargo-fuzz targets (fuzz/) crashed, hung or ran out of memory on, replayed
//! on stable through the same code (fuzz/checks.rs), plus one well-formed seed per target so each
//! check runs real code. Inputs live in tests/fuzz_regressions/<target>/.

include!("../fuzz/checks.rs");

fn replay(target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no inputs", dir.display());
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        // A panic here names the input.
        let result = std::panic::catch_unwind(|| check(&bytes));
        assert!(result.is_ok(), "{} crashed", path.display());
    }
}

#[test]
fn midi_import_inputs() {
    replay("midi_import", midi_import);
}

#[test]
fn saved_song_inputs() {
    replay("saved_song", saved_song);
}

#[test]
fn weights_inputs() {
    replay("weights", weights);
}

#[test]
fn dataset_header_inputs() {
    replay("dataset_header", dataset_header);
}
