//! The values the worker, the audio thread and the editor share: atomics the audio thread may
//! write and read (status, progress, playhead, requests), and the song and takes behind mutexes
//! the audio thread never touches.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use atomic_float::AtomicF64;

use crate::playback::song::StoredSong;

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
    /// "Regenerate from bar N" (the editor): requests so far in the high 32 bits, the bar (from
    /// 1) in the low 32, in one atomic so the two always agree (`request_regenerate_from`).
    pub regenerate_from: AtomicU64,
    /// Bumped by the editor's Undo: the song before the last regeneration plays again.
    pub undo_requests: AtomicU32,
    /// The editor's "Takes": requests so far in the high 32 bits, the number of takes in the
    /// low 32 (`request_takes`).
    pub takes_requests: AtomicU64,
    /// The editor's pick of a take: picks so far in the high 32 bits, the take (from 0) in the
    /// low 32 (`pick_take`).
    pub take_picks: AtomicU64,
    /// The last takes (empty before any), and the one playing.
    pub takes: Mutex<Vec<StoredSong>>,
    pub picked_take: AtomicU32,
    /// What playback is doing (`engine::PlayState as u8`), written by the audio thread.
    pub play_state: AtomicU8,
    /// The playhead in song beats, written by the audio thread.
    pub playhead: AtomicF64,
    /// The host tempo (BPM), written by the audio thread (for MIDI export and Listen mode).
    pub tempo: AtomicF64,
    /// What Listen mode is doing (`recorder::ListenState as u8`), written by the audio thread.
    pub listen_state: AtomicU8,
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

    /// What Listen mode is doing, for the editor: `start_bar` and `bars` are the window.
    pub fn listen_text(&self, start_bar: i32, bars: i32) -> String {
        use crate::playback::recorder::ListenState;
        match ListenState::from_u8(self.listen_state.load(Ordering::Relaxed)) {
            ListenState::Off => "Listen is off".into(),
            ListenState::Armed => format!("waiting for bar {start_bar} (play bars {start_bar}-{})", start_bar + bars - 1),
            ListenState::Recording => format!("recording bars {start_bar}-{}", start_bar + bars - 1),
            ListenState::Captured => format!("continuing your {bars} bars from bar {} (switch Listen off and on to record again)", start_bar + bars),
        }
    }

    /// Asks the worker to keep bars 1..`bar` - 1 of the current song and write the rest anew.
    pub fn request_regenerate_from(&self, bar: u32) {
        bump(&self.regenerate_from, bar);
    }

    /// Asks the worker for `count` takes of the current settings.
    pub fn request_takes(&self, count: u32) {
        bump(&self.takes_requests, count);
    }

    /// Asks the worker to play take `index` (from 0) and keep it.
    pub fn pick_take(&self, index: u32) {
        bump(&self.take_picks, index);
    }

    /// The host tempo last seen (120 before any).
    pub fn tempo(&self) -> f64 {
        match self.tempo.load(Ordering::Relaxed) {
            t if t > 0.0 && t.is_finite() => t,
            _ => 120.0,
        }
    }
}

/// Counts one more request in the high 32 bits of `request` and stores `value` in the low 32, in
/// one atomic so the two always agree.
fn bump(request: &AtomicU64, value: u32) {
    let count = (request.load(Ordering::Relaxed) >> 32) + 1;
    request.store(count << 32 | value as u64, Ordering::Relaxed);
}
