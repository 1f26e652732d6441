//! The CP Piano plugin (nice-plug): a note-effect that plays a generated song in time with the
//! host. One struct implements `Plugin`; the CLAP and VST3 wrappers come from nice-plug.
//!
//! Threads: `process` (the audio thread) drains the worker's ring into the `Engine` and sends
//! the engine's notes to the host; it allocates nothing, locks nothing and never waits. The
//! worker (`worker.rs`) owns the model. Parameters are read atomically by both. The plugin state
//! stores the generated song and an optional weights folder, so a reopened project plays the
//! same song; a state that does not parse falls back to a fresh song, with the reason logged.

#[cfg(feature = "editor")]
pub mod editor;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use nice_plug::midi::{Channel, Key as MidiKey, VoiceID};
use nice_plug::prelude::*;

use crate::playback::engine::{Engine, NoteOut, PlaySettings, SongEvent, Transport};
use crate::generate::GenerationSettings;
use crate::music::key::Key;
use crate::generate::sampling::SamplingSettings;
use crate::playback::worker::{self, Command, ModelSource, StoredSong, Worker};

/// Events the ring between worker and audio thread holds.
const RING_CAPACITY: usize = 1 << 15;

fn key_name(v: i32) -> String {
    match v {
        0 => "Off".to_string(),
        k => Key::all().nth(k as usize - 1).map_or("Off".into(), |k| k.to_string()),
    }
}

fn key_value(s: &str) -> Option<i32> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Some(0);
    }
    let key: Key = s.parse().ok()?;
    Key::all().position(|k| k == key).map(|i| i as i32 + 1)
}

/// The plugin's parameters (all automatable) and persisted state.
#[derive(Params)]
pub struct CpPianoParams {
    #[id = "seed"]
    pub seed: IntParam,
    /// Rising edge: generate a new song with the current settings.
    #[id = "regenerate"]
    pub regenerate: BoolParam,
    /// Scales every family's sampling temperature.
    #[id = "variety"]
    pub variety: FloatParam,
    #[id = "top_p"]
    pub top_p: FloatParam,
    #[id = "velocity"]
    pub velocity_scale: FloatParam,
    /// 0 = off, 1..=24 = C, Cm, C#, C#m, ...
    #[id = "key"]
    pub key_lock: IntParam,
    #[id = "max_bars"]
    pub max_bars: IntParam,
    /// The host bar where the song starts (1-based, 4/4).
    #[id = "start_bar"]
    pub start_bar: IntParam,
    /// MIDI channel of the output notes (1..=16).
    #[id = "channel"]
    pub channel: IntParam,
    #[id = "follow"]
    pub follow_transport: BoolParam,
    /// The generated song as JSON (`StoredSong`).
    #[persist = "song"]
    pub song: RwLock<String>,
    /// A custom weights folder; empty for the shipped model.
    #[persist = "weights"]
    pub weights: RwLock<String>,
}

impl Default for CpPianoParams {
    fn default() -> Self {
        CpPianoParams {
            seed: IntParam::new("Seed", 0, IntRange::Linear { min: 0, max: 9999 }),
            regenerate: BoolParam::new("Regenerate", false),
            variety: FloatParam::new("Variety", 1.0, FloatRange::Linear { min: 0.5, max: 2.0 }).with_step_size(0.01),
            top_p: FloatParam::new("Top-p", 0.9, FloatRange::Linear { min: 0.5, max: 1.0 }).with_step_size(0.01),
            velocity_scale: FloatParam::new("Velocity", 1.0, FloatRange::Linear { min: 0.25, max: 2.0 }).with_step_size(0.01),
            key_lock: IntParam::new("Key lock", 0, IntRange::Linear { min: 0, max: 24 })
                .with_value_to_string(Arc::new(key_name))
                .with_string_to_value(Arc::new(key_value)),
            max_bars: IntParam::new("Max bars", 128, IntRange::Linear { min: 4, max: 512 }),
            start_bar: IntParam::new("Start bar", 1, IntRange::Linear { min: 1, max: 999 }),
            channel: IntParam::new("MIDI channel", 1, IntRange::Linear { min: 1, max: 16 }),
            follow_transport: BoolParam::new("Follow transport", true),
            song: RwLock::new(String::new()),
            weights: RwLock::new(String::new()),
        }
    }
}

impl CpPianoParams {
    /// Generation settings from the current parameter values.
    pub fn generation_settings(&self) -> GenerationSettings {
        let key = self.key_lock.value();
        GenerationSettings {
            seed: self.seed.value() as u64,
            sampling: SamplingSettings::default().adjusted(self.variety.value(), Some(self.top_p.value())),
            max_bars: Some(self.max_bars.value() as u32),
            key: if key > 0 { Key::all().nth(key as usize - 1) } else { None },
            ..GenerationSettings::default()
        }
    }
}

/// The plugin.
pub struct CpPiano {
    params: Arc<CpPianoParams>,
    /// Status, progress and the finished song, shared with the worker and the editor.
    shared: Arc<worker::Shared>,
    engine: Engine,
    ring: Option<rtrb::Consumer<SongEvent>>,
    worker: Option<Worker>,
    sample_rate: f64,
    regenerate_was_on: bool,
}

impl Default for CpPiano {
    fn default() -> Self {
        CpPiano {
            params: Arc::new(CpPianoParams::default()),
            shared: Arc::new(worker::Shared::default()),
            engine: Engine::new(),
            ring: None,
            worker: None,
            sample_rate: 44_100.0,
            regenerate_was_on: false,
        }
    }
}

impl CpPiano {
    /// Starts the worker and gives it the saved song or asks for a new one.
    fn start_worker(&mut self) {
        let weights = self.params.weights.read().map(|w| w.clone()).unwrap_or_default();
        let source = if weights.trim().is_empty() { ModelSource::Shipped } else { ModelSource::Folder(PathBuf::from(weights)) };
        let (producer, consumer) = rtrb::RingBuffer::new(RING_CAPACITY);
        let params = self.params.clone();
        let settings = Box::new(move || params.generation_settings());
        let params = self.params.clone();
        let keep = Box::new(move |song: &StoredSong| {
            if let (Ok(json), Ok(mut saved)) = (serde_json::to_string(song), params.song.write()) {
                *saved = json;
            }
        });
        let worker = worker::spawn(source, self.shared.clone(), producer, settings, keep);
        let saved = self.params.song.read().map(|s| s.clone()).unwrap_or_default();
        let command = if saved.trim().is_empty() {
            Command::Generate(self.params.generation_settings())
        } else {
            match serde_json::from_str::<StoredSong>(&saved) {
                Ok(song) => Command::Restore(song),
                Err(e) => {
                    nice_warn!("CP Piano: the saved song does not load ({e}); generating a new one");
                    Command::Generate(self.params.generation_settings())
                }
            }
        };
        let _ = worker.commands.send(command);
        self.engine = Engine::new();
        self.ring = Some(consumer);
        self.worker = Some(worker);
    }
}

impl Plugin for CpPiano {
    const NAME: &'static str = "CP Piano";
    const VENDOR: &'static str = "CP Piano";
    const URL: &'static str = "https://example.invalid/cp-piano";
    const EMAIL: &'static str = "cp-piano@example.invalid";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const AUDIO_IO_LAYOUTS: &'static [AudioIOLayout] = &[AudioIOLayout {
        main_input_channels: None,
        main_output_channels: None,
        ..AudioIOLayout::const_default()
    }];
    const MIDI_INPUT: MidiConfig = MidiConfig::None;
    const MIDI_OUTPUT: MidiConfig = MidiConfig::Basic;
    type SysExMessage = ();
    type BackgroundTask = ();
    #[cfg(feature = "editor")]
    type Editor = nice_plug_egui::EguiEditor<crate::plugin::editor::CpPianoEditor>;
    #[cfg(not(feature = "editor"))]
    type Editor = ();

    #[cfg(feature = "editor")]
    fn editor(&mut self, _executor: AsyncExecutor<Self>) -> Option<Self::Editor> {
        crate::plugin::editor::create(self.params.clone(), self.shared.clone())
    }

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
    }

    fn activate(&mut self, _layout: &AudioIOLayout, buffer_config: &BufferConfig, _context: &mut impl ActivateContext<Self>) -> bool {
        self.sample_rate = buffer_config.sample_rate as f64;
        if self.worker.is_none() {
            self.start_worker();
        }
        true
    }

    fn deactivate(&mut self) {
        self.engine.suspend();
    }

    fn reset(&mut self) {
        self.engine.suspend();
    }

    fn process(&mut self, buffer: &mut Buffer, _aux: &mut AuxiliaryBuffers, context: &mut impl ProcessContext<Self>) -> ProcessStatus {
        #[cfg(feature = "assert-no-alloc")]
        return assert_no_alloc::assert_no_alloc(|| self.process_block(buffer.samples() as u32, context));
        #[cfg(not(feature = "assert-no-alloc"))]
        self.process_block(buffer.samples() as u32, context)
    }
}

impl CpPiano {
    /// The body of `process`: audio thread, no allocation, no locks.
    fn process_block(&mut self, samples: u32, context: &mut impl ProcessContext<Self>) -> ProcessStatus {
        if let Some(ring) = self.ring.as_mut() {
            // Bounded per block: a flood of notes is taken over a few blocks.
            for _ in 0..4096 {
                match ring.pop() {
                    Ok(event) => self.engine.receive(event),
                    Err(_) => break,
                }
            }
        }
        let regenerate = self.params.regenerate.value();
        if regenerate && !self.regenerate_was_on {
            self.shared.regenerate_requests.fetch_add(1, Ordering::Relaxed);
        }
        self.regenerate_was_on = regenerate;
        let t = context.transport();
        let transport = Transport { playing: t.playing, tempo: t.tempo.unwrap_or(120.0), position: t.pos_beats() };
        let settings = PlaySettings {
            start_beat: (self.params.start_bar.value() - 1) as f64 * 4.0,
            velocity_scale: self.params.velocity_scale.value(),
            follow_transport: self.params.follow_transport.value(),
        };
        let channel = Channel::Number((self.params.channel.value() - 1).clamp(0, 15) as u8);
        self.engine.process(transport, settings, samples, self.sample_rate, &mut |e| {
            let event = match e {
                NoteOut::On { offset, pitch, velocity } => NoteEvent::NoteOn { timing: offset, voice_id: VoiceID::Wildcard, channel, key: MidiKey::Number(pitch), velocity },
                NoteOut::Off { offset, pitch } => NoteEvent::NoteOff { timing: offset, voice_id: VoiceID::Wildcard, channel, key: MidiKey::Number(pitch), velocity: 0.0 },
            };
            let _ = context.try_send_event(event);
        });
        self.shared.play_state.store(self.engine.state as u8, Ordering::Relaxed);
        if let Some(beat) = self.engine.playhead() {
            self.shared.playhead.store(beat, Ordering::Relaxed);
        }
        self.shared.tempo.store(transport.tempo, Ordering::Relaxed);
        ProcessStatus::Normal
    }
}

impl ClapPlugin for CpPiano {
    const CLAP_ID: &'static str = "org.cp-piano.cp-piano";
    const CLAP_DESCRIPTION: Option<&'static str> = Some("Composes whole pop-piano songs with a compound-word transformer, in time with the host");
    const CLAP_MANUAL_URL: Option<&'static str> = None;
    const CLAP_SUPPORT_URL: Option<&'static str> = None;
    const CLAP_FEATURES: &'static [ClapFeature] = &[ClapFeature::NoteEffect, ClapFeature::Utility];
}

impl Vst3Plugin for CpPiano {
    const VST3_CLASS_ID: [u8; 16] = *b"CPPianoCWTGen001";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] = &[Vst3SubCategory::Instrument, Vst3SubCategory::Generator];
}

nice_export_clap!(CpPiano);
nice_export_vst3!(CpPiano);
