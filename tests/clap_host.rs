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

pub fn bundle(ext: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bundled").join(format!("CP Piano.{ext}"));
    assert!(path.exists(), "{} is missing: run `cargo xtask test` (it bundles the plugin first)", path.display());
    path
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

#[test]
fn the_clap_plugin_plays_the_song_on_exact_samples() {
    let path = bundle("clap");
    // SAFETY: loading our own plugin bundle.
    let entry = unsafe { PluginEntry::load(&path) }.expect("the .clap loads");
    let factory = entry.get_plugin_factory().expect("a plugin factory");
    let descriptor = factory.plugin_descriptors().next().expect("one plugin");
    assert_eq!(descriptor.name().unwrap().to_bytes(), b"CP Piano");
    let id: &CStr = descriptor.id().unwrap();
    let info = HostInfo::new("cp-piano test host", "cp-piano", "https://example.invalid", "1.0").unwrap();
    let mut instance = PluginInstance::<TestHost>::new(|_| Shared, |_| (), &entry, id, &info).expect("instantiates");
    let (rate, block) = (48_000.0, 256u32);
    let config = PluginAudioConfiguration { sample_rate: rate, min_frames_count: 1, max_frames_count: block };
    let processor = instance.activate(|_, _| (), config).expect("activates");
    let mut processor = processor.start_processing().expect("starts");
    let mut events = EventBuffer::with_capacity(1024);
    let mut out = Vec::new();
    let tempo = 120.0;
    let mut run = |processor: &mut clack_host::process::StartedPluginAudioProcessor<TestHost>, playing: bool, beats: f64, at: u64, out: &mut Vec<Out>| {
        events.clear();
        let t = transport(playing, tempo, beats);
        // SAFETY: no audio ports: empty buffer lists with the block length.
        let (inputs, mut outputs) = unsafe { (InputAudioBuffers::from_raw_buffers(&[], block), OutputAudioBuffers::from_raw_buffers(&mut [], block)) };
        processor
            .process(&inputs, &mut outputs, &InputEvents::empty(), &mut events.as_output(), None, Some(&t))
            .expect("process");
        for e in events.iter() {
            if let Some(on) = e.as_event::<NoteOnEvent>() {
                out.push(Out::On(at + on.header().time() as u64, on.as_raw().key as u8));
            } else if let Some(off) = e.as_event::<NoteOffEvent>() {
                out.push(Out::Off(at + off.header().time() as u64, off.as_raw().key as u8));
            }
        }
    };
    // Let the worker load the model and write the first bars while the transport is stopped.
    for _ in 0..300 {
        run(&mut processor, false, 0.0, 0, &mut out);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(out.is_empty(), "nothing plays while stopped");
    // Play 8 bars (16 s at 120 BPM) from host beat 0.
    let bps = tempo / 60.0 / rate;
    let mut sample = 0u64;
    while (sample as f64) * bps < 32.0 {
        run(&mut processor, true, sample as f64 * bps, sample, &mut out);
        sample += block as u64;
    }
    run(&mut processor, false, sample as f64 * bps, sample, &mut out);
    let ons: Vec<u64> = out.iter().filter_map(|e| if let Out::On(at, _) = e { Some(*at) } else { None }).collect();
    println!("{} note-ons in 8 bars", ons.len());
    assert!(ons.len() >= 16, "the song plays ({} note-ons)", ons.len());
    // A 16th at 120 BPM and 48 kHz is exactly 6,000 samples.
    for at in &ons {
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
    let processor = processor.stop_processing();
    instance.deactivate(processor);
    let _ = common::pop909_root;
}
