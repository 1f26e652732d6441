//! The playback engine against scripted host transports: exact sample offsets at several
//! tempos, sample rates and block sizes; stop, loop, seek and tempo changes; every note-on
//! paired with a note-off; waiting for the worker; a clean end.

// Every engine call on the "audio thread" of these tests runs under the allocation checker.
#[cfg(not(feature = "assert-no-alloc"))]
#[global_allocator]
static ALLOCATOR: assert_no_alloc::AllocDisabler = assert_no_alloc::AllocDisabler;

use assert_no_alloc::assert_no_alloc;
use cp_piano::playback::engine::{Engine, Note, NoteOut, PlaySettings, PlayState, SongEvent, Transport};

/// A song of eight bars: a note on every beat, pitches cycling, durations 1/2 and 1 beat.
fn song() -> Vec<Note> {
    (0..32)
        .map(|i| Note { start: i as f64, duration: if i % 2 == 0 { 0.5 } else { 1.0 }, pitch: 60 + (i % 5) as u8, velocity: 100 })
        .collect()
}

fn loaded(notes: &[Note], end: Option<f64>) -> Engine {
    let mut engine = Engine::new();
    // Receiving the song happens on the audio thread too: no allocation.
    assert_no_alloc(|| {
        engine.receive(SongEvent::Reset { state: 0 });
        for &n in notes {
            engine.receive(SongEvent::Note(n));
        }
        match end {
            Some(e) => engine.receive(SongEvent::End(e)),
            None => engine.receive(SongEvent::ReadyUntil(1e9)),
        }
    });
    engine
}

const SETTINGS: PlaySettings = PlaySettings { start_beat: 4.0, velocity_scale: 1.0, follow_transport: true, channel: 0, left_hand: None, split_pitch: 60 };

/// Plays blocks of `block` samples at a constant tempo from host beat 0 for `seconds`; returns
/// (global sample, event).
fn play_constant(engine: &mut Engine, tempo: f64, rate: f64, block: u32, seconds: f64) -> Vec<(u64, NoteOut)> {
    let mut events = Vec::with_capacity(4096);
    let mut sample = 0u64;
    while (sample as f64) < seconds * rate {
        let position = sample as f64 * tempo / 60.0 / rate;
        let t = Transport { playing: true, tempo, position: Some(position), loop_range: None };
        // The output buffer is reserved, so pushing into it does not allocate.
        assert_no_alloc(|| engine.process(t, SETTINGS, block, rate, &mut |e| events.push((sample + offset(e) as u64, e))));
        sample += block as u64;
    }
    events
}

fn offset(e: NoteOut) -> u32 {
    e.offset()
}

/// Every on has a matching later off of the same pitch, and nothing is left sounding.
fn assert_paired(events: &[(u64, NoteOut)]) {
    let mut sounding: Vec<(u8, u64)> = Vec::new();
    for &(at, e) in events {
        match e {
            NoteOut::On { pitch, .. } => {
                assert!(!sounding.iter().any(|s| s.0 == pitch), "pitch {pitch} struck twice without an off at {at}");
                sounding.push((pitch, at));
            }
            NoteOut::Off { pitch, .. } => {
                let k = sounding.iter().position(|s| s.0 == pitch).unwrap_or_else(|| panic!("off without on: {pitch} at {at}"));
                assert!(sounding[k].1 <= at);
                sounding.remove(k);
            }
        }
    }
    assert!(sounding.is_empty(), "still sounding: {sounding:?}");
}

#[test]
fn notes_land_on_exact_samples_at_any_tempo_rate_and_block_size() {
    for tempo in [120.0, 97.3] {
        for rate in [44_100.0, 48_000.0] {
            for block in [32, 100, 512, 1024] {
                let mut engine = loaded(&song(), Some(32.0));
                let seconds = (4.0 + 34.0) * 60.0 / tempo;
                let events = play_constant(&mut engine, tempo, rate, block, seconds);
                let ons: Vec<(u64, u8)> = events.iter().filter(|&&(_, e)| matches!(e, NoteOut::On { .. })).map(|&(at, e)| (at, match e { NoteOut::On { pitch, .. } => pitch, _ => 0 })).collect();
                assert_eq!(ons.len(), 32, "tempo {tempo} rate {rate} block {block}");
                for (i, &(at, pitch)) in ons.iter().enumerate() {
                    let expected = ((4.0 + i as f64) * 60.0 / tempo * rate).round() as u64;
                    assert_eq!(at, expected, "note {i} at tempo {tempo} rate {rate} block {block}");
                    assert_eq!(pitch, 60 + (i % 5) as u8);
                }
                assert_paired(&events);
                assert_eq!(engine.state, PlayState::Finished);
            }
        }
    }
}

#[test]
fn stop_ends_notes_and_play_resumes_the_same_song() {
    let mut engine = loaded(&song(), Some(32.0));
    let (tempo, rate, block) = (120.0, 48_000.0, 256u32);
    let mut events = Vec::new();
    let mut sample = 0u64;
    let run = |engine: &mut Engine, events: &mut Vec<(u64, NoteOut)>, playing: bool, position: f64, blocks: usize, sample: &mut u64| {
        let mut position = position;
        for _ in 0..blocks {
            let t = Transport { playing, tempo, position: Some(position), loop_range: None };
            let at = *sample;
            engine.process(t, SETTINGS, block, rate, &mut |e| events.push((at + offset(e) as u64, e)));
            *sample += block as u64;
            if playing {
                position += block as f64 * tempo / 60.0 / rate;
            }
        }
    };
    // Play into beat 5.25 (song beat 1.25: the second note sounds), then stop.
    let blocks = (5.25 * 60.0 / tempo * rate / block as f64) as usize;
    run(&mut engine, &mut events, true, 0.0, blocks, &mut sample);
    let ons_before = events.iter().filter(|e| matches!(e.1, NoteOut::On { .. })).count();
    assert_eq!(ons_before, 2);
    run(&mut engine, &mut events, false, 5.25, 4, &mut sample);
    assert_paired(&events);
    assert_eq!(engine.state, PlayState::Stopped);
    // Seek back to the song start and play two beats: the first notes play again.
    let mut replay = Vec::new();
    run(&mut engine, &mut replay, true, 4.0, (2.0 * 60.0 / tempo * rate / block as f64) as usize + 1, &mut sample);
    let pitches: Vec<u8> = replay.iter().filter_map(|e| match e.1 { NoteOut::On { pitch, .. } => Some(pitch), _ => None }).collect();
    assert_eq!(pitches, vec![60, 61, 62]);
}

#[test]
fn loop_and_seek_send_note_offs_then_continue_from_the_new_place() {
    let mut engine = loaded(&song(), Some(32.0));
    let (tempo, rate, block) = (97.3, 44_100.0, 64u32);
    let bps = tempo / 60.0 / rate;
    let mut events: Vec<(u64, NoteOut)> = Vec::new();
    let mut sample = 0u64;
    // A loop over host beats 5.0..7.5, three times, then a seek forward to beat 20.
    let mut position = 5.0;
    let mut jumps = 0;
    while jumps < 3 {
        let t = Transport { playing: true, tempo, position: Some(position), loop_range: None };
        let at = sample;
        engine.process(t, SETTINGS, block, rate, &mut |e| events.push((at + offset(e) as u64, e)));
        sample += block as u64;
        position += block as f64 * bps;
        if position >= 7.5 {
            position = 5.0;
            jumps += 1;
        }
    }
    let ons = events.iter().filter(|e| matches!(e.1, NoteOut::On { .. })).count();
    // Song beats 1, 2, 3 (host 5, 6, 7) in each pass.
    assert_eq!(ons, 9);
    // Seek forward into the middle of a long note: it is not started late.
    let at = sample;
    engine.process(Transport { playing: true, tempo, position: Some(4.0 + 21.5), loop_range: None }, SETTINGS, block, rate, &mut |e| events.push((at + offset(e) as u64, e)));
    engine.process(Transport { playing: false, tempo, position: Some(4.0 + 21.5), loop_range: None }, SETTINGS, block, rate, &mut |e| events.push((at + offset(e) as u64, e)));
    assert_eq!(events.iter().filter(|e| matches!(e.1, NoteOut::On { .. })).count(), 9);
    assert_paired(&events);
}

#[test]
fn tempo_changes_between_blocks_are_followed() {
    let mut engine = loaded(&song(), Some(32.0));
    let rate = 48_000.0;
    let block = 480u32;
    let mut position = 0.0;
    let mut events: Vec<(f64, NoteOut)> = Vec::new();
    for k in 0..4000 {
        let tempo = if (k / 100) % 2 == 0 { 120.0 } else { 150.0 };
        let bps = tempo / 60.0 / rate;
        let start = position;
        engine.process(Transport { playing: true, tempo, position: Some(position), loop_range: None }, SETTINGS, block, rate, &mut |e| {
            events.push((start + offset(e) as f64 * bps, e))
        });
        position += block as f64 * bps;
    }
    let ons: Vec<f64> = events.iter().filter(|e| matches!(e.1, NoteOut::On { .. })).map(|e| e.0).collect();
    assert_eq!(ons.len(), 32);
    for (i, beat) in ons.iter().enumerate() {
        assert!((beat - (4.0 + i as f64)).abs() < 150.0 / 60.0 / rate, "note {i} at host beat {beat}");
    }
}

#[test]
fn the_engine_waits_for_the_worker_instead_of_playing_late() {
    let mut engine = Engine::new();
    engine.receive(SongEvent::Reset { state: 0 });
    let notes = song();
    for &n in &notes[..8] {
        engine.receive(SongEvent::Note(n));
    }
    engine.receive(SongEvent::ReadyUntil(8.0));
    let (tempo, rate, block) = (120.0, 48_000.0, 512u32);
    let mut events = Vec::new();
    let mut position = 0.0;
    let mut waited = false;
    for _ in 0..2000 {
        let at = position;
        engine.process(Transport { playing: true, tempo, position: Some(position), loop_range: None }, SETTINGS, block, rate, &mut |e| events.push((at, e)));
        if engine.state == PlayState::Waiting {
            waited = true;
            break;
        }
        position += block as f64 * tempo / 60.0 / rate;
    }
    assert!(waited);
    assert!(position >= 4.0 + 8.0 - 0.1, "waits only past the ready part ({position})");
    assert_eq!(events.iter().filter(|e| matches!(e.1, NoteOut::On { .. })).count(), 8);
}

#[test]
fn free_run_plays_without_transport_and_reset_silences() {
    let mut engine = loaded(&song(), Some(32.0));
    let free = PlaySettings { follow_transport: false, ..SETTINGS };
    let mut events = Vec::new();
    for _ in 0..190 {
        engine.process(Transport { playing: false, tempo: 120.0, position: None, loop_range: None }, free, 480, 48_000.0, &mut |e| events.push(e));
    }
    // 190 blocks of 10 ms at 120 BPM = 3.8 beats: song beats 0..3 played.
    assert_eq!(events.iter().filter(|e| matches!(e, NoteOut::On { .. })).count(), 4);
    engine.all_notes_off(0, &mut |e| events.push(e));
    let offs = events.iter().filter(|e| matches!(e, NoteOut::Off { .. })).count();
    assert_eq!(offs, 4);
}
