//! Helpers the tests share: MIDI fixtures written in code, seeded random songs, the POP909 path,
//! the plugin bundles.
#![allow(dead_code)]

use std::path::PathBuf;

use cp_piano::model::init::Rng;
use cp_piano::music::chord::Chord;
use cp_piano::music::grid::{PITCH_MAX, PITCH_MIN, TEMPO_VALUES};
use cp_piano::music::song::{ChordChange, Note, Song, TempoChange};
use midly::num::{u15, u24, u28, u4, u7};
use midly::{Format, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind};

/// A draw in 0..n from the crate's one seeded generator.
pub fn below(rng: &mut Rng, n: u64) -> u64 {
    rng.next_u64() % n
}

/// A random song that is already on the grid: onsets on 16ths, durations multiples of 120 up to
/// 1920, even velocities in 40..=86, pitches in 22..=107, vocabulary tempos and chords; no key
/// is struck again while it sounds.
pub fn quantised_song(seed: u64, bars: u32) -> Song {
    let mut rng = Rng::new(seed);
    let mut song = Song::default();
    song.tempos.push(TempoChange { tick: 0, bpm: TEMPO_VALUES[below(&mut rng, 54) as usize] as f32 });
    for bar in 0..bars {
        for position in 0..16 {
            if below(&mut rng, 3) != 0 {
                continue;
            }
            let onset = (bar * 16 + position) * 120;
            for _ in 0..1 + below(&mut rng, 4) {
                let pitch = PITCH_MIN + below(&mut rng, (PITCH_MAX - PITCH_MIN + 1) as u64) as u8;
                let duration = below(&mut rng, 17) as u32 * 120;
                let velocity = 40 + 2 * below(&mut rng, 24) as u8;
                let clashes = song.notes.iter().any(|n: &Note| {
                    n.pitch == pitch && (n.onset == onset || n.onset + n.duration.max(30) > onset)
                });
                if !clashes {
                    song.notes.push(Note { onset, duration, pitch, velocity });
                }
            }
            if below(&mut rng, 8) == 0 && onset > 0 {
                let bpm = TEMPO_VALUES[below(&mut rng, 54) as usize] as f32;
                song.tempos.push(TempoChange { tick: onset, bpm });
            }
            if below(&mut rng, 4) == 0 {
                let chord = Chord::from_index(below(&mut rng, 133) as usize).unwrap();
                song.chords.push(ChordChange { tick: onset, chord });
            }
        }
    }
    // The first bar must hold a note for the song to start at bar 0.
    song.notes.push(Note { onset: 0, duration: 480, pitch: 60, velocity: 64 });
    song.notes.dedup_by_key(|n| (n.onset, n.pitch));
    song.sort();
    song
}

/// A MIDI event at an absolute tick.
pub enum Ev {
    On(u32, u8, u8, u8),
    Off(u32, u8, u8),
    Pedal(u32, u8, bool),
    Tempo(u32, u32),
    TimeSig(u32, u8, u8),
}

/// Writes a MIDI file (format 1 when there are several tracks) from absolute-time events.
pub fn midi(ticks_per_beat: u16, tracks: Vec<Vec<Ev>>) -> Vec<u8> {
    let tracks: Vec<Vec<TrackEvent<'static>>> = tracks
        .into_iter()
        .map(|events| {
            let mut timed: Vec<(u32, TrackEventKind<'static>)> = events
                .into_iter()
                .map(|e| match e {
                    Ev::On(t, ch, key, vel) => (
                        t,
                        TrackEventKind::Midi {
                            channel: u4::new(ch),
                            message: MidiMessage::NoteOn { key: u7::new(key), vel: u7::new(vel) },
                        },
                    ),
                    Ev::Off(t, ch, key) => (
                        t,
                        TrackEventKind::Midi {
                            channel: u4::new(ch),
                            message: MidiMessage::NoteOff { key: u7::new(key), vel: u7::new(0) },
                        },
                    ),
                    Ev::Pedal(t, ch, down) => (
                        t,
                        TrackEventKind::Midi {
                            channel: u4::new(ch),
                            message: MidiMessage::Controller { controller: u7::new(64), value: u7::new(if down { 127 } else { 0 }) },
                        },
                    ),
                    Ev::Tempo(t, us) => (t, TrackEventKind::Meta(MetaMessage::Tempo(u24::new(us)))),
                    Ev::TimeSig(t, n, d) => (t, TrackEventKind::Meta(MetaMessage::TimeSignature(n, d, 24, 8))),
                })
                .collect();
            timed.sort_by_key(|e| e.0);
            let mut last = 0;
            let mut track: Vec<TrackEvent<'static>> = timed
                .into_iter()
                .map(|(t, kind)| {
                    let delta = t - last;
                    last = t;
                    TrackEvent { delta: u28::new(delta), kind }
                })
                .collect();
            track.push(TrackEvent { delta: u28::new(0), kind: TrackEventKind::Meta(MetaMessage::EndOfTrack) });
            track
        })
        .collect();
    let format = if tracks.len() == 1 { Format::SingleTrack } else { Format::Parallel };
    let smf = Smf { header: Header::new(format, Timing::Metrical(u15::new(ticks_per_beat))), tracks };
    let mut bytes = Vec::new();
    smf.write_std(&mut bytes).unwrap();
    bytes
}

/// The POP909 root, or `None` (with a message) where ../shared is absent.
pub fn pop909_root() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/pop909");
    if root.join("index.csv").exists() {
        Some(root)
    } else {
        eprintln!("skipped: POP909 not found at {} (../shared is absent)", root.display());
        None
    }
}

/// Asserts that every parameter of `model` gets a non-zero gradient from `loss`.
pub fn assert_every_parameter_has_a_gradient(model: &cp_piano::model::Trainable, loss: &candle_core::Tensor) {
    let grads = loss.backward().unwrap();
    for (name, var) in model.named_vars() {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} has no gradient"));
        let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(norm > 0.0, "{name} gets a zero gradient");
    }
}

/// The folder of the plugin's test bundles, which `cargo xtask test` builds and names in
/// `CP_PIANO_BUNDLES`. Under a plain `cargo test` it is unset: the host tests say so and skip.
pub fn bundles(test: &str) -> Option<PathBuf> {
    match std::env::var_os("CP_PIANO_BUNDLES") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            assert!(dir.join("CP Piano.clap").exists(), "{}: no bundles there (cargo xtask test builds them)", dir.display());
            Some(dir)
        }
        None => {
            eprintln!("skipped {test}: it loads the plugin bundles, which `cargo xtask test` builds (plain `cargo test` does not)");
            None
        }
    }
}

/// A CLAP transport event: 4/4 at `tempo`, playing or not, at host beat `beats` (the test hosts
/// send one per block).
pub fn transport(playing: bool, tempo: f64, beats: f64) -> clack_host::events::event_types::TransportEvent {
    use clack_host::events::event_types::{TransportEvent, TransportFlags};
    use clack_host::events::{EventFlags, EventHeader};
    use clack_host::utils::{BeatTime, SecondsTime};
    let mut flags = TransportFlags::HAS_TEMPO | TransportFlags::HAS_BEATS_TIMELINE | TransportFlags::HAS_SECONDS_TIMELINE;
    if playing {
        flags |= TransportFlags::IS_PLAYING;
    }
    TransportEvent {
        header: EventHeader::new_core(0, EventFlags::empty()),
        flags,
        song_pos_beats: BeatTime::from_float(beats),
        song_pos_seconds: SecondsTime::from_float(beats * 60.0 / tempo),
        tempo,
        tempo_inc: 0.0,
        loop_start_beats: BeatTime::from_float(0.0),
        loop_end_beats: BeatTime::from_float(0.0),
        loop_start_seconds: SecondsTime::from_float(0.0),
        loop_end_seconds: SecondsTime::from_float(0.0),
        bar_start: BeatTime::from_float((beats / 4.0).floor() * 4.0),
        bar_number: (beats / 4.0).floor() as i32,
        time_signature_numerator: 4,
        time_signature_denominator: 4,
    }
}
