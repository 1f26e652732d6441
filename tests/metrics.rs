//! The MusDr metrics on hand-made songs with known values, the folder evaluation (bad files
//! reported, not fatal), and the comparison run end to end with small random models.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use cp_piano::music::chord::{Chord, Quality};
use cp_piano::model::weights::Weights;
use cp_piano::eval::{check_candidate, compare, folder_metrics, CandidateOptions, CompareOptions};
use cp_piano::music::grid::{Grid, GridNote, Slot};
use cp_piano::eval::metrics::{chord_progression_irregularity, grooving_similarity, irregularity, longest_repeat, pitch_class_entropy, SongMetrics};
use cp_piano::model::config::Config;
use cp_piano::model::remi_xl::XlConfig;
use cp_piano::model::{ModelConfig, Trainable};

/// A grid from (bar, position in bar, pitches, duration in 16ths).
fn grid(bars: u32, onsets: &[(u32, u32, &[u8], u8)]) -> Grid {
    let mut slots: Vec<Slot> = onsets
        .iter()
        .map(|&(bar, pos, pitches, duration)| Slot {
            position: bar * 16 + pos,
            tempo: None,
            chord: None,
            notes: pitches.iter().map(|&pitch| GridNote { pitch, duration, velocity: 10 }).collect(),
        })
        .collect();
    slots.sort_by_key(|s| s.position);
    Grid { bars, slots }
}

const C4: u8 = 60;

#[test]
fn pitch_class_entropy_over_one_and_four_bars() {
    // Bar 0: C, E, G once each (log2 3); bar 1: C and C an octave up (0); bar 2 empty (skipped);
    // bar 3: C D E F (2 bits).
    let g = grid(4, &[(0, 0, &[C4, C4 + 4, C4 + 7], 4), (1, 0, &[C4, C4 + 12], 4), (3, 0, &[C4, C4 + 2, C4 + 4, C4 + 5], 4)]);
    let h1 = pitch_class_entropy(&g, 1);
    assert!((h1 - (3f64.log2() + 0.0 + 2.0) / 3.0).abs() < 1e-9, "H1 {h1}");
    // One 4-bar window: C 4, E 2, G 1, D 1, F 1 of 9 onsets.
    let counts = [4.0f64, 2.0, 1.0, 1.0, 1.0];
    let expected: f64 = counts.iter().map(|c| -(c / 9.0) * (c / 9.0).log2()).sum();
    assert!((pitch_class_entropy(&g, 4) - expected).abs() < 1e-9);
    // Shorter than the window: no value.
    assert!(pitch_class_entropy(&grid(2, &[(0, 0, &[C4], 4)]), 4).is_nan());
}

#[test]
fn grooving_similarity_of_three_bars() {
    // Bars 0 and 1 on the four beats; bar 2 on the downbeat only: pairs 1, 13/16, 13/16.
    let beats: Vec<(u32, u32, &[u8], u8)> = (0..2).flat_map(|bar| (0..4).map(move |b| (bar, b * 4, &[C4][..], 2))).collect();
    let mut onsets = beats;
    onsets.push((2, 0, &[C4], 2));
    let gs = grooving_similarity(&grid(3, &onsets));
    assert!((gs - (1.0 + 2.0 * 13.0 / 16.0) / 3.0).abs() < 1e-9, "GS {gs}");
    assert!(grooving_similarity(&grid(1, &[(0, 0, &[C4], 2)])).is_nan());
}

#[test]
fn chord_progression_irregularity_counts_unique_trigrams() {
    let chord = |root, quality| Chord::Chord { root, quality };
    let (c, f, g) = (chord(0, Quality::Major), chord(5, Quality::Major), chord(7, Quality::Major));
    // C F G C F G: trigrams CFG FGC GCF CFG, 3 unique of 4.
    assert!((irregularity(&[c, f, g, c, f, g]) - 0.75).abs() < 1e-9);
    assert_eq!(irregularity(&[c, f]), 1.0);
    // The same progression played as whole-bar triads is heard by the chord recogniser.
    let triads: [&[u8]; 3] = [&[48, 52, 55], &[53, 57, 60], &[55, 59, 62]];
    let onsets: Vec<(u32, u32, &[u8], u8)> = (0..6).map(|bar| (bar, 0, triads[bar as usize % 3], 16)).collect();
    let cpi = chord_progression_irregularity(&grid(6, &onsets));
    assert!((cpi - 0.75).abs() < 1e-9, "CPI {cpi}");
}

#[test]
fn longest_repeat_finds_copied_bars_and_ignores_silence() {
    let a: &[u8] = &[60];
    let b: &[u8] = &[62];
    let c: &[u8] = &[64];
    let d: &[u8] = &[65];
    // A B C A B C D: the run A B C repeats.
    let bars = [a, b, c, a, b, c, d];
    let onsets: Vec<(u32, u32, &[u8], u8)> = bars.iter().enumerate().map(|(i, p)| (i as u32, 0, *p, 4)).collect();
    assert_eq!(longest_repeat(&grid(7, &onsets)), 3);
    // A, two empty bars, A, two empty bars: only the single bar A repeats.
    assert_eq!(longest_repeat(&grid(6, &[(0, 0, a, 4), (3, 0, a, 4)])), 1);
    // Same notes on another position of the bar are not a repeat.
    assert_eq!(longest_repeat(&grid(2, &[(0, 0, a, 4), (1, 2, a, 4)])), 0);
    let m = SongMetrics::of(&grid(7, &onsets));
    assert_eq!((m.bars, m.notes, m.longest_repeat_bars), (7, 7, 3));
}

#[test]
fn a_folder_is_measured_and_bad_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..2 {
        let song = common::quantised_song(seed, 8);
        std::fs::write(dir.path().join(format!("song{seed}.mid")), cp_piano::midi::export::export_bytes(&song, 0)).unwrap();
    }
    std::fs::write(dir.path().join("broken.mid"), b"not a midi file").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
    // Sub-folders are walked too (as Pop1K7's midi_analyzed/src_*/N.mid), songs named by path.
    let nested = dir.path().join("src_001");
    std::fs::create_dir(&nested).unwrap();
    std::fs::write(nested.join("1.mid"), cp_piano::midi::export::export_bytes(&common::quantised_song(7, 8), 0)).unwrap();
    let (songs, skipped) = folder_metrics(dir.path(), false).unwrap();
    assert_eq!(songs.len(), 3);
    assert!(songs.iter().any(|s| s.name == "src_001/1.mid"), "{:?}", songs.iter().map(|s| &s.name).collect::<Vec<_>>());
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0, "broken.mid");
    assert!(songs.iter().all(|s| s.metrics.bars >= 7 && s.metrics.notes > 0 && s.metrics.h1 > 0.0));
    assert!(folder_metrics(&dir.path().join("missing"), false).is_err());
}

fn weights_of(config: ModelConfig, seed: u64) -> Weights {
    let model = Trainable::new(config.clone(), seed, &Device::Cpu).unwrap();
    let tensors: HashMap<String, Tensor> = model.named_tensors().into_iter().collect();
    Weights { config_json: serde_json::to_string(&config).unwrap(), tensors }
}

#[test]
fn the_comparison_writes_a_report_figures_and_songs() {
    let out = tempfile::tempdir().unwrap();
    let options = CompareOptions {
        songs: 2,
        pop909: None,
        cp: weights_of(Config::preset("tiny").unwrap().into(), 1),
        remi_xl: weights_of(XlConfig::preset("tiny").unwrap().into(), 2),
        min_bars: 4,
        form: Default::default(),
        out: out.path().to_path_buf(),
        progress: false,
        command: "cp-piano eval --songs 2".into(),
    };
    let report = compare(&options).unwrap();
    for row in ["| time per song (s) |", "| EOS rate", "| H1 ", "| H4 ", "| GS ", "| CPI ", "| longest exact repeat", "`cp-piano eval --songs 2`"] {
        assert!(report.contains(row), "the report lacks {row:?}:\n{report}");
    }
    assert_eq!(std::fs::read_to_string(out.path().join("report.md")).unwrap(), report);
    for file in ["metrics.png", "piano_roll_cp.png", "piano_roll_remi_xl.png", "cp/seed_1.mid", "remi-xl/seed_1.mid"] {
        let bytes = std::fs::read(out.path().join(file)).unwrap_or_else(|_| panic!("{file} is missing"));
        assert!(bytes.len() > 100, "{file} is nearly empty");
    }
    // A generated song reads back as MIDI (the CP grammar mask guarantees notes).
    let song = cp_piano::midi::import::import_file(&out.path().join("cp/seed_0.mid")).unwrap();
    assert!(!song.notes.is_empty());
}

#[test]
fn the_ship_check_judges_a_candidate_next_to_the_shipped_model() {
    let out = tempfile::tempdir().unwrap();
    let tiny = || Config::preset("tiny").unwrap().into();
    let options = CandidateOptions {
        songs: 3,
        pop909: None,
        candidate: weights_of(tiny(), 1),
        shipped: weights_of(tiny(), 2),
        names: ("runs/a/best".into(), "weights".into()),
        min_bars: 4,
        sampling: Default::default(),
        form: Default::default(),
        out: out.path().to_path_buf(),
        progress: false,
        command: "cp-piano eval --candidate runs/a/best --songs 3".into(),
    };
    let report = check_candidate(&options).unwrap();
    for row in ["| validation loss", "| songs that end by EOS (%) | >= 95 |", "| median bars | 65.0-95.0 |", "| songs under 24 bars (%) | < 5 |", "| H1 ", "| H4 ", "| GS ", "| CPI ", "| longest exact repeat", "candidate: runs/a/best", "shipped: weights"] {
        assert!(report.contains(row), "the report lacks {row:?}:\n{report}");
    }
    // Without POP909 the loss and the four targets relative to the data stay unjudged.
    assert!(report.contains("(5 need --pop909)"), "{report}");
    assert_eq!(std::fs::read_to_string(out.path().join("ship-check.md")).unwrap(), report);
    // Each model's songs are written, and the same seed of the same weights gives the same song.
    for model in ["candidate", "shipped"] {
        assert!(cp_piano::midi::import::import_file(&out.path().join(model).join("seed_2.mid")).is_ok(), "{model}");
    }
    // A wrong POP909 folder is refused before any song is generated.
    let wrong = tempfile::tempdir().unwrap();
    let mut options = options;
    (options.out, options.pop909) = (wrong.path().to_path_buf(), Some(wrong.path().join("no-such-pop909")));
    let error = check_candidate(&options).unwrap_err();
    assert!(format!("{error:#}").contains("no-such-pop909"), "the error does not name the folder: {error:#}");
    assert!(!wrong.path().join("candidate").exists(), "songs were generated before the data was checked");
    // Other sampling applies to both models, and the report says which.
    let sampled = tempfile::tempdir().unwrap();
    (options.out, options.pop909) = (sampled.path().to_path_buf(), None);
    options.sampling = options.sampling.with_overrides(&["pitch=3:none".parse().unwrap()]);
    let report = check_candidate(&options).unwrap();
    assert!(report.contains("pitch 3 (no nucleus)"), "{report}");
    let song = |dir: &std::path::Path, model: &str| std::fs::read(dir.join(model).join("seed_1.mid")).unwrap();
    for model in ["candidate", "shipped"] {
        assert_ne!(song(out.path(), model), song(sampled.path(), model), "{model}: the sampling did not reach the songs");
    }
    let again = tempfile::tempdir().unwrap();
    check_candidate(&CandidateOptions { out: again.path().to_path_buf(), sampling: Default::default(), ..options }).unwrap();
    assert_eq!(std::fs::read(out.path().join("candidate/seed_1.mid")).unwrap(), std::fs::read(again.path().join("candidate/seed_1.mid")).unwrap());
}
