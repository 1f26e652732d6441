//! The inference worker: a thread that owns the model, generates songs ahead of the playhead,
//! and hands their notes (in song beats) to the audio thread through a lock-free ring.
//!
//! Commands come over a crossbeam channel (from the plugin's main thread or editor); the audio
//! thread never sends commands: it bumps `Shared::regenerate_requests`, which the worker polls,
//! and Listen mode's recorder sends the notes it heard through a ring of its own
//! (`Hooks::heard`), which the worker drains as it polls: a complete clip is continued.
//! Live values (status, progress) are atomics in `shared`; the finished song (`song`) is kept in
//! `Shared::song` for the editor, MIDI export and the plugin state; the audio thread never
//! touches it.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::generate::{Finish, GenerationSettings, Generator, Inference, NoteEvent};
use crate::model::cpu::Precision;
use crate::playback::engine::{self, SongEvent};
use crate::playback::recorder::{Heard, HeardNote};
use crate::playback::shared::{Shared, Status};
use crate::playback::song::{stored_song, StoredSong};
use crate::tokens::cp::{Event, Word};

/// The engine's form of a generated note (the engine knows no other module's types).
pub fn engine_note(n: &NoteEvent) -> engine::Note {
    engine::Note { start: n.start, duration: n.duration, pitch: n.pitch, velocity: n.velocity }
}

/// Requests to the worker.
#[derive(Debug, Clone)]
pub enum Command {
    /// Generate a new song.
    Generate(GenerationSettings),
    /// Keep bars 1..`bar` - 1 of the current song (bars count from 1) and write the rest anew at
    /// `seed`, with the song's settings. The song before becomes the undo.
    RegenerateFrom { bar: u32, seed: u64 },
    /// Swap back to the song before the last regeneration (again: redo).
    Undo,
    /// Play a song generated before (from the plugin state), without the model.
    Restore(StoredSong),
    /// Generate `count` takes of the current settings together (seeds seed, seed + 1, ...),
    /// keep them in `Shared::takes` and play the first.
    Takes { count: usize },
    /// Play take `index` (from 0) of the last takes, and keep it as the song.
    PickTake(usize),
    /// Continue the producer's clip (Listen mode): its notes (beats from its start) are the
    /// song's first `bars` bars, as the prime; the song plays on from the bar after, with the
    /// current settings. The clip's own notes are not played back (the producer plays them).
    Continue { clip: Vec<HeardNote>, bars: u32 },
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
    /// What Listen mode's recorder heard (the plugin's audio thread), when there is one.
    pub heard: Option<rtrb::Consumer<Heard>>,
}

impl Hooks {
    /// Hooks with no plugin state behind them: regenerations use `settings`, songs go nowhere.
    pub fn stateless(settings: impl Fn() -> GenerationSettings + Send + 'static) -> Hooks {
        Hooks { settings: Box::new(settings), keep: Box::new(|_| {}), state_loads: Box::new(|| 0), saved_song: Box::new(String::new), heard: None }
    }

    /// What to play for a saved song (JSON): it, or a new song when it is empty or broken.
    pub fn command_for(&self, saved: &str) -> Command {
        if saved.trim().is_empty() {
            return Command::Generate((self.settings)());
        }
        match StoredSong::from_saved(saved) {
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
    let seen = Seen {
        requests: shared.regenerate_requests.load(Ordering::Relaxed),
        loads: (hooks.state_loads)(),
        regenerate_from: shared.regenerate_from.load(Ordering::Relaxed) >> 32,
        undos: shared.undo_requests.load(Ordering::Relaxed),
        takes: shared.takes_requests.load(Ordering::Relaxed) >> 32,
        picks: shared.take_picks.load(Ordering::Relaxed) >> 32,
        clip: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("cp-piano-worker".into())
        .spawn(move || run(source, ring, receiver, thread_shared, hooks, seen))
        .expect("spawning the worker thread");
    Worker { commands, shared, thread: Some(thread) }
}

/// The model on a CUDA GPU when this build has the `cuda` feature and a GPU answers, else the
/// int8 recurrent model on the CPU.
fn load(source: &ModelSource) -> Result<Inference, crate::model::weights::WeightsError> {
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

/// A regeneration, an undo, a state load or a clip Listen mode completed since the worker last
/// looked.
fn news(shared: &Shared, hooks: &mut Hooks, seen: &mut Seen) -> Option<Command> {
    if let Some(heard) = hooks.heard.as_mut() {
        while let Ok(event) = heard.pop() {
            match event {
                Heard::Note(note) => seen.clip.push(note),
                Heard::Cancel => seen.clip.clear(),
                Heard::Done { bars } => return Some(Command::Continue { clip: std::mem::take(&mut seen.clip), bars }),
            }
        }
    }
    let loads = (hooks.state_loads)();
    if loads != seen.loads {
        seen.loads = loads;
        return Some(hooks.command_for(&(hooks.saved_song)()));
    }
    let requests = shared.regenerate_requests.load(Ordering::Relaxed);
    if requests != seen.requests {
        seen.requests = requests;
        return Some(Command::Generate((hooks.settings)()));
    }
    let from = shared.regenerate_from.load(Ordering::Relaxed);
    if from >> 32 != seen.regenerate_from {
        seen.regenerate_from = from >> 32;
        // A new seed each time: the song's seed moved on by the request count.
        let seed = shared.song.lock().ok().and_then(|s| s.as_ref().map(|s| s.settings.seed)).unwrap_or(0);
        return Some(Command::RegenerateFrom { bar: from as u32, seed: seed.wrapping_add(1) });
    }
    let undos = shared.undo_requests.load(Ordering::Relaxed);
    if undos != seen.undos {
        seen.undos = undos;
        return Some(Command::Undo);
    }
    let takes = shared.takes_requests.load(Ordering::Relaxed);
    if takes >> 32 != seen.takes {
        seen.takes = takes >> 32;
        return Some(Command::Takes { count: takes as u32 as usize });
    }
    let pick = shared.take_picks.load(Ordering::Relaxed);
    if pick >> 32 != seen.picks {
        seen.picks = pick >> 32;
        return Some(Command::PickTake(pick as u32 as usize));
    }
    None
}

/// The requests and state loads the worker has acted on.
struct Seen {
    requests: u32,
    loads: u64,
    regenerate_from: u64,
    undos: u32,
    takes: u64,
    picks: u64,
    /// The notes Listen mode has sent of the pass in progress.
    clip: Vec<HeardNote>,
}

/// The worker's channels to the rest of the plugin.
struct Io {
    ring: rtrb::Producer<SongEvent>,
    receiver: Receiver<Command>,
    shared: Arc<Shared>,
    hooks: Hooks,
    seen: Seen,
    /// A command that arrived while the worker was busy.
    pending: Option<Command>,
}

/// How streaming a song ended.
enum Streamed {
    Done(Box<StoredSong>),
    /// A new command cut it short.
    Interrupted,
    Shutdown,
}

impl Io {
    /// Pushes into the ring, waiting while it is full; false if a shutdown came meanwhile.
    fn push(&mut self, event: SongEvent) -> bool {
        push(&mut self.ring, event, &self.receiver, &mut self.pending)
    }

    fn fail(&self, message: String) {
        *self.shared.error.lock().expect("error lock") = message;
        self.shared.status.store(Status::Error as u8, Ordering::Relaxed);
    }

    /// Plays a stored song: a reset, its notes, its end. False on shutdown.
    fn play_stored(&mut self, song: &StoredSong) -> bool {
        let mut ok = self.push(SongEvent::Reset { state: self.seen.loads });
        for n in &song.notes {
            ok = ok && self.push(SongEvent::Note(engine_note(n)));
        }
        ok && self.push(SongEvent::End(song.end))
    }

    /// Streams a song as it is generated: a reset, the notes already kept (`notes`, bars before
    /// the generator's first new word), then each new note and bar marker; the editor sees it bar
    /// by bar. Any new command cuts it short.
    fn stream(&mut self, generator: &mut Generator<'_, Inference>, mut notes: Vec<NoteEvent>) -> Streamed {
        self.shared.status.store(Status::Generating as u8, Ordering::Relaxed);
        if !self.push(SongEvent::Reset { state: self.seen.loads }) {
            return Streamed::Shutdown;
        }
        for n in &notes {
            if !self.push(SongEvent::Note(engine_note(n))) {
                return Streamed::Shutdown;
            }
        }
        let stored = |generator: &Generator<'_, Inference>, notes: &[NoteEvent], end: f64, eos: bool| StoredSong {
            settings: generator.settings().clone(),
            notes: notes.to_vec(),
            end,
            ended_with_eos: eos,
            words: generator.words().len(),
            cp_words: generator.words().iter().map(|w| w.0).collect(),
        };
        if generator.bars() > 0 && !self.push(SongEvent::ReadyUntil(generator.bars() as f64 * 4.0)) {
            return Streamed::Shutdown;
        }
        while let Some(step) = generator.next_step() {
            let event = match step.event {
                Event::Note(n) => {
                    let note = NoteEvent::from_placed(&n);
                    notes.push(note);
                    Some(SongEvent::Note(engine_note(&note)))
                }
                Event::Bar(b) => {
                    if let Ok(mut shown) = self.shared.song.try_lock() {
                        *shown = Some(stored(generator, &notes, b as f64 * 4.0, false));
                    }
                    Some(SongEvent::ReadyUntil(b as f64 * 4.0))
                }
                _ => None,
            };
            if let Some(e) = event {
                if !self.push(e) {
                    return Streamed::Shutdown;
                }
            }
            self.shared.words.store(generator.words().len() as u32, Ordering::Relaxed);
            self.shared.bars.store(generator.bars(), Ordering::Relaxed);
            // A new command (regenerate, restore, state load, shutdown) cuts this song short.
            if self.interrupted() {
                return Streamed::Interrupted;
            }
        }
        let end = generator.grid().bars as f64 * 4.0;
        if !self.push(SongEvent::End(end)) {
            return Streamed::Shutdown;
        }
        Streamed::Done(Box::new(stored(generator, &notes, end, generator.finish() == Some(Finish::Eos))))
    }
}

impl Io {
    /// `count` takes of `settings`, generated together on the CPU (one after another on a GPU);
    /// `None` when a new command cut them short or the model failed (the status says why).
    fn takes(&mut self, model: &Inference, settings: &GenerationSettings, count: usize) -> Option<Vec<StoredSong>> {
        self.shared.status.store(Status::Generating as u8, Ordering::Relaxed);
        let songs = match model {
            Inference::Cpu(rnn) => {
                let mut takes = crate::generate::takes::Takes::new(rnn, settings, &[Word::BAR], count).ok()?;
                while takes.next_words() {
                    let words: usize = takes.takes().iter().map(|g| g.words().len()).sum();
                    self.shared.words.store(words as u32, Ordering::Relaxed);
                    if self.interrupted() {
                        return None;
                    }
                }
                takes.takes().iter().map(stored_song).collect()
            }
            Inference::Device(_) => {
                let mut songs = Vec::with_capacity(count);
                for i in 0..count as u64 {
                    let seeded = GenerationSettings { seed: settings.seed.wrapping_add(i), ..settings.clone() };
                    let mut generator = match Generator::try_with_prime(model, seeded, &[Word::BAR]) {
                        Ok(g) => g,
                        Err(e) => {
                            self.fail(format!("the model failed: {e}"));
                            return None;
                        }
                    };
                    while generator.next_step().is_some() {
                        if self.interrupted() {
                            return None;
                        }
                    }
                    songs.push(stored_song(&generator));
                }
                songs
            }
        };
        self.shared.status.store(Status::Ready as u8, Ordering::Relaxed);
        Some(songs)
    }

    /// Whether a command (from the channel or the shared requests) is waiting; it is kept in
    /// `pending`.
    fn interrupted(&mut self) -> bool {
        if self.pending.is_none() {
            self.pending = self.receiver.try_recv().ok();
        }
        if self.pending.is_none() {
            self.pending = news(&self.shared, &mut self.hooks, &mut self.seen);
        }
        self.pending.is_some()
    }
}

fn run(source: ModelSource, ring: rtrb::Producer<SongEvent>, receiver: Receiver<Command>, shared: Arc<Shared>, hooks: Hooks, seen: Seen) {
    shared.status.store(Status::Loading as u8, Ordering::Relaxed);
    let mut io = Io { ring, receiver, shared: shared.clone(), hooks, seen, pending: None };
    let model = match load(&source) {
        Ok(m) => Some(m),
        Err(e) => {
            io.fail(format!("cannot load the model: {e:#}"));
            None
        }
    };
    if model.is_some() {
        shared.status.store(Status::Ready as u8, Ordering::Relaxed);
    }
    // The current song's generator (its bar states kept, for a fast regenerate from a bar), the
    // current song and the one before it (the undo).
    let mut live: Option<Generator<'_, Inference>> = None;
    let mut current: Option<StoredSong> = None;
    let mut previous: Option<StoredSong> = None;
    loop {
        let command = match io.pending.take() {
            Some(c) => c,
            None => match io.receiver.recv_timeout(Duration::from_millis(20)) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => match news(&shared, &mut io.hooks, &mut io.seen) {
                    Some(c) => c,
                    None => continue,
                },
                Err(RecvTimeoutError::Disconnected) => return,
            },
        };
        let (mut generator, kept) = match command {
            Command::Shutdown => return,
            Command::Restore(song) => {
                live = None;
                if !io.play_stored(&song) {
                    return;
                }
                shared.words.store(song.words as u32, Ordering::Relaxed);
                shared.bars.store((song.end / 4.0) as u32, Ordering::Relaxed);
                *shared.song.lock().expect("song lock") = Some(song.clone());
                current = Some(song);
                if model.is_some() {
                    shared.status.store(Status::Ready as u8, Ordering::Relaxed);
                }
                continue;
            }
            Command::Undo => {
                let Some(song) = previous.take() else { continue };
                previous = current.take();
                io.pending = Some(Command::Restore(song));
                continue;
            }
            Command::Takes { count } => {
                let Some(model) = &model else { continue };
                if let Err(e) = crate::generate::takes::check_count(count) {
                    io.fail(e.to_string());
                    continue;
                }
                let Some(takes) = io.takes(model, &(io.hooks.settings)(), count) else { continue };
                *shared.takes.lock().expect("takes lock") = takes;
                previous = current.take().or(previous);
                io.pending = Some(Command::PickTake(0));
                continue;
            }
            Command::PickTake(index) => {
                let Some(take) = shared.takes.lock().expect("takes lock").get(index).cloned() else { continue };
                shared.picked_take.store(index as u32, Ordering::Relaxed);
                (io.hooks.keep)(&take);
                io.pending = Some(Command::Restore(take));
                continue;
            }
            Command::Generate(settings) => {
                let Some(model) = &model else { continue };
                *shared.song.lock().expect("song lock") = None;
                shared.takes.lock().expect("takes lock").clear();
                previous = current.take().or(previous);
                match Generator::try_with_prime(model, settings, &[Word::BAR]).and_then(Generator::remember_bars) {
                    Ok(g) => (g, Vec::new()),
                    Err(e) => {
                        io.fail(format!("the model failed: {e}"));
                        continue;
                    }
                }
            }
            Command::Continue { clip, bars } => {
                let Some(model) = &model else { continue };
                *shared.song.lock().expect("song lock") = None;
                shared.takes.lock().expect("takes lock").clear();
                previous = current.take().or(previous);
                let words = crate::generate::prime::from_notes(&clip_notes(&clip), bars, shared.tempo() as f32);
                match Generator::try_with_prime(model, (io.hooks.settings)(), &words).and_then(Generator::remember_bars) {
                    Ok(g) => (g, Vec::new()),
                    Err(e) => {
                        io.fail(format!("the model failed: {e}"));
                        continue;
                    }
                }
            }
            Command::RegenerateFrom { bar, seed } => {
                let (Some(model), Some(song)) = (&model, &current) else { continue };
                let words: Vec<Word> = song.cp_words.iter().map(|&w| Word(w)).collect();
                if words.is_empty() {
                    io.fail("this song was saved without its words: regenerate it whole".into());
                    continue;
                }
                // The live generator when it holds this song (no replay), else one primed with it.
                let mut generator = match live.take().filter(|g| g.words() == words.as_slice()) {
                    Some(g) => g,
                    None => match Generator::try_with_prime(model, song.settings.clone(), &words).and_then(Generator::remember_bars) {
                        Ok(g) => g,
                        Err(e) => {
                            io.fail(format!("the model failed: {e}"));
                            continue;
                        }
                    },
                };
                if let Err(e) = generator.regenerate_from_bar(bar, seed) {
                    io.fail(format!("cannot regenerate: {e}"));
                    continue;
                }
                shared.takes.lock().expect("takes lock").clear();
                let from = (bar - 1) as f64 * 4.0;
                let kept = song.notes.iter().filter(|n| n.start < from).copied().collect();
                previous = current.take();
                (generator, kept)
            }
        };
        match io.stream(&mut generator, kept) {
            Streamed::Shutdown => return,
            Streamed::Interrupted => live = None,
            Streamed::Done(song) => {
                let song = *song;
                (io.hooks.keep)(&song);
                *shared.song.lock().expect("song lock") = Some(song.clone());
                current = Some(song);
                // A model failure keeps the song so far playable and says what went wrong.
                match generator.error() {
                    Some(e) => io.fail(format!("the model failed: {e}")),
                    None => shared.status.store(Status::Ready as u8, Ordering::Relaxed),
                }
                live = Some(generator);
            }
        }
    }
}

/// A heard clip as song notes (ticks from its start).
pub fn clip_notes(clip: &[HeardNote]) -> Vec<crate::music::song::Note> {
    use crate::music::song::TICKS_PER_BEAT;
    let ticks = |beats: f64| (beats.max(0.0) * TICKS_PER_BEAT as f64).round() as u32;
    clip.iter().map(|n| crate::music::song::Note { onset: ticks(n.start), duration: ticks(n.duration).max(1), pitch: n.pitch, velocity: n.velocity }).collect()
}

