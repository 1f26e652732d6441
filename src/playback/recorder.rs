//! Listen mode's recorder, on the audio thread: it takes the notes the producer plays into the
//! plugin while the transport passes through the listening window (from the song's start bar,
//! for N bars), in beats from the window's start, and hands them to the worker through a
//! lock-free ring. The worker then continues the song from the bar after them.
//!
//! Audio-thread rules, as the engine's: no allocation, no locks, no waiting; it imports nothing
//! else of the crate. Its guarantees:
//! - A pass is recorded only from the window's start. A transport that starts inside the
//!   window, or stops or jumps (seek, loop) during a pass, records nothing until its next pass
//!   from the start (a jump sends `Heard::Cancel` for what was sent of the pass).
//! - Notes are keyed by pitch, whatever their channel; a note still held at the window's end
//!   ends there; a note struck again before its note-off ends the first one.
//! - One capture per arming (`set_listen` switched on): a pass in which nothing was played keeps
//!   it armed, and a complete pass sends its notes, then `Heard::Done`.
//! - A ring that is full drops notes (counted in `dropped`), never waits; `Done` and `Cancel`
//!   are retried on the next blocks until they fit.

/// Events the ring from the recorder to the worker holds.
pub const HEARD_CAPACITY: usize = 8192;

/// A note the producer played, in beats from the window's start (quarter notes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeardNote {
    pub start: f64,
    pub duration: f64,
    pub pitch: u8,
    pub velocity: u8,
}

/// What the recorder sends to the worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Heard {
    /// A note of the pass in progress.
    Note(HeardNote),
    /// The pass so far is void: forget its notes.
    Cancel,
    /// The window is complete: the notes since the last `Cancel` or `Done` are the clip, `bars`
    /// bars long.
    Done { bars: u32 },
}

/// What Listen mode is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ListenState {
    Off = 0,
    /// Waiting for the transport to reach the window's start.
    Armed = 1,
    /// Inside the window, recording.
    Recording = 2,
    /// The clip went to the worker; switch Listen off and on to record again.
    Captured = 3,
}

impl ListenState {
    pub fn from_u8(v: u8) -> ListenState {
        match v {
            1 => ListenState::Armed,
            2 => ListenState::Recording,
            3 => ListenState::Captured,
            _ => ListenState::Off,
        }
    }
}

/// The listening window in host beats: from `start` for `bars` 4/4 bars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub start: f64,
    pub bars: u32,
}

impl Window {
    fn end(&self) -> f64 {
        self.start + self.bars as f64 * 4.0
    }
}

/// The audio-thread recorder.
pub struct Recorder {
    /// Start (host beats) and velocity of the note held on each key.
    held: [Option<(f64, u8)>; 128],
    pub state: ListenState,
    /// The window of the pass being recorded.
    window: Window,
    /// Host beat where the last block ended, while recording.
    expected: Option<f64>,
    /// Notes sent in this pass.
    sent: usize,
    /// A `Done` that did not fit in the ring yet.
    done_pending: Option<u32>,
    /// A `Cancel` that did not fit in the ring yet (no pass starts before it is sent).
    cancel_pending: bool,
    /// Notes lost to a full ring.
    pub dropped: usize,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder { held: [None; 128], state: ListenState::Off, window: Window { start: 0.0, bars: 1 }, expected: None, sent: 0, done_pending: None, cancel_pending: false, dropped: 0 }
    }

    /// The Listen switch, read each block: switching it on arms the recorder; switching it off
    /// ends a pass in progress.
    pub fn set_listen(&mut self, on: bool, out: &mut rtrb::Producer<Heard>) {
        match (on, self.state) {
            (true, ListenState::Off) => self.state = ListenState::Armed,
            (false, ListenState::Recording) => {
                self.cancel(out);
                self.state = ListenState::Off;
            }
            (false, _) => self.state = ListenState::Off,
            (true, _) => {}
        }
    }

    /// Called before a block's note events: the block spans host beats `from..to`.
    pub fn begin_block(&mut self, playing: bool, from: f64, to: f64, window: Window, out: &mut rtrb::Producer<Heard>) {
        if let Some(bars) = self.done_pending {
            if out.push(Heard::Done { bars }).is_ok() {
                self.done_pending = None;
            }
        }
        if self.cancel_pending && out.push(Heard::Cancel).is_ok() {
            self.cancel_pending = false;
        }
        if self.state == ListenState::Recording {
            // A stop or a jump voids the pass; a window moved meanwhile waits for the next one.
            let continuous = self.expected.is_some_and(|e| (from - e).abs() <= 1e-3 + (to - from));
            if !playing || !continuous {
                self.cancel(out);
                self.state = ListenState::Armed;
            }
        }
        if self.state == ListenState::Armed && !self.cancel_pending && playing && window.bars > 0 && from <= window.start && window.start < to.max(from + 1e-9) {
            self.state = ListenState::Recording;
            self.window = window;
            self.expected = Some(from);
            self.sent = 0;
        }
    }

    fn inside(&self, beat: f64) -> bool {
        self.state == ListenState::Recording && beat >= self.window.start && beat < self.window.end()
    }

    /// A note-on at host beat `beat`.
    pub fn note_on(&mut self, beat: f64, pitch: u8, velocity: u8, out: &mut rtrb::Producer<Heard>) {
        if !self.inside(beat) || pitch > 127 {
            return;
        }
        self.note_off(beat, pitch, out);
        self.held[pitch as usize] = Some((beat, velocity.clamp(1, 127)));
    }

    /// A note-off at host beat `beat` (ends the note held on that key, if any).
    pub fn note_off(&mut self, beat: f64, pitch: u8, out: &mut rtrb::Producer<Heard>) {
        if self.state != ListenState::Recording || pitch > 127 {
            return;
        }
        if let Some((start, velocity)) = self.held[pitch as usize].take() {
            let end = beat.min(self.window.end());
            let note = HeardNote { start: start - self.window.start, duration: (end - start).max(0.0), pitch, velocity };
            if out.push(Heard::Note(note)).is_ok() {
                self.sent += 1;
            } else {
                self.dropped += 1;
            }
        }
    }

    /// Called after a block's note events: the block ended at host beat `to`. At the window's
    /// end the held notes end there and the clip is complete.
    pub fn end_block(&mut self, to: f64, out: &mut rtrb::Producer<Heard>) {
        if self.state != ListenState::Recording {
            return;
        }
        self.expected = Some(to);
        if to < self.window.end() {
            return;
        }
        for pitch in 0..128u8 {
            self.note_off(self.window.end(), pitch, out);
        }
        if self.sent == 0 {
            // Nothing was played: stay armed for the next pass.
            self.state = ListenState::Armed;
            return;
        }
        self.state = ListenState::Captured;
        if out.push(Heard::Done { bars: self.window.bars }).is_err() {
            self.done_pending = Some(self.window.bars);
        }
    }

    /// Voids the pass in progress.
    fn cancel(&mut self, out: &mut rtrb::Producer<Heard>) {
        self.held = [None; 128];
        self.expected = None;
        if self.sent > 0 && out.push(Heard::Cancel).is_err() {
            self.cancel_pending = true;
        }
        self.sent = 0;
    }
}
