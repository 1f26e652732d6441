//! Real-world meters at import: 2/4 and 1/4 become 4/4 bars (two 2/4 bars make one), a pickup
//! is padded to a bar, a section in another meter is cut out and reported, a song with nothing
//! in those meters is refused with the reason; and POP909's own 2/4 MIDI files import plainly.

mod common;

use common::{midi, Ev};
use cp_piano::midi::import::{import_bytes, import_reporting, ImportError};
use cp_piano::music::grid::Grid;
use cp_piano::music::song::Song;
use cp_piano::tokens::cp;

/// Onsets in beats (480 ticks per beat after import).
fn onsets(song: &Song) -> Vec<f64> {
    song.notes.iter().map(|n| n.onset as f64 / 480.0).collect()
}

/// One note per beat at the given beats (file at 96 ticks per beat).
fn notes_at(beats: &[u32]) -> Vec<Ev> {
    beats.iter().flat_map(|&b| [Ev::On(b * 96, 0, 60 + (b % 12) as u8, 90), Ev::Off(b * 96 + 48, 0, 60 + (b % 12) as u8)]).collect()
}

#[test]
fn two_four_bars_join_into_four_four_bars() {
    let mut events = vec![Ev::TimeSig(0, 2, 2)];
    events.extend(notes_at(&[0, 1, 2, 3, 4, 5, 6, 7]));
    let (song, dropped) = import_reporting(&midi(96, vec![events])).unwrap();
    assert!(dropped.is_empty());
    assert_eq!(onsets(&song), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], "the music runs on, 4 beats a bar");
    // 1/4 the same.
    let mut events = vec![Ev::TimeSig(0, 1, 2)];
    events.extend(notes_at(&[0, 1, 2, 3, 4]));
    assert_eq!(onsets(&import_bytes(&midi(96, vec![events])).unwrap()), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn a_pickup_is_padded_to_a_whole_bar() {
    // A 2/4 pickup bar (beats 0-1), then 4/4 from beat 2.
    let mut events = vec![Ev::TimeSig(0, 2, 2), Ev::TimeSig(2 * 96, 4, 2)];
    events.extend(notes_at(&[0, 1, 2, 6]));
    let song = import_bytes(&midi(96, vec![events])).unwrap();
    assert_eq!(onsets(&song), vec![2.0, 3.0, 4.0, 8.0], "the pickup ends bar 1; the first 4/4 downbeat is bar 2");
    // A 1/4 pickup.
    let mut events = vec![Ev::TimeSig(0, 1, 2), Ev::TimeSig(96, 4, 2)];
    events.extend(notes_at(&[0, 1, 5]));
    assert_eq!(onsets(&import_bytes(&midi(96, vec![events])).unwrap()), vec![3.0, 4.0, 8.0]);
    // A 2/4 section of odd length inside a 4/4 song: the next 4/4 section starts on a bar line.
    let mut events = vec![Ev::TimeSig(0, 4, 2), Ev::TimeSig(4 * 96, 2, 2), Ev::TimeSig(6 * 96, 4, 2)];
    events.extend(notes_at(&[0, 4, 6]));
    assert_eq!(onsets(&import_bytes(&midi(96, vec![events])).unwrap()), vec![0.0, 4.0, 8.0]);
}

#[test]
fn a_section_in_another_meter_is_cut_out_and_reported() {
    // 4/4 for a bar, 3/4 for two bars (beats 4-9), 4/4 again from beat 10.
    let mut events = vec![Ev::TimeSig(0, 4, 2), Ev::TimeSig(4 * 96, 3, 2), Ev::TimeSig(10 * 96, 4, 2)];
    events.extend(notes_at(&[0, 3, 4, 7, 10, 13]));
    let (song, dropped) = import_reporting(&midi(96, vec![events])).unwrap();
    assert_eq!(onsets(&song), vec![0.0, 3.0, 4.0, 7.0], "the 4/4 bars after the cut follow the ones before");
    assert_eq!(dropped.len(), 1);
    assert_eq!((dropped[0].numerator, dropped[0].denominator, dropped[0].notes), (3, 4, 2));
    assert_eq!(dropped[0].to_string(), "beats 4.0-10.0 in 3/4 (2 notes) cut out");
    // Nothing left in 4/4: refused with the meter.
    let mut events = vec![Ev::TimeSig(0, 6, 3)];
    events.extend(notes_at(&[0, 1, 2]));
    let error = import_bytes(&midi(96, vec![events])).unwrap_err();
    assert!(matches!(error, ImportError::NotFourFour { numerator: 6, denominator: 8, .. }), "{error}");
}

#[test]
fn pop909_midi_files_import_plainly_and_survive_the_cp_round_trip() {
    let Some(root) = common::pop909_root() else { return };
    let (mut accepted, mut refused, mut notes, mut kept) = (0, Vec::new(), 0usize, 0usize);
    for id in 1..=909 {
        let path = root.join(format!("{id:03}/{id:03}.mid"));
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let song = match import_bytes(&bytes) {
            Ok(song) => song,
            Err(e) => {
                refused.push(format!("{id:03}: {e}"));
                continue;
            }
        };
        accepted += 1;
        let back = cp::decode(&cp::encode(&Grid::from_song(&song))).grid.to_song();
        // The grid starts at the first bar with notes.
        let lead = Grid::leading_bars(&song) * 4 * 480;
        // Per pitch, the round trip's onsets; a note is kept when one is within a 16th of it.
        let mut by_pitch: Vec<Vec<u32>> = vec![Vec::new(); 128];
        for n in &back.notes {
            by_pitch[n.pitch as usize].push(n.onset + lead);
        }
        for n in &song.notes {
            notes += 1;
            let near = by_pitch[n.pitch as usize].iter().any(|&o| (o as i64 - n.onset as i64).abs() <= 120);
            kept += near as usize;
        }
    }
    let share = accepted as f64 / (accepted + refused.len()) as f64;
    let kept_share = kept as f64 / notes.max(1) as f64;
    eprintln!("POP909 plain import: {accepted} of {} accepted ({:.1} %), round trip keeps {kept} of {notes} notes ({:.2} %); refused: {refused:?}", accepted + refused.len(), share * 100.0, kept_share * 100.0);
    assert!(share >= 0.95, "{refused:?}");
    assert!(kept_share >= 0.99);
}
