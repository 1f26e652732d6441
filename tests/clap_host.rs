//! A CLAP host (clack-host) that loads the bundled `CP Piano.clap`, activates it, plays a
//! transport and checks the notes it sends: every note-on on the song's 16th grid at an exact
//! sample, every note-on paired with a note-off, all notes off on stop.
//!
//! Needs the bundle: `cargo xtask test` builds it (with the allocation checker on `process`)
//! before running the tests.

mod common;

use std::ffi::CStr;
use std::path::PathBuf;

use clack_host::events::event_types::{NoteOffEvent, NoteOnEvent, TransportFlags};
use clack_host::events::io::EventBuffer;
use clack_host::events::event_types::ParamValueEvent;
use clack_host::events::{Match, Pckn};
use clack_host::prelude::*;
use clack_extensions::params::{ParamInfoBuffer, PluginParams};
use clack_extensions::state::PluginState;
use clack_host::utils::BeatTime;

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

use common::transport;

/// A note event at its absolute sample: (sample, pitch, channel).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Out {
    On(u64, u8, u8),
    Off(u64, u8, u8),
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

/// Runs one block with the given transport and input events (parameter changes); collects the
/// note events at absolute samples, and checks that the stereo output is silent.
fn block_with(
    processor: &mut clack_host::process::StartedPluginAudioProcessor<TestHost>,
    events: &mut EventBuffer,
    input: &EventBuffer,
    playing: bool,
    at: u64,
    out: &mut Vec<Out>,
) {
    events.clear();
    let t = transport(playing, TEMPO, at as f64 * TEMPO / 60.0 / RATE);
    // Garbage in the output buffers: the plugin must write silence over it.
    let (mut left, mut right) = (vec![0.5f32; BLOCK as usize], vec![-0.5f32; BLOCK as usize]);
    let mut ports = AudioPorts::with_capacity(2, 1);
    let mut outputs = ports.with_output_buffers([AudioPortBuffer {
        latency: 0,
        channels: AudioPortBufferType::f32_output_only([left.as_mut_slice(), right.as_mut_slice()].into_iter()),
    }]);
    // SAFETY: no audio input ports: an empty buffer list with the block length.
    let inputs = unsafe { InputAudioBuffers::from_raw_buffers(&[], BLOCK) };
    processor.process(&inputs, &mut outputs, &input.as_input(), &mut events.as_output(), None, Some(&t)).expect("process");
    assert!(left.iter().chain(&right).all(|&x| x == 0.0), "the audio output is silent");
    for e in events.iter() {
        if let Some(on) = e.as_event::<NoteOnEvent>() {
            out.push(Out::On(at + on.header().time() as u64, on.as_raw().key as u8, on.as_raw().channel as u8));
        } else if let Some(off) = e.as_event::<NoteOffEvent>() {
            out.push(Out::Off(at + off.header().time() as u64, off.as_raw().key as u8, off.as_raw().channel as u8));
        }
    }
}

/// One block without input events.
fn block(processor: &mut clack_host::process::StartedPluginAudioProcessor<TestHost>, events: &mut EventBuffer, playing: bool, at: u64, out: &mut Vec<Out>) {
    block_with(processor, events, &EventBuffer::new(), playing, at, out)
}

/// Activates the plugin at `RATE` for blocks of up to `max_frames` and starts processing.
fn start(plugin: &mut PluginInstance<TestHost>, max_frames: u32) -> clack_host::process::StartedPluginAudioProcessor<TestHost> {
    let config = PluginAudioConfiguration { sample_rate: RATE, min_frames_count: 1, max_frames_count: max_frames };
    plugin.activate(|_, _| (), config).expect("activates").start_processing().expect("starts")
}

/// Activates, waits `wait_ms` with the transport stopped, then plays `beats` beats from host
/// beat 0 and stops. Playback runs faster than real time, so the worker may still be writing
/// (the plugin then waits and skips, by design): the pass is repeated, seeking back to 0, until
/// two passes in a row give the same notes. Returns the last pass and the deactivated instance.
fn play(mut plugin: PluginInstance<TestHost>, wait_ms: u64, beats: f64) -> (Vec<Out>, PluginInstance<TestHost>) {
    let mut processor = start(&mut plugin, BLOCK);
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
    out.iter().filter_map(|e| if let Out::On(at, p, _) = e { Some((*at, *p)) } else { None }).collect()
}

/// Checks that every note-off ends a sounding note on its own channel and that no key is
/// struck again on a channel where it sounds; returns what is still sounding.
fn unpaired(out: &[Out]) -> Vec<(u8, u8)> {
    let mut sounding: Vec<(u8, u8)> = Vec::new();
    for e in out {
        match *e {
            Out::On(at, p, c) => {
                assert!(!sounding.contains(&(p, c)), "note-on of {p} on channel {c} at {at} while it sounds");
                sounding.push((p, c));
            }
            Out::Off(at, p, c) => {
                let k = sounding.iter().position(|&s| s == (p, c));
                assert!(k.is_some(), "note-off of {p} on channel {c} at {at} with no note-on there");
                sounding.remove(k.unwrap());
            }
        }
    }
    sounding
}

/// The active, processing plugin waits a second stopped (the worker writes the first bars),
/// then plays from beat 0 until notes sound; returns the next sample.
fn play_until_notes_sound(processor: &mut clack_host::process::StartedPluginAudioProcessor<TestHost>, events: &mut EventBuffer, out: &mut Vec<Out>) -> u64 {
    for _ in 0..100 {
        block(processor, events, false, 0, out);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut at = 0u64;
    // 64 bars at most.
    while (at as f64) * TEMPO / 60.0 / RATE < 256.0 {
        block(processor, events, true, at, out);
        at += BLOCK as u64;
        if note_ons(out).len() >= 4 && !unpaired(out).is_empty() {
            return at;
        }
    }
    panic!("no notes sounded in 64 bars ({} events)", out.len());
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
    let sounding = unpaired(&out);
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

/// The plugin's state with its song replaced by `notes` (pitch, start beat, duration): framed
/// as nice-plug's CLAP state (a u64 length, then JSON).
fn state_with_song(state: &[u8], notes: &[(u8, f64, f64)], end: f64) -> Vec<u8> {
    let len = u64::from_le_bytes(state[..8].try_into().unwrap()) as usize;
    let mut json: serde_json::Value = serde_json::from_slice(&state[8..8 + len]).expect("the state is JSON");
    let settings = serde_json::to_value(cp_piano::generate::GenerationSettings::default()).unwrap();
    let song = serde_json::json!({
        "settings": settings,
        "notes": notes.iter().map(|&(pitch, start, duration)| serde_json::json!({ "start": start, "duration": duration, "pitch": pitch, "velocity": 90 })).collect::<Vec<_>>(),
        "end": end,
        "ended_with_eos": true,
        "words": notes.len() * 2,
    });
    // nice-plug keeps each persisted field as its own JSON text: the song's JSON, encoded again.
    json["fields"]["song"] = serde_json::json!(serde_json::to_string(&song.to_string()).unwrap());
    let body = serde_json::to_vec(&json).unwrap();
    let mut bytes = (body.len() as u64).to_le_bytes().to_vec();
    bytes.extend(body);
    bytes
}

#[test]
fn a_state_loaded_while_playing_is_the_song_that_plays_next() {
    let Some(path) = clap_bundle("a_state_loaded_while_playing_is_the_song_that_plays_next") else { return };
    // SAFETY: loading our own plugin bundle.
    let entry = unsafe { PluginEntry::load(path) }.expect("the .clap loads");
    let mut plugin = instance(&entry);
    let mut processor = start(&mut plugin, BLOCK);
    let mut events = EventBuffer::with_capacity(1024);
    let mut out = Vec::new();
    let mut at = play_until_notes_sound(&mut processor, &mut events, &mut out);
    // A preset of a known song (key 100 on every beat) is loaded while the old song sounds.
    let loaded: Vec<(u8, f64, f64)> = (0..64).map(|b| (100, b as f64, 0.5)).collect();
    let state = state_with_song(&save_state(&mut plugin), &loaded, 64.0);
    assert!(load_state(&mut plugin, &state), "the state loads while the plugin processes");
    let load_at = at;
    for _ in 0..4000 {
        block(&mut processor, &mut events, true, at, &mut out);
        at += BLOCK as u64;
        if out.iter().filter(|e| matches!(e, Out::On(t, 100, _) if *t >= load_at)).count() >= 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let after: Vec<&Out> = out.iter().filter(|e| matches!(e, Out::On(t, ..) if *t >= load_at)).collect();
    assert!(after.len() >= 4, "the loaded song plays");
    assert!(after.iter().all(|e| matches!(e, Out::On(_, 100, _))), "only the loaded song plays after the load: {after:?}");
    // The old song's notes ended at the first block after the load.
    let old_offs = out.iter().filter(|e| matches!(e, Out::Off(t, p, _) if *t >= load_at && *p != 100)).collect::<Vec<_>>();
    assert!(!old_offs.is_empty() && old_offs.iter().all(|e| matches!(e, Out::Off(t, ..) if *t == load_at)), "the old notes end at once: {old_offs:?}");
    block(&mut processor, &mut events, false, at, &mut out);
    assert!(unpaired(&out).is_empty(), "stop ends every note");
    let processor = processor.stop_processing();
    plugin.deactivate(processor);
}

#[test]
fn a_channel_change_while_notes_sound_ends_each_on_its_own_channel() {
    let Some(path) = clap_bundle("a_channel_change_while_notes_sound_ends_each_on_its_own_channel") else { return };
    // SAFETY: loading our own plugin bundle.
    let entry = unsafe { PluginEntry::load(path) }.expect("the .clap loads");
    let mut plugin = instance(&entry);
    let handle = plugin.plugin_handle();
    let params = handle.get_extension::<PluginParams>().expect("the params extension");
    let mut info = ParamInfoBuffer::new();
    let channel = (0..params.count(&handle))
        .filter_map(|i| params.get_info(&handle, i, &mut info).map(|p| (p.id, p.name.to_vec(), p.max_value)))
        .find(|(_, name, _)| name.as_slice() == b"MIDI channel")
        .expect("a MIDI channel parameter");
    let mut processor = start(&mut plugin, BLOCK);
    let mut events = EventBuffer::with_capacity(1024);
    let mut out = Vec::new();
    let mut at = play_until_notes_sound(&mut processor, &mut events, &mut out);
    // Channel 2 from here on, while notes started on channel 1 still sound.
    let mut change = EventBuffer::new();
    change.push(&ParamValueEvent::new(0, channel.0, Pckn::match_all(), 2.0f64.min(channel.2)));
    block_with(&mut processor, &mut events, &change, true, at, &mut out);
    at += BLOCK as u64;
    for _ in 0..2000 {
        block(&mut processor, &mut events, true, at, &mut out);
        at += BLOCK as u64;
    }
    block(&mut processor, &mut events, false, at, &mut out);
    let channels: Vec<u8> = out.iter().filter_map(|e| if let Out::On(_, _, c) = e { Some(*c) } else { None }).collect();
    assert!(channels.first() != channels.last(), "notes started on the channel before and after the change: {channels:?}");
    assert!(unpaired(&out).is_empty(), "every note ends, on the channel it started on");
    let processor = processor.stop_processing();
    plugin.deactivate(processor);
}

/// One block of `frames` samples at host beat `beats`, with the loop range [a, b) active; the
/// note events at absolute samples go to `out`, and the offsets of one block must not decrease.
fn loop_block(
    processor: &mut clack_host::process::StartedPluginAudioProcessor<TestHost>,
    events: &mut EventBuffer,
    at: u64,
    beats: f64,
    frames: u32,
    (a, b): (f64, f64),
    out: &mut Vec<Out>,
) {
    events.clear();
    let mut t = transport(true, TEMPO, beats);
    t.flags |= TransportFlags::IS_LOOP_ACTIVE;
    t.loop_start_beats = BeatTime::from_float(a);
    t.loop_end_beats = BeatTime::from_float(b);
    let (mut left, mut right) = (vec![0f32; frames as usize], vec![0f32; frames as usize]);
    let mut ports = AudioPorts::with_capacity(2, 1);
    let mut outputs = ports.with_output_buffers([AudioPortBuffer {
        latency: 0,
        channels: AudioPortBufferType::f32_output_only([left.as_mut_slice(), right.as_mut_slice()].into_iter()),
    }]);
    // SAFETY: no audio input ports: an empty buffer list with the block length.
    let inputs = unsafe { InputAudioBuffers::from_raw_buffers(&[], frames) };
    processor.process(&inputs, &mut outputs, &InputEvents::empty(), &mut events.as_output(), None, Some(&t)).expect("process");
    let mut last = 0;
    for e in events.iter() {
        let time = e.header().time();
        assert!(time >= last && time < frames, "event at {time} after {last} in a block of {frames}");
        last = time;
        if let Some(on) = e.as_event::<NoteOnEvent>() {
            out.push(Out::On(at + time as u64, on.as_raw().key as u8, on.as_raw().channel as u8));
        } else if let Some(off) = e.as_event::<NoteOffEvent>() {
            out.push(Out::Off(at + time as u64, off.as_raw().key as u8, off.as_raw().channel as u8));
        }
    }
}

#[test]
fn a_loop_the_host_does_not_split_plays_the_same_at_any_block_size() {
    let Some(path) = clap_bundle("a_loop_the_host_does_not_split_plays_the_same_at_any_block_size") else { return };
    // SAFETY: loading our own plugin bundle.
    let entry = unsafe { PluginEntry::load(path) }.expect("the .clap loads");
    let mut plugin = instance(&entry);
    let mut processor = start(&mut plugin, 4096);
    let mut events = EventBuffer::with_capacity(4096);
    let mut scratch = Vec::new();
    for _ in 0..100 {
        block(&mut processor, &mut events, false, 0, &mut scratch);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Three passes of a 3.5-beat loop from beat 1.25, in blocks that never end at the loop end.
    let (a, b) = (1.25, 4.75);
    let bps = TEMPO / 60.0 / RATE;
    let pass = ((b - a) / bps).round() as u64;
    // The first wrap: the end of the first pass, which starts at beat 0.
    let first = (b / bps).round() as u64;
    // Both block sizes stop at the same sample (a multiple of 64 and 4,000), so the notes still
    // sounding then end at the same sample too.
    let end = (first + 2 * pass + 4000).div_ceil(8000) * 8000;
    let run = |processor: &mut _, events: &mut EventBuffer, frames: u32| {
        let mut out = Vec::new();
        let (mut at, mut beats) = (0u64, 0.0f64);
        while at < end {
            loop_block(processor, events, at, beats, frames, (a, b), &mut out);
            at += frames as u64;
            // The host wraps its own position as often as the block holds loop ends.
            let mut next = beats + frames as f64 * bps;
            while next >= b {
                next -= b - a;
            }
            beats = next;
        }
        block(processor, events, false, at, &mut out);
        out
    };
    let mut agreed = None;
    for _ in 0..20 {
        let (small, large) = (run(&mut processor, &mut events, 64), run(&mut processor, &mut events, 4000));
        if small == large && !note_ons(&small).is_empty() {
            agreed = Some(small);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let out = agreed.expect("64- and 4,000-sample blocks give the same events");
    assert!(unpaired(&out).is_empty(), "every note ends");
    // Every pass of the loop is the same: the note-ons of the second and third passes match.
    let ons = note_ons(&out);
    let in_pass = |k: u64| -> Vec<(u64, u8)> {
        let start = first + k * pass;
        ons.iter().filter(|&&(t, _)| t >= start && t < start + pass).map(|&(t, p)| (t - start, p)).collect()
    };
    assert!(!in_pass(0).is_empty(), "the loop plays notes");
    assert_eq!(in_pass(0), in_pass(1), "two passes of the loop differ");
    let processor = processor.stop_processing();
    plugin.deactivate(processor);
}

/// The id of the parameter named `name`.
fn param_id(plugin: &mut PluginInstance<TestHost>, name: &str) -> ClapId {
    let handle = plugin.plugin_handle();
    let params = handle.get_extension::<PluginParams>().expect("the params extension");
    let mut info = ParamInfoBuffer::new();
    (0..params.count(&handle))
        .filter_map(|i| params.get_info(&handle, i, &mut info).map(|p| (p.id, p.name.to_vec())))
        .find(|(_, n)| n.as_slice() == name.as_bytes())
        .unwrap_or_else(|| panic!("a {name} parameter"))
        .0
}

#[test]
fn listen_mode_passes_the_producers_notes_through_and_continues_them_from_the_bar_after() {
    let Some(path) = clap_bundle("listen_mode_passes_the_producers_notes_through_and_continues_them_from_the_bar_after") else { return };
    // SAFETY: loading our own plugin bundle.
    let entry = unsafe { PluginEntry::load(path) }.expect("the .clap loads");
    let mut plugin = instance(&entry);
    let (listen, listen_bars) = (param_id(&mut plugin, "Listen"), param_id(&mut plugin, "Listen bars"));
    let mut processor = start(&mut plugin, BLOCK);
    let mut events = EventBuffer::with_capacity(1024);
    let mut out = Vec::new();
    for _ in 0..100 {
        block(&mut processor, &mut events, false, 0, &mut out);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // nice-plug shows a discrete parameter to CLAP as its step, from 0: Listen bars 1 is 0.
    for (id, value) in [(listen, 1.0), (listen_bars, 0.0)] {
        let mut change = EventBuffer::new();
        change.push(&ParamValueEvent::new(0, id, Pckn::match_all(), value));
        block_with(&mut processor, &mut events, &change, false, 0, &mut out);
    }
    // The producer plays bar 1: a C major chord on each beat, half a beat long.
    let samples_per_beat = (RATE * 60.0 / TEMPO) as u64;
    let mut played: Vec<(u64, bool, u8)> = (0..4u64)
        .flat_map(|beat| [60u8, 64, 67].into_iter().flat_map(move |key| [(beat * samples_per_beat + 1000, true, key), (beat * samples_per_beat + samples_per_beat / 2, false, key)]))
        .collect();
    played.sort();
    out.clear();
    let mut at = 0u64;
    while at < 5 * samples_per_beat {
        let mut input = EventBuffer::new();
        for &(sample, on, key) in played.iter().filter(|p| p.0 >= at && p.0 < at + BLOCK as u64) {
            let pckn = Pckn::new(0u16, 0u16, key as u16, Match::All);
            if on {
                input.push(&NoteOnEvent::new((sample - at) as u32, pckn, 0.8));
            } else {
                input.push(&NoteOffEvent::new((sample - at) as u32, pckn, 0.0));
            }
        }
        block_with(&mut processor, &mut events, &input, true, at, &mut out);
        at += BLOCK as u64;
    }
    block(&mut processor, &mut events, false, at, &mut out);
    // MIDI thru: exactly the notes played, at their samples, and nothing of the old song.
    let expected: Vec<Out> = played.iter().map(|&(s, on, key)| if on { Out::On(s, key, 0) } else { Out::Off(s, key, 0) }).collect();
    let at_sample = |e: &Out| match *e {
        Out::On(s, ..) | Out::Off(s, ..) => s,
    };
    let heard: Vec<Out> = out.iter().copied().filter(|e| at_sample(e) < 4 * samples_per_beat).collect();
    assert_eq!(heard, expected, "while listening only the producer's notes go out");

    // The continuation: nothing in bar 1 (the producer's bar is not replayed), the song from bar
    // 2. The worker may still be writing when a pass runs, so passes repeat until two agree.
    let mut previous: Option<Vec<Out>> = None;
    for _ in 0..60 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        out.clear();
        let mut at = 0u64;
        while at < 16 * samples_per_beat {
            block(&mut processor, &mut events, true, at, &mut out);
            at += BLOCK as u64;
        }
        block(&mut processor, &mut events, false, at, &mut out);
        if note_ons(&out).len() >= 4 && previous.as_ref() == Some(&out) {
            break;
        }
        previous = Some(out.clone());
    }
    let ons = note_ons(&out);
    assert!(ons.len() >= 4, "the continuation plays ({} note-ons in bars 2-4)", ons.len());
    assert!(ons.iter().all(|&(s, _)| s >= 4 * samples_per_beat), "a note-on in bar 1: {:?}", ons.first());
    assert!(unpaired(&out).is_empty());
    let processor = processor.stop_processing();
    plugin.deactivate(processor);
}
