//! The inference worker: a thread that owns the model, generates songs ahead of the playhead,
//! and hands their notes (in song beats) to the audio thread through a lock-free ring.
//!
//! Commands come over a crossbeam channel (from the plugin's main thread or editor); the audio
//! thread never sends commands: it bumps `Shared::regenerate_requests`, which the worker polls.
//! Live values (status, progress) are atomics. The finished song is kept in `Shared::song` for
//! the editor, MIDI export and the plugin state; the audio thread never touches it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use atomic_float::AtomicF64;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};

use crate::tokens::cp::Event;
use crate::playback::engine::{self, SongEvent};
use crate::generate::{Finish, GenerationSettings, Generator, Inference, NoteEvent};
use crate::model::cpu::Precision;


/// The engine's form of a generated note (the engine knows no other module's types).
pub fn engine_note(n: &NoteEvent) -> engine::Note {
    engine::Note { start: n.start, duration: n.duration, pitch: n.pitch, velocity: n.velocity }
}

/// What the worker is doing (stored in `Shared::status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Loading = 0,
    Generating = 1,
    Ready = 2,
    Error = 3,
}

impl Status {
    pub fn from_u8(v: u8) -> Status {
        match v {
            1 => Status::Generating,
            2 => Status::Ready,
            3 => Status::Error,
            _ => Status::Loading,
        }
    }
}

/// A generated song: what the plugin saves in the project and the editor shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSong {
    pub settings: GenerationSettings,
    pub notes: Vec<NoteEvent>,
    /// Song length in beats (a whole number of bars).
    pub end: f64,
    pub ended_with_eos: bool,
    pub words: usize,
}

impl StoredSong {
    /// The song as a plain `Song` (for MIDI export), at `bpm`.
    pub fn to_song(&self, bpm: f32) -> crate::music::song::Song {
        use crate::music::song::{Note, Song, TempoChange, TICKS_PER_BEAT};
        let mut song = Song { tempos: vec![TempoChange { tick: 0, bpm }], ..Song::default() };
        for n in &self.notes {
            song.notes.push(Note {
                onset: (n.start * TICKS_PER_BEAT as f64).round() as u32,
                duration: (n.duration * TICKS_PER_BEAT as f64).round() as u32,
                pitch: n.pitch,
                velocity: n.velocity,
            });
        }
        song.sort();
        song
    }
}

/// Values shared between the worker, the audio thread and the editor.
#[derive(Default)]
pub struct Shared {
    pub status: AtomicU8,
    /// Words generated of the current song.
    pub words: AtomicU32,
    /// Bars generated of the current song.
    pub bars: AtomicU32,
    /// Bumped by the audio thread when the Regenerate parameter fires.
    pub regenerate_requests: AtomicU32,
    /// What playback is doing (`engine::PlayState as u8`), written by the audio thread.
    pub play_state: AtomicU8,
    /// The playhead in song beats, written by the audio thread.
    pub playhead: AtomicF64,
    /// The host tempo (BPM), written by the audio thread (for MIDI export).
    pub tempo: AtomicF64,
    /// The last error, for the editor (never locked by the audio thread).
    pub error: Mutex<String>,
    /// The current song: complete, or the bars written so far while generating (never locked
    /// by the audio thread).
    pub song: Mutex<Option<StoredSong>>,
}

impl Shared {
    pub fn status(&self) -> Status {
        Status::from_u8(self.status.load(Ordering::Relaxed))
    }

    pub fn playhead(&self) -> f64 {
        self.playhead.load(Ordering::Relaxed)
    }

    /// The status line the editor shows: loading / generating with progress / ready / playing /
    /// waiting / finished / error with its message.
    pub fn status_text(&self) -> String {
        use crate::playback::engine::PlayState;
        let words = self.words.load(Ordering::Relaxed);
        let bars = self.bars.load(Ordering::Relaxed);
        match self.status() {
            Status::Loading => "Loading the model...".into(),
            Status::Generating => format!("Generating: {words} words, {bars} bars"),
            Status::Error => format!("Error: {}", self.error.lock().map(|e| e.clone()).unwrap_or_default()),
            Status::Ready => match self.play_state.load(Ordering::Relaxed) {
                s if s == PlayState::Playing as u8 => format!("Playing: bar {}", (self.playhead() / 4.0).floor() as i64 + 1),
                s if s == PlayState::Waiting as u8 => "Waiting for the worker to reach the playhead".into(),
                s if s == PlayState::Finished as u8 => "Finished".into(),
                _ => format!("Ready: {bars} bars, {words} words"),
            },
        }
    }

    /// The host tempo last seen (120 before any).
    pub fn tempo(&self) -> f64 {
        match self.tempo.load(Ordering::Relaxed) {
            t if t > 0.0 && t.is_finite() => t,
            _ => 120.0,
        }
    }
}

/// Requests to the worker.
#[derive(Debug, Clone)]
pub enum Command {
    /// Generate a new song.
    Generate(GenerationSettings),
    /// Play a song generated before (from the plugin state), without the model.
    Restore(StoredSong),
    Shutdown,
}

/// Where the model's weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Shipped,
    Folder(PathBuf),
}

/// A running worker.
pub struct Worker {
    pub commands: Sender<Command>,
    pub shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the worker asks of its owner (the plugin), besides commands.
pub struct Hooks {
    /// Settings for a regeneration that the audio thread requested.
    pub settings: Box<dyn Fn() -> GenerationSettings + Send>,
    /// Called with each newly finished song (e.g. to store it in the plugin state).
    pub keep: Box<dyn Fn(&StoredSong) + Send>,
    /// How many states the host has loaded so far: when it changes, the worker plays the song
    /// of the loaded state (`saved_song`), or a new one when that state has none or a broken one.
    pub state_loads: Box<dyn Fn() -> u64 + Send>,
    /// The song (JSON `StoredSong`) of the last loaded state.
    pub saved_song: Box<dyn Fn() -> String + Send>,
}

impl Hooks {
    /// Hooks with no plugin state behind them: regenerations use `settings`, songs go nowhere.
    pub fn stateless(settings: impl Fn() -> GenerationSettings + Send + 'static) -> Hooks {
        Hooks { settings: Box::new(settings), keep: Box::new(|_| {}), state_loads: Box::new(|| 0), saved_song: Box::new(String::new) }
    }

    /// What to play for a saved song (JSON): it, or a new song when it is empty or broken.
    pub fn command_for(&self, saved: &str) -> Command {
        if saved.trim().is_empty() {
            return Command::Generate((self.settings)());
        }
        match serde_json::from_str::<StoredSong>(saved) {
            Ok(song) => Command::Restore(song),
            Err(e) => {
                eprintln!("CP Piano: the saved song does not load ({e}); generating a new one");
                Command::Generate((self.settings)())
            }
        }
    }
}

/// Starts the worker thread: it loads the model, then waits for commands.
pub fn spawn(source: ModelSource, shared: Arc<Shared>, ring: rtrb::Producer<SongEvent>, hooks: Hooks) -> Worker {
    let (commands, receiver) = crossbeam_channel::unbounded();
    let thread_shared = shared.clone();
    // What counts as new is fixed here, before the thread starts, so a Regenerate pressed while
    // the model loads (or before the thread runs) is not lost.
    let seen = Seen { requests: shared.regenerate_requests.load(Ordering::Relaxed), loads: (hooks.state_loads)() };
    let thread = std::thread::Builder::new()
        .name("cp-piano-worker".into())
        .spawn(move || run(source, ring, receiver, thread_shared, hooks, seen))
        .expect("spawning the worker thread");
    Worker { commands, shared, thread: Some(thread) }
}

/// The model on a CUDA GPU when this build has the `cuda` feature and a GPU answers, else the
/// int8 recurrent model on the CPU.
fn load(source: &ModelSource) -> anyhow::Result<Inference> {
    let dir = match source {
        ModelSource::Shipped => None,
        ModelSource::Folder(p) => Some(p.as_path()),
    };
    Ok(Inference::load(dir, cfg!(feature = "cuda"), Precision::Int8)?.0)
}

/// Pushes into the ring, waiting while it is full; false if a shutdown came meanwhile.
fn push(ring: &mut rtrb::Producer<SongEvent>, event: SongEvent, receiver: &Receiver<Command>, pending: &mut Option<Command>) -> bool {
    let mut event = event;
    loop {
        match ring.push(event) {
            Ok(()) => return true,
            Err(rtrb::PushError::Full(e)) => {
                event = e;
                match receiver.recv_timeout(Duration::from_millis(5)) {
                    Ok(Command::Shutdown) => return false,
                    Ok(other) => *pending = Some(other),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return false,
                }
            }
        }
    }
}

/// A regeneration or a state load that happened since the worker last looked.
fn news(shared: &Shared, hooks: &Hooks, seen_requests: &mut u32, seen_loads: &mut u64) -> Option<Command> {
    let loads = (hooks.state_loads)();
    if loads != *seen_loads {
        *seen_loads = loads;
        return Some(hooks.command_for(&(hooks.saved_song)()));
    }
    let requests = shared.regenerate_requests.load(Ordering::Relaxed);
    if requests != *seen_requests {
        *seen_requests = requests;
        return Some(Command::Generate((hooks.settings)()));
    }
    None
}

/// The regeneration requests and state loads the worker has acted on.
struct Seen {
    requests: u32,
    loads: u64,
}

fn run(source: ModelSource, mut ring: rtrb::Producer<SongEvent>, receiver: Receiver<Command>, shared: Arc<Shared>, hooks: Hooks, seen: Seen) {
    let (mut seen_requests, mut seen_loads) = (seen.requests, seen.loads);
    shared.status.store(Status::Loading as u8, Ordering::Relaxed);
    let model = match load(&source) {
        Ok(m) => Some(m),
        Err(e) => {
            *shared.error.lock().expect("error lock") = format!("cannot load the model: {e:#}");
            shared.status.store(Status::Error as u8, Ordering::Relaxed);
            None
        }
    };
    if model.is_some() {
        shared.status.store(Status::Ready as u8, Ordering::Relaxed);
    }
    let mut pending: Option<Command> = None;
    loop {
        let command = match pending.take() {
            Some(c) => c,
            None => match receiver.recv_timeout(Duration::from_millis(20)) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => match news(&shared, &hooks, &mut seen_requests, &mut seen_loads) {
                    Some(c) => c,
                    None => continue,
                },
                Err(RecvTimeoutError::Disconnected) => return,
            },
        };
        match command {
            Command::Shutdown => return,
            Command::Restore(song) => {
                let mut ok = push(&mut ring, SongEvent::Reset { state: seen_loads }, &receiver, &mut pending);
                for n in &song.notes {
                    ok = ok && push(&mut ring, SongEvent::Note(engine_note(n)), &receiver, &mut pending);
                }
                ok = ok && push(&mut ring, SongEvent::End(song.end), &receiver, &mut pending);
                if !ok {
                    return;
                }
                shared.words.store(song.words as u32, Ordering::Relaxed);
                shared.bars.store((song.end / 4.0) as u32, Ordering::Relaxed);
                *shared.song.lock().expect("song lock") = Some(song);
                if model.is_some() {
                    shared.status.store(Status::Ready as u8, Ordering::Relaxed);
                }
            }
            Command::Generate(settings) => {
                let Some(model) = &model else { continue };
                shared.status.store(Status::Generating as u8, Ordering::Relaxed);
                *shared.song.lock().expect("song lock") = None;
                if !push(&mut ring, SongEvent::Reset { state: seen_loads }, &receiver, &mut pending) {
                    return;
                }
                let mut generator = match Generator::try_with_prime(model, settings.clone(), &[crate::tokens::cp::Word::BAR]) {
                    Ok(g) => g,
                    Err(e) => {
                        *shared.error.lock().expect("error lock") = format!("the model failed: {e}");
                        shared.status.store(Status::Error as u8, Ordering::Relaxed);
                        continue;
                    }
                };
                let mut notes = Vec::new();
                let mut interrupted = false;
                while let Some(step) = generator.next_step() {
                    let event = match step.event {
                        Event::Note(n) => {
                            let note = NoteEvent::from_placed(&n);
                            notes.push(note);
                            Some(SongEvent::Note(engine_note(&note)))
                        }
                        Event::Bar(b) => {
                            // The editor shows the song as it is written, bar by bar.
                            if let Ok(mut shown) = shared.song.try_lock() {
                                *shown = Some(StoredSong {
                                    settings: settings.clone(),
                                    notes: notes.clone(),
                                    end: b as f64 * 4.0,
                                    ended_with_eos: false,
                                    words: generator.words().len(),
                                });
                            }
                            Some(SongEvent::ReadyUntil(b as f64 * 4.0))
                        }
                        _ => None,
                    };
                    if let Some(e) = event {
                        if !push(&mut ring, e, &receiver, &mut pending) {
                            return;
                        }
                    }
                    shared.words.store(generator.words().len() as u32, Ordering::Relaxed);
                    shared.bars.store(generator.bars(), Ordering::Relaxed);
                    // A new command (regenerate, restore, state load, shutdown) cuts this song short.
                    if pending.is_none() {
                        if let Ok(c) = receiver.try_recv() {
                            pending = Some(c);
                        }
                    }
                    if pending.is_none() {
                        pending = news(&shared, &hooks, &mut seen_requests, &mut seen_loads);
                    }
                    if pending.is_some() {
                        interrupted = true;
                        break;
                    }
                }
                if interrupted {
                    continue;
                }
                let end = generator.grid().bars as f64 * 4.0;
                if !push(&mut ring, SongEvent::End(end), &receiver, &mut pending) {
                    return;
                }
                let song = StoredSong {
                    settings,
                    notes,
                    end,
                    ended_with_eos: generator.finish() == Some(Finish::Eos),
                    words: generator.words().len(),
                };
                (hooks.keep)(&song);
                *shared.song.lock().expect("song lock") = Some(song);
                // A model failure keeps the song so far playable and says what went wrong.
                if let Some(e) = generator.error() {
                    *shared.error.lock().expect("error lock") = format!("the model failed: {e}");
                    shared.status.store(Status::Error as u8, Ordering::Relaxed);
                } else {
                    shared.status.store(Status::Ready as u8, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The folder "Export MIDI" writes to: `$HOME/Music/CP Piano` (the current folder without a
/// home).
pub fn default_export_dir() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from).join("Music").join("CP Piano")
}

/// Writes a song to `dir/cp-piano-seed<SEED>-<UNIX SECONDS>.mid` at `bpm`; returns the path.
pub fn export_midi(song: &StoredSong, bpm: f64, dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let path = dir.join(format!("cp-piano-seed{}-{seconds}.mid", song.settings.seed));
    let bytes = crate::midi::export::export_bytes(&song.to_song(bpm as f32), 0);
    crate::data::dataset::write_atomically(&path, &bytes)?;
    Ok(path)
}
