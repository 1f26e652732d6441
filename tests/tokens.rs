//! The foundation: CP and REMI round trips, word order, MIDI import rules and bad input.

mod common;

use common::{midi, quantised_song, Ev};
use cp_piano::tokens::cp::{self, Family, Word, TYPE_EOS, TYPE_METRICAL, TYPE_NOTE};
use cp_piano::music::grid::Grid;
use cp_piano::midi::export::export_bytes;
use cp_piano::midi::import::{import_bytes, ImportError};
use cp_piano::tokens::remi;
use cp_piano::tokens::round_trip::RoundTrip;

#[test]
fn cp_round_trip_of_quantised_songs_is_exact() {
    for seed in 0..20 {
        let song = quantised_song(seed, 12);
        let grid = Grid::from_song(&song);
        assert_eq!(grid.to_song().notes, song.notes, "seed {seed}: quantising a quantised song changed it");
        let decoded = cp::decode(&cp::encode(&grid));
        assert!(decoded.ended);
        assert_eq!(decoded.skipped, 0);
        assert_eq!(decoded.grid, grid, "seed {seed}");
        assert_eq!(decoded.grid.to_song(), grid.to_song());
    }
}

#[test]
fn a_transposed_song_decodes_to_the_transposed_notes_and_chords() {
    // The training augmentation: every note moves by the shift (folded by octaves into
    // 22..=107), every chord root moves with it, and timing, durations and velocities stay.
    use cp_piano::music::chord::Chord;
    use cp_piano::music::grid::fold_pitch;
    for (seed, shift) in [(1u64, 3i32), (2, -5), (3, 6), (4, -1)] {
        let grid = Grid::from_song(&quantised_song(seed, 12));
        let moved: Vec<Word> = cp::encode(&grid).into_iter().map(|w| w.transposed(shift)).collect();
        let decoded = cp::decode(&moved);
        assert!(decoded.ended && decoded.skipped == 0);
        let got = decoded.grid;
        assert_eq!(got.bars, grid.bars);
        assert_eq!(got.slots.len(), grid.slots.len());
        let mut chords = 0;
        for (a, b) in grid.slots.iter().zip(&got.slots) {
            assert_eq!((a.position, a.tempo), (b.position, b.tempo));
            let want_chord = a.chord.map(|c| match c {
                Chord::Chord { root, quality } => Chord::Chord { root: (root as i32 + shift).rem_euclid(12) as u8, quality },
                Chord::NoChord => Chord::NoChord,
            });
            chords += a.chord.is_some() as usize;
            assert_eq!(b.chord, want_chord);
            let mut want: Vec<(u8, u8, u8)> = a.notes.iter().map(|n| (fold_pitch((n.pitch as i32 + shift) as u8), n.duration, n.velocity)).collect();
            let mut have: Vec<(u8, u8, u8)> = b.notes.iter().map(|n| (n.pitch, n.duration, n.velocity)).collect();
            want.sort();
            have.sort();
            assert_eq!(have, want, "seed {seed}, shift {shift}, position {}", a.position);
        }
        assert!(chords > 0, "the fixture has chords");
    }
}

#[test]
fn remi_round_trip_of_quantised_songs_is_exact() {
    for seed in 0..20 {
        let grid = Grid::from_song(&quantised_song(seed, 12));
        let decoded = remi::decode(&remi::encode(&grid));
        assert!(decoded.ended);
        assert_eq!(decoded.skipped, 0);
        assert_eq!(decoded.grid, grid, "seed {seed}");
    }
}

#[test]
fn midi_file_round_trip_keeps_notes_and_tempos() {
    for seed in 0..5 {
        let song = quantised_song(seed, 8);
        let back = import_bytes(&export_bytes(&song, 0)).unwrap();
        assert_eq!(Grid::from_song(&back).to_song().notes, song.notes, "seed {seed}");
        let original = Grid::from_song(&song);
        let reread = Grid::from_song(&back);
        let tempos = |g: &Grid| g.slots.iter().filter_map(|s| s.tempo.map(|t| (s.position, t))).collect::<Vec<_>>();
        assert_eq!(tempos(&reread), tempos(&original));
        let report = RoundTrip::compare(&song, &back);
        assert_eq!(report.matched, song.notes.len());
    }
}

#[test]
fn words_follow_the_paper_order() {
    let grid = Grid::from_song(&quantised_song(3, 6));
    let words = cp::encode(&grid);
    assert_eq!(*words.last().unwrap(), Word::EOS);
    assert_eq!(words[words.len() - 2], Word::BAR);
    assert_eq!(words[0], Word::BAR);
    assert_eq!(words.iter().filter(|w| **w == Word::BAR).count(), grid.bars as usize + 1);
    assert_eq!(words.iter().filter(|w| w.get(Family::Type) == TYPE_EOS).count(), 1);
    let mut previous_pitch: Option<u16> = None;
    for (i, w) in words.iter().enumerate() {
        assert!(w.in_vocabulary());
        match w.get(Family::Type) {
            TYPE_NOTE => {
                let prev = words[i - 1];
                assert!(prev.get(Family::Type) != TYPE_METRICAL || prev.get(Family::BarBeat) >= 2, "a note follows a beat");
                if let Some(p) = previous_pitch {
                    assert!(w.get(Family::Pitch) <= p, "Note words in descending pitch");
                }
                previous_pitch = Some(w.get(Family::Pitch));
            }
            _ => previous_pitch = None,
        }
    }
    let tokens = remi::encode(&grid);
    assert_eq!(*tokens.last().unwrap(), remi::EOS);
    assert_eq!(tokens[0], remi::BAR);
}

#[test]
fn import_merges_tracks_drops_drums_applies_pedal_and_rescales_ticks() {
    // 96 ticks per beat; track 1 plays C4 for a beat with the pedal held for two more beats;
    // track 2 plays E4 on channel 2 and a drum on channel 10.
    let bytes = midi(
        96,
        vec![
            vec![Ev::Tempo(0, 600_000), Ev::TimeSig(0, 4, 2)],
            vec![Ev::Pedal(0, 0, true), Ev::On(0, 0, 60, 100), Ev::Off(96, 0, 60), Ev::Pedal(288, 0, false)],
            vec![Ev::On(192, 2, 64, 80), Ev::Off(240, 2, 64), Ev::On(0, 9, 36, 100), Ev::Off(48, 9, 36)],
        ],
    );
    let song = import_bytes(&bytes).unwrap();
    let notes: Vec<(u32, u32, u8)> = song.notes.iter().map(|n| (n.onset, n.duration, n.pitch)).collect();
    assert_eq!(notes, vec![(0, 1440, 60), (960, 240, 64)]);
    assert_eq!(song.tempos.len(), 1);
    assert!((song.tempos[0].bpm - 100.0).abs() < 1e-3);
    assert!(!song.chords.is_empty());
}

#[test]
fn a_repeated_key_ends_the_pedal_held_note() {
    let bytes = midi(
        480,
        vec![vec![Ev::Pedal(0, 0, true), Ev::On(0, 0, 60, 100), Ev::Off(240, 0, 60), Ev::On(960, 0, 60, 90), Ev::Off(1200, 0, 60), Ev::Pedal(1920, 0, false)]],
    );
    let song = import_bytes(&bytes).unwrap();
    let notes: Vec<(u32, u32)> = song.notes.iter().map(|n| (n.onset, n.duration)).collect();
    assert_eq!(notes, vec![(0, 960), (960, 960)]);
}

fn error_of(bytes: &[u8]) -> ImportError {
    import_bytes(bytes).expect_err("bad input must be an error")
}

#[test]
fn bad_input_is_a_clear_error() {
    let good = midi(480, vec![vec![Ev::On(0, 0, 60, 100), Ev::Off(480, 0, 60)]]);
    assert!(import_bytes(&good).is_ok());
    // Truncated file.
    assert!(matches!(error_of(&good[..good.len() - 6]), ImportError::Parse(_)));
    assert!(matches!(error_of(&good[..10]), ImportError::Parse(_)));
    // Non-MIDI bytes.
    assert!(matches!(error_of(b"RIFF\x10\x00\x00\x00WAVEfmt this is not midi"), ImportError::Parse(_)));
    assert!(matches!(error_of(&[]), ImportError::Parse(_)));
    // Zero division.
    let mut zero = good.clone();
    zero[12] = 0;
    zero[13] = 0;
    assert!(matches!(error_of(&zero), ImportError::ZeroDivision));
    // SMPTE division (-25 fps, 40 ticks per frame).
    let mut smpte = good.clone();
    smpte[12] = 0xE7;
    smpte[13] = 40;
    assert!(matches!(error_of(&smpte), ImportError::Smpte));
    // No notes.
    let silent = midi(480, vec![vec![Ev::Tempo(0, 500_000)]]);
    assert!(matches!(error_of(&silent), ImportError::NoNotes));
    let drums_only = midi(480, vec![vec![Ev::On(0, 9, 36, 100), Ev::Off(10, 9, 36)]]);
    assert!(matches!(error_of(&drums_only), ImportError::NoNotes));
    // Absurd delta: a note 100 million ticks in.
    let absurd = midi(480, vec![vec![Ev::On(0, 0, 60, 100), Ev::Off(480, 0, 60), Ev::On(100_000_000, 0, 62, 100), Ev::Off(100_000_480, 0, 62)]]);
    assert!(matches!(error_of(&absurd), ImportError::TooLong { .. }));
    // Not 4/4.
    let waltz = midi(480, vec![vec![Ev::TimeSig(0, 3, 2), Ev::On(0, 0, 60, 100), Ev::Off(480, 0, 60)]]);
    let e = error_of(&waltz);
    assert!(matches!(e, ImportError::NotFourFour { numerator: 3, denominator: 4, .. }));
    assert_eq!(e.to_string(), "not in 4/4: time signature 3/4 at tick 0");
}

#[test]
fn random_bytes_never_panic() {
    let good = midi(480, vec![vec![Ev::Tempo(0, 500_000), Ev::On(0, 0, 60, 100), Ev::Off(480, 0, 60), Ev::On(480, 0, 64, 100), Ev::Off(960, 0, 64)]]);
    let mut rng = cp_piano::model::init::Rng::new(77);
    for _ in 0..2000 {
        let mut bytes = good.clone();
        for _ in 0..1 + common::below(&mut rng, 4) {
            let i = common::below(&mut rng, bytes.len() as u64) as usize;
            bytes[i] = rng.next_u64() as u8;
        }
        let _ = import_bytes(&bytes);
    }
}
