//! The data-set builder: good files in, bad files reported, a file that loads back the same,
//! deterministic output, a stable split; and the CLI's one-line errors.

mod common;

use std::process::Command;

use common::{midi, quantised_song, Ev};
use cp_piano::data::dataset::{build, split_of, Dataset, Representation, Source, Split};
use cp_piano::midi::export::export_bytes;

fn folder_with_songs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..12 {
        std::fs::write(dir.path().join(format!("song{seed:02}.mid")), export_bytes(&quantised_song(seed, 6), 0)).unwrap();
    }
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    std::fs::write(dir.path().join("nested/deep.MID"), export_bytes(&quantised_song(99, 4), 0)).unwrap();
    std::fs::write(dir.path().join("broken.mid"), b"MThd\x00\x00\x00\x06garbage").unwrap();
    let waltz = midi(480, vec![vec![Ev::TimeSig(0, 3, 2), Ev::On(0, 0, 60, 100), Ev::Off(480, 0, 60)]]);
    std::fs::write(dir.path().join("waltz.mid"), waltz).unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a midi file, not even named like one").unwrap();
    dir
}

#[test]
fn builds_saves_and_loads_a_folder_reporting_bad_files() {
    let dir = folder_with_songs();
    for repr in [Representation::Cp, Representation::Remi] {
        let data = build(&Source::MidiFolder(dir.path().to_path_buf()), repr, false).unwrap();
        assert_eq!(data.songs.len(), 13);
        let skipped: Vec<&str> = data.skipped.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(skipped, vec!["broken.mid", "waltz.mid"]);
        assert!(data.skipped[1].reason.contains("not in 4/4"));
        let path = dir.path().join("data.bin");
        data.save(&path).unwrap();
        let loaded = Dataset::load(&path).unwrap();
        assert_eq!(loaded.songs, data.songs);
        assert_eq!(loaded.tokens, data.tokens);
        assert_eq!(loaded.skipped, data.skipped);
        for song in &loaded.songs {
            let tokens = loaded.song_tokens(song);
            assert_eq!(tokens.len(), song.len * repr.width());
            assert_eq!(song.split, split_of(&song.name));
        }
        // Two builds write identical bytes.
        let again = dir.path().join("again.bin");
        build(&Source::MidiFolder(dir.path().to_path_buf()), repr, false).unwrap().save(&again).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&again).unwrap());
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&again).unwrap();
    }
}

#[test]
fn the_split_is_stable_and_about_five_percent() {
    let valid = (0..10_000).filter(|i| split_of(&format!("song {i}")) == Split::Valid).count();
    assert!((400..600).contains(&valid), "{valid} of 10000 in validation");
    assert_eq!(split_of("001"), split_of("001"));
}

#[test]
fn damaged_data_set_files_are_refused_with_the_reason() {
    let dir = folder_with_songs();
    let data = build(&Source::MidiFolder(dir.path().to_path_buf()), Representation::Cp, false).unwrap();
    let path = dir.path().join("data.bin");
    data.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let e = format!("{:#}", Dataset::load(&path).unwrap_err());
    assert!(e.contains("truncated"), "{e}");
    std::fs::write(&path, b"hello").unwrap();
    let e = format!("{:#}", Dataset::load(&path).unwrap_err());
    assert!(e.contains("magic"), "{e}");
}

#[test]
fn the_cli_prints_one_line_errors_and_exits_non_zero() {
    let dir = folder_with_songs();
    let bin = env!("CARGO_BIN_EXE_cp-piano");
    let out = Command::new(bin).args(["tokens"]).arg(dir.path().join("broken.mid")).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("broken.mid") && stderr.contains("not a valid MIDI file"), "{stderr}");

    let out = Command::new(bin).args(["tokens", "--quiet"]).arg(dir.path().join("song03.mid")).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("same pitch and onset within a 16th: 100.00 %"), "{stdout}");

    let out_file = dir.path().join("set.bin");
    let out = Command::new(bin).args(["dataset", "--midi"]).arg(dir.path()).arg("-o").arg(&out_file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("skipped waltz.mid: not in 4/4"), "{stdout}");
    assert!(stdout.contains("skip reason: 1 x not in 4/4: time signature 3/4"), "{stdout}");
    assert!(Dataset::load(&out_file).is_ok());

    let out = Command::new(bin).args(["dataset", "--midi", "/no/such/folder", "-o"]).arg(&out_file).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/folder"));
}
