//! The CP Piano plugin (nice-plug): a note-effect that plays a generated song in time with the
//! host. One struct implements `Plugin`; the CLAP and VST3 wrappers come from nice-plug.
//!
//! Threads: `process` (the audio thread) drains the worker's ring into the `Engine` and sends
//! the engine's notes to the host; the notes the host sends in go to Listen mode's `Recorder`
//! (and, with MIDI thru, out again in time order with the song's). It allocates nothing, locks
//! nothing and never waits. The
//! worker (`worker.rs`) owns the model. Parameters are read atomically by both. The plugin state
//! stores the generated song and an optional weights folder, so a reopened project plays the
//! same song; a state that does not parse falls back to a fresh song, with the reason logged.

#[cfg(feature = "editor")]
pub mod editor;

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use nice_plug::midi::{Channel, Key as MidiKey, VoiceID};
use nice_plug::params::persist::PersistentField;
use nice_plug::prelude::*;

use crate::playback::engine::{Engine, NoteOut, PlaySettings, SongEvent, Transport};
use crate::playback::preview::Preview;
use crate::playback::recorder::{Heard, ListenState, Recorder, Window, HEARD_CAPACITY};
use crate::generate::form::{Form, FormError, POP_FORM, SECTION_BARS};
use crate::generate::GenerationSettings;
use crate::music::key::Key;
use crate::generate::sampling::SamplingSettings;
use crate::playback::shared::Shared;
use crate::playback::song::StoredSong;
use crate::playback::worker::{self, Hooks, ModelSource, Worker};

/// Events the ring between worker and audio thread holds.
const RING_CAPACITY: usize = 1 << 15;
/// Note events of one block the preview voice can take (more are sent but not sounded).
const BLOCK_EVENTS: usize = 4096;
/// Incoming note events of one block MIDI thru passes on (more are dropped).
const THRU_EVENTS: usize = 1024;

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

/// The generated song as JSON (`StoredSong`), persisted in the plugin state. It counts the
/// states loaded into it: nice-plug calls `set` when the host loads a state (and has no other
/// callback for that), so the audio thread and the worker notice a load by the count.
#[derive(Default)]
pub struct SavedSong {
    json: RwLock<String>,
    loads: AtomicU64,
}

impl SavedSong {
    /// States loaded so far.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Acquire)
    }

    pub fn json(&self) -> String {
        self.json.read().map(|j| j.clone()).unwrap_or_default()
    }

    /// Keeps a song the worker wrote (not a state load).
    pub fn store(&self, json: String) {
        if let Ok(mut j) = self.json.write() {
            *j = json;
        }
    }
}

impl<'a> PersistentField<'a, String> for SavedSong {
    fn set(&self, new_value: String) {
        self.store(new_value);
        self.loads.fetch_add(1, Ordering::AcqRel);
    }

    fn map<F, R>(&self, f: F) -> R
    where
        F: Fn(&String) -> R,
    {
        match self.json.read() {
            Ok(j) => f(&j),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }
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
    /// Fewer (-1) to more (+1) notes per bar.
    #[id = "density"]
    pub density: FloatParam,
    /// Bars in each section of the song's form (see `form`).
    #[id = "section_bars"]
    pub section_bars: IntParam,
    /// The host bar where the song starts (1-based, 4/4).
    #[id = "start_bar"]
    pub start_bar: IntParam,
    /// MIDI channel of the output notes (1..=16).
    #[id = "channel"]
    pub channel: IntParam,
    /// 0: both hands on `channel`; 1..=16: the left hand (notes below middle C) on this one.
    #[id = "left_channel"]
    pub left_channel: IntParam,
    #[id = "follow"]
    pub follow_transport: BoolParam,
    /// Sound the notes with the built-in preview voice (for hosts that cannot route MIDI).
    #[id = "preview"]
    pub preview: BoolParam,
    /// Listen mode: record the notes played into the plugin from the start bar for
    /// `listen_bars` bars, then continue them (see `playback::recorder`).
    #[id = "listen"]
    pub listen: BoolParam,
    #[id = "listen_bars"]
    pub listen_bars: IntParam,
    /// Pass the notes played into the plugin to its output.
    #[id = "midi_thru"]
    pub midi_thru: BoolParam,
    /// The generated song (see `SavedSong`).
    #[persist = "song"]
    pub song: SavedSong,
    /// A custom weights folder; empty for the shipped model.
    #[persist = "weights"]
    pub weights: RwLock<String>,
    /// A chord progression to follow ("C G Am F", "C:2 G:2 | Am F"; empty: the model's own),
    /// looped until the song ends. Typed in the editor; read only by the worker.
    #[persist = "chords"]
    pub chords: RwLock<String>,
    /// The song's form: section letters ("ABABCB"; a later section with an earlier one's letter
    /// repeats it) or "none". Typed in the editor; read only by the worker.
    #[persist = "form"]
    pub form: RwLock<String>,
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
            // Shown with two decimals; a value that snaps to -0 shows as 0.00, so text and value
            // round-trip (hosts and clap-validator check that).
            density: FloatParam::new("Density", 0.0, FloatRange::Linear { min: -1.0, max: 1.0 })
                .with_step_size(0.05)
                .with_value_to_string(Arc::new(|v| format!("{:.2}", v + 0.0))),
            section_bars: IntParam::new("Section bars", SECTION_BARS as i32, IntRange::Linear { min: 1, max: 32 }),
            start_bar: IntParam::new("Start bar", 1, IntRange::Linear { min: 1, max: 999 }),
            channel: IntParam::new("MIDI channel", 1, IntRange::Linear { min: 1, max: 16 }),
            left_channel: IntParam::new("Left hand channel", 0, IntRange::Linear { min: 0, max: 16 })
                .with_value_to_string(Arc::new(|v| if v == 0 { "Same".to_string() } else { v.to_string() }))
                .with_string_to_value(Arc::new(|s| if s.trim().eq_ignore_ascii_case("same") { Some(0) } else { s.trim().parse().ok() })),
            follow_transport: BoolParam::new("Follow transport", true),
            preview: BoolParam::new("Preview voice", false),
            listen: BoolParam::new("Listen", false),
            listen_bars: IntParam::new("Listen bars", 4, IntRange::Linear { min: 1, max: 32 }),
            midi_thru: BoolParam::new("MIDI thru", true),
            song: SavedSong::default(),
            weights: RwLock::new(String::new()),
            chords: RwLock::new(String::new()),
            form: RwLock::new(POP_FORM.to_string()),
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
            density: self.density.value(),
            chords: self.progression().ok().flatten(),
            chords_loop: true,
            form: self.form().unwrap_or_else(|_| Form::free()),
            ..GenerationSettings::default()
        }
    }

    /// The form typed in the editor, in sections of `section_bars`, or why it does not read (then
    /// songs have no form).
    pub fn form(&self) -> Result<Form, FormError> {
        let text = self.form.read().map(|t| t.clone()).unwrap_or_default();
        Form::new(&text, self.section_bars.value() as u32)
    }

    /// The progression typed in the editor: none when the text is empty, or why it does not
    /// read (then songs follow no progression).
    pub fn progression(&self) -> Result<Option<crate::generate::chords::Progression>, crate::music::TextError> {
        let text = self.chords.read().map(|t| t.trim().to_string()).unwrap_or_default();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some)
    }
}

/// The plugin.
pub struct CpPiano {
    params: Arc<CpPianoParams>,
    /// Status, progress and the finished song, shared with the worker and the editor.
    shared: Arc<Shared>,
    engine: Engine,
    ring: Option<rtrb::Consumer<SongEvent>>,
    worker: Option<Worker>,
    sample_rate: f64,
    regenerate_was_on: bool,
    preview: Preview,
    /// The block's note events, for the preview voice (reserved; never grows).
    block_events: Vec<NoteOut>,
    /// The state loads the worker had seen when it began the song in the engine (its `Reset`).
    song_state: u64,
    /// After a state load: the old song is dropped and the ring is skipped up to the worker's
    /// `Reset` of a song begun after that load.
    awaiting_song: bool,
    /// Listen mode's recorder and its ring to the worker.
    recorder: Recorder,
    heard: Option<rtrb::Producer<Heard>>,
    /// The block's incoming note events MIDI thru passes on (reserved; never grows).
    thru: Vec<PluginNoteEvent<CpPiano>>,
}

impl Default for CpPiano {
    fn default() -> Self {
        CpPiano {
            params: Arc::new(CpPianoParams::default()),
            shared: Arc::new(Shared::default()),
            engine: Engine::new(),
            ring: None,
            worker: None,
            sample_rate: 44_100.0,
            regenerate_was_on: false,
            preview: Preview::new(44_100.0),
            block_events: Vec::with_capacity(BLOCK_EVENTS),
            song_state: 0,
            awaiting_song: false,
            recorder: Recorder::new(),
            heard: None,
            thru: Vec::with_capacity(THRU_EVENTS),
        }
    }
}

impl CpPiano {
    /// Starts the worker and gives it the saved song or asks for a new one.
    fn start_worker(&mut self) {
        let weights = self.params.weights.read().map(|w| w.clone()).unwrap_or_default();
        let source = if weights.trim().is_empty() { ModelSource::Shipped } else { ModelSource::Folder(PathBuf::from(weights)) };
        let (producer, consumer) = rtrb::RingBuffer::new(RING_CAPACITY);
        let (heard, heard_by_worker) = rtrb::RingBuffer::new(HEARD_CAPACITY);
        let (p1, p2, p3, p4) = (self.params.clone(), self.params.clone(), self.params.clone(), self.params.clone());
        let hooks = Hooks {
            settings: Box::new(move || p1.generation_settings()),
            keep: Box::new(move |song: &StoredSong| {
                if let Ok(json) = serde_json::to_string(song) {
                    p2.song.store(json);
                }
            }),
            state_loads: Box::new(move || p3.song.loads()),
            saved_song: Box::new(move || p4.song.json()),
            heard: Some(heard_by_worker),
        };
        let first = hooks.command_for(&self.params.song.json());
        let worker = worker::spawn(source, self.shared.clone(), producer, hooks);
        let _ = worker.commands.send(first);
        self.engine = Engine::new();
        self.ring = Some(consumer);
        self.heard = Some(heard);
        self.recorder = Recorder::new();
        self.awaiting_song = false;
        self.worker = Some(worker);
    }
}

impl Plugin for CpPiano {
    const NAME: &'static str = "CP Piano";
    const VENDOR: &'static str = "CP Piano";
    const URL: &'static str = "https://example.invalid/cp-piano";
    const EMAIL: &'static str = "cp-piano@example.invalid";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    // A stereo main output (silent): hosts such as Ableton Live refuse a plugin without an
    // audio bus. The notes go out as MIDI.
    const AUDIO_IO_LAYOUTS: &'static [AudioIOLayout] = &[AudioIOLayout {
        main_input_channels: None,
        main_output_channels: NonZeroU32::new(2),
        ..AudioIOLayout::const_default()
    }];
    // Notes in: Listen mode records them, MIDI thru passes them on (CLAP note port, VST3 event
    // input).
    const MIDI_INPUT: MidiConfig = MidiConfig::Basic;
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
        self.preview.set_sample_rate(buffer_config.sample_rate);
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
        return assert_no_alloc::assert_no_alloc(|| self.process_block(buffer, context));
        #[cfg(not(feature = "assert-no-alloc"))]
        self.process_block(buffer, context)
    }
}

impl CpPiano {
    /// The body of `process`: audio thread, no allocation, no locks.
    fn process_block(&mut self, buffer: &mut Buffer, context: &mut impl ProcessContext<Self>) -> ProcessStatus {
        let samples = buffer.samples() as u32;
        let outputs = buffer.as_slice();
        for channel in outputs.iter_mut() {
            channel.fill(0.0);
        }
        let send = |context: &mut _, e: NoteOut| {
            let event = match e {
                NoteOut::On { offset, pitch, velocity, channel } => NoteEvent::NoteOn { timing: offset, voice_id: VoiceID::Wildcard, channel: Channel::Number(channel), key: MidiKey::Number(pitch), velocity },
                NoteOut::Off { offset, pitch, channel } => NoteEvent::NoteOff { timing: offset, voice_id: VoiceID::Wildcard, channel: Channel::Number(channel), key: MidiKey::Number(pitch), velocity: 0.0 },
            };
            let _ = ProcessContext::<Self>::try_send_event(context, event);
        };
        // A state loaded after the song in the engine began: its song is the one that plays
        // from now on. The old one stops here; the worker's next song starts it.
        let loads = self.params.song.loads();
        if self.song_state < loads && !self.awaiting_song {
            self.awaiting_song = true;
            self.engine.hold(&mut |e| send(context, e));
            self.preview.silence();
        }
        if let Some(ring) = self.ring.as_mut() {
            // Bounded per block: a flood of notes is taken over a few blocks.
            for _ in 0..4096 {
                match ring.pop() {
                    Ok(SongEvent::Reset { state }) => {
                        self.song_state = state;
                        if state >= loads {
                            self.awaiting_song = false;
                        }
                        if !self.awaiting_song {
                            self.engine.receive(SongEvent::Reset { state });
                        }
                    }
                    Ok(_) if self.awaiting_song => {}
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
        let transport = Transport { playing: t.playing, tempo: t.tempo.unwrap_or(120.0), position: t.pos_beats(), loop_range: t.loop_range_beats };
        let settings = PlaySettings {
            start_beat: (self.params.start_bar.value() - 1) as f64 * 4.0,
            velocity_scale: self.params.velocity_scale.value(),
            follow_transport: self.params.follow_transport.value(),
            channel: (self.params.channel.value() - 1).clamp(0, 15) as u8,
            left_hand: match self.params.left_channel.value() {
                0 => None,
                c => Some((c - 1).clamp(0, 15) as u8),
            },
            split_pitch: crate::music::song::HAND_SPLIT,
        };
        self.listen(context, transport, settings.start_beat, samples);
        let block_events = &mut self.block_events;
        block_events.clear();
        // MIDI thru and the song's notes go out merged in sample order. While Listen mode
        // waits for or records the producer's bars, the song is silent (its continuation of
        // them replaces it).
        let (thru, mut passed) = (&self.thru, 0);
        let listening = matches!(self.recorder.state, ListenState::Armed | ListenState::Recording);
        let mut emit = |e: NoteOut| {
            while let Some(event) = thru.get(passed).filter(|t| t.timing() <= e.offset()) {
                let _ = ProcessContext::<Self>::try_send_event(context, *event);
                passed += 1;
            }
            send(context, e);
            if block_events.len() < block_events.capacity() {
                block_events.push(e);
            }
        };
        if listening {
            self.engine.all_notes_off(0, &mut emit);
            self.engine.suspend();
        } else {
            self.engine.process(transport, settings, samples, self.sample_rate, &mut emit);
        }
        for event in &thru[passed..] {
            let _ = ProcessContext::<Self>::try_send_event(context, *event);
        }
        // The preview voice sounds the same notes into the (otherwise silent) output.
        if self.params.preview.value() {
            if let [left, right, ..] = outputs {
                self.preview.render(&self.block_events, left, right);
            }
        } else if self.preview.sounding() > 0 {
            self.preview.silence();
        }
        self.shared.play_state.store(self.engine.state as u8, Ordering::Relaxed);
        if let Some(beat) = self.engine.playhead() {
            self.shared.playhead.store(beat, Ordering::Relaxed);
        }
        self.shared.tempo.store(transport.tempo, Ordering::Relaxed);
        self.shared.listen_state.store(self.recorder.state as u8, Ordering::Relaxed);
        ProcessStatus::Normal
    }

    /// Takes the block's incoming note events: Listen mode's recorder hears them at their host
    /// beats, and MIDI thru keeps them (in `thru`) to pass on.
    fn listen(&mut self, context: &mut impl ProcessContext<Self>, transport: Transport, start_beat: f64, samples: u32) {
        self.thru.clear();
        let thru_on = self.params.midi_thru.value();
        let beats_per_sample = transport.tempo / 60.0 / self.sample_rate;
        let window = Window { start: start_beat, bars: self.params.listen_bars.value().clamp(1, 32) as u32 };
        let (Some(heard), position) = (self.heard.as_mut(), transport.position) else {
            while context.next_event().is_some() {}
            return;
        };
        self.recorder.set_listen(self.params.listen.value(), heard);
        let from = position.unwrap_or(0.0);
        let playing = transport.playing && position.is_some();
        self.recorder.begin_block(playing, from, from + samples as f64 * beats_per_sample, window, heard);
        while let Some(event) = context.next_event() {
            let beat = |timing: u32| from + timing as f64 * beats_per_sample;
            match event {
                NoteEvent::NoteOn { timing, key: MidiKey::Number(pitch), velocity, .. } => self.recorder.note_on(beat(timing), pitch, (velocity * 127.0).round().clamp(1.0, 127.0) as u8, heard),
                NoteEvent::NoteOff { timing, key, .. } => match key {
                    MidiKey::Number(pitch) => self.recorder.note_off(beat(timing), pitch, heard),
                    // A note-off for any key ends every held note.
                    MidiKey::Wildcard => (0..128).for_each(|pitch| self.recorder.note_off(beat(timing), pitch, heard)),
                },
                _ => continue,
            }
            if thru_on && self.thru.len() < self.thru.capacity() {
                self.thru.push(event);
            }
        }
        self.recorder.end_block(from + samples as f64 * beats_per_sample, heard);
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
