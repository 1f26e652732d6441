//! A CLAP host (clack-host) that loads the bundled `CP Piano.clap`, activates it, plays a
//! transport and checks the notes it sends: every note-on on the song's 16th grid at an exact
//! sample, every note-on paired with a note-off, all notes off on stop.
//!
//! Needs the bundle: `cargo xtask test` builds it (with the allocation checker on `process`)
//! before running the tests.

mod common;

use std::ffi::CStr;
use std::path::PathBuf;

use clack_host::events::event_types::{NoteOffEvent, NoteOnEvent, TransportEvent, TransportFlags};
use clack_host::events::io::EventBuffer;
use clack_host::events::{EventFlags, EventHeader};
use clack_host::prelude::*;
use clack_extensions::state::PluginState;
use clack_host::utils::{BeatTime, SecondsTime};

struct Shared;
impl SharedHandler<'_> for Shared {
    fn request_restart(&self) {}
    fn request_process(&self) {}
    fn request_callback(&self) {}
}

struct TestHost;
impl HostHandlers for TestHost {
    type Shared<'a> = Shared;
    type MainThread<'a> = ();
    type AudioProcessor<'a> = ();
}

/// The bundled `CP Piano.clap`, or None (skip) outside `cargo xtask test`.
fn clap_bundle(test: &str) -> Option<PathBuf> {
    common::bundles(test).map(|dir| dir.join("CP Piano.clap"))
}

fn transport(playing: bool, tempo: f64, beats: f64) -> TransportEvent {
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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Out {
    On(u64, u8),
    Off(u64, u8),
}

const RATE: f64 = 48_000.0;
const BLOCK: u32 = 256;
const TEMPO: f64 = 120.0;

fn instance(entry: &PluginEntry) -> PluginInstance<TestHost> {
    let factory = entry.get_plugin_factory().expect("a plugin factory");
    let descriptor = factory.plugin_descriptors().next().expect("one plugin");
    assert_eq!(descriptor.name().unwrap().to_bytes(), b"CP Piano");
    let id: &CStr = descriptor.id().unwrap();
    let info = HostInfo::new("cp-piano test host", "cp-piano", "https://example.invalid", "1.0").unwrap();
    PluginInstance::<TestHost>::new(|_| Shared, |_| (), entry, id, &info).expect("instantiates")
}

/// Runs one block with the given transport; collects the note events at absolute samples.
fn block(processor: &mut clack_host::process::StartedPluginAudioProcessor<TestHost>, events: &mut EventBuffer, playing: bool, at: u64, out: &mut Vec<Out>) {
    events.clear();
    let t = transport(playing, TEMPO, at as f64 * TEMPO / 60.0 / RATE);
    // SAFETY: no audio ports: empty buffer lists with the block length.
    let (inputs, mut outputs) = unsafe { (InputAudioBuffers::from_raw_buffers(&[], BLOCK), OutputAudioBuffers::from_raw_buffers(&mut [], BLOCK)) };
    processor.process(&inputs, &mut outputs, &InputEvents::empty(), &mut events.as_output(), None, Some(&t)).expect("process");
    for e in events.iter() {
        if let Some(on) = e.as_event::<NoteOnEvent>() {
            out.push(Out::On(at + on.header().time() as u64, on.as_raw().key as u8));
        } else if let Some(off) = e.as_event::<NoteOffEvent>() {
            out.push(Out::Off(at + off.header().time() as u64, off.as_raw().key as u8));
        }
    }
}

/// Activates, waits `wait_ms` with the transport stopped, then plays `beats` beats from host
/// beat 0 and stops. Playback runs faster than real time, so the worker may still be writing
/// (the plugin then waits and skips, by design): the pass is repeated, seeking back to 0, until
/// two passes in a row give the same notes. Returns the last pass and the deactivated instance.
fn play(mut plugin: PluginInstance<TestHost>, wait_ms: u64, beats: f64) -> (Vec<Out>, PluginInstance<TestHost>) {
    let config = PluginAudioConfiguration { sample_rate: RATE, min_frames_count: 1, max_frames_count: BLOCK };
    let processor = plugin.activate(|_, _| (), config).expect("activates");
    let mut processor = processor.start_processing().expect("starts");
    let mut events = EventBuffer::with_capacity(1024);
    let mut out = Vec::new();
    for _ in 0..wait_ms / 10 {
        block(&mut processor, &mut events, false, 0, &mut out);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(out.is_empty(), "nothing plays while stopped");
    let mut previous: Option<Vec<Out>> = None;
    for _ in 0..60 {
        out.clear();
        let mut sample = 0u64;
        while (sample as f64) * TEMPO / 60.0 / RATE < beats {
            block(&mut processor, &mut events, true, sample, &mut out);
            sample += BLOCK as u64;
        }
        block(&mut processor, &mut events, false, sample, &mut out);
        if !note_ons(&out).is_empty() && previous.as_ref() == Some(&out) {
            break;
        }
        previous = Some(out.clone());
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let processor = processor.stop_processing();
    plugin.deactivate(processor);
    (out, plugin)
}

fn save_state(plugin: &mut PluginInstance<TestHost>) -> Vec<u8> {
    let handle = plugin.plugin_handle();
    let state = handle.get_extension::<PluginState>().expect("the state extension");
    let mut bytes = Vec::new();
    state.save(&handle, &mut bytes).expect("state saves");
    bytes
}

fn load_state(plugin: &mut PluginInstance<TestHost>, bytes: &[u8]) -> bool {
    let handle = plugin.plugin_handle();
    let state = handle.get_extension::<PluginState>().expect("the state extension");
    state.load(&handle, &mut &bytes[..]).is_ok()
}

fn note_ons(out: &[Out]) -> Vec<(u64, u8)> {
    out.iter().filter_map(|e| if let Out::On(at, p) = e { Some((*at, *p)) } else { None }).collect()
}

#[test]
fn the_clap_plugin_plays_the_song_on_exact_samples() {
    let Some(path) = clap_bundle("the_clap_plugin_plays_the_song_on_exact_samples") else { return };
    // SAFETY: loading our own plugin bundle.
    let entry = unsafe { PluginEntry::load(path) }.expect("the .clap loads");
    // Let the worker load the model and write the first bars, then play 8 bars (16 s at 120 BPM).
    let (out, _plugin) = play(instance(&entry), 1000, 32.0);
    let ons = note_ons(&out);
    println!("{} note-ons in 8 bars", ons.len());
    assert!(ons.len() >= 16, "the song plays ({} note-ons)", ons.len());
    // A 16th at 120 BPM and 48 kHz is exactly 6,000 samples.
    for (at, _) in &ons {
        assert_eq!(at % 6000, 0, "note-on at sample {at} is off the 16th grid");
    }
    let mut sounding: Vec<u8> = Vec::new();
    for e in &out {
        match *e {
            Out::On(_, p) => sounding.push(p),
            Out::Off(_, p) => {
                let k = sounding.iter().position(|&s| s == p).expect("an off follows its on");
                sounding.remove(k);
            }
        }
    }
    assert!(sounding.is_empty(), "stop ends every note: {sounding:?}");
}

#[test]
fn a_reopened_project_plays_the_same_song_and_bad_state_falls_back() {
    let Some(path) = clap_bundle("a_reopened_project_plays_the_same_song_and_bad_state_falls_back") else { return };
    // SAFETY: loading our own plugin bundle.
    let entry = unsafe { PluginEntry::load(path) }.expect("the .clap loads");
    let mut first = instance(&entry);
    // Generate, wait for the finished song to reach the state (at most a minute).
    let (played, mut first_done) = play(std::mem::replace(&mut first, instance(&entry)), 1000, 16.0);
    let mut state = Vec::new();
    for _ in 0..600 {
        state = save_state(&mut first_done);
        if state.windows(7).any(|w| w == b"\\\"notes") || String::from_utf8_lossy(&state).contains("notes") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // nice-plug's CLAP state: a u64 length, then the state as JSON.
    assert!(state.len() > 8, "a state was saved");
    let len = u64::from_le_bytes(state[..8].try_into().unwrap()) as usize;
    let mut json: serde_json::Value = serde_json::from_slice(&state[8..8 + len]).expect("the state is JSON");
    let song = json["fields"]["song"].as_str().unwrap_or_default().to_string();
    assert!(song.contains("notes"), "the finished song is in the state");
    let framed = |v: &serde_json::Value| {
        let body = serde_json::to_vec(v).unwrap();
        let mut bytes = (body.len() as u64).to_le_bytes().to_vec();
        bytes.extend(body);
        bytes
    };
    // Reopen with another seed in the saved parameters: the saved song plays, not a new one.
    json["params"]["seed"] = serde_json::json!({ "i32": 77 });
    let mut reopened = instance(&entry);
    assert!(load_state(&mut reopened, &framed(&json)), "the edited state loads");
    let (replayed, _) = play(reopened, 1000, 16.0);
    assert!(!note_ons(&played).is_empty());
    assert!(note_ons(&replayed) == note_ons(&played), "the reopened project plays the saved song");
    // A foreign blob is refused without a crash, and a broken song falls back to a new song.
    let mut foreign = instance(&entry);
    let _ = load_state(&mut foreign, b"\x00\x01 definitely not a CP Piano state");
    let (out, _) = play(foreign, 1000, 8.0);
    assert!(!note_ons(&out).is_empty(), "a plugin given a foreign state still plays");
    json["fields"]["song"] = serde_json::json!(serde_json::to_string("{ this is not a song").unwrap());
    json["params"]["seed"] = serde_json::json!({ "i32": 77 });
    let mut broken = instance(&entry);
    assert!(load_state(&mut broken, &framed(&json)), "a state with a broken song still loads");
    let (out, _) = play(broken, 1000, 8.0);
    assert!(!note_ons(&out).is_empty(), "a broken saved song falls back to a new one");
    drop(first);
}
