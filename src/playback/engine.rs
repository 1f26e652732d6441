//! The playback engine that runs on the audio thread: it receives the song's notes (in beats)
//! from the inference worker through a lock-free ring, keeps the song's whole timeline, and
//! turns host transport blocks into note-on/note-off events at sample offsets.
//!
//! Audio-thread rules: no allocation, no locks, no waiting. All storage is reserved in `new`;
//! the ring is drained without blocking. Knows nothing of candle or of any plugin format.
//!
//! The musical contract: song beat b sounds at host beat `start_beat + b`. Offsets come from the
//! host's tempo and position of each block. Stop, loop, seek and deactivation end every sounding
//! note; after a seek the same song plays on from the new position. When the worker has not yet
//! produced the music under the playhead, the engine waits (and says so) rather than playing
//! late notes. After the end of the song (EOS) it reports finished. It imports nothing else of
//! the crate: the worker converts the generator's notes into its `Note`.

/// A note of the song in beats from its start (quarter notes), as the engine plays it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Note {
    pub start: f64,
    pub duration: f64,
    pub pitch: u8,
    pub velocity: u8,
}

/// Longest note a song can hold on to (beats) when its duration is 0: a 32nd note.
const MIN_NOTE_BEATS: f64 = 0.125;
/// Notes the timeline can hold (a whole POP909 song has ~1,700; the model's cap is 8,192 words).
pub const TIMELINE_CAPACITY: usize = 16_384;

/// What the worker sends to the audio thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SongEvent {
    /// A new song starts: forget the old timeline.
    Reset,
    /// A note of the song.
    Note(Note),
    /// Every note starting before this beat has been sent.
    ReadyUntil(f64),
    /// The song is complete and ends at this beat.
    End(f64),
}

/// What the engine emits, to be turned into host note events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoteOut {
    On { offset: u32, pitch: u8, velocity: f32 },
    Off { offset: u32, pitch: u8 },
}

/// The host's transport for one block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transport {
    pub playing: bool,
    pub tempo: f64,
    /// Host position at the block's first sample, in quarter notes (beats).
    pub position: Option<f64>,
}

/// Live settings the audio thread reads each block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlaySettings {
    /// Host beat where song beat 0 sounds.
    pub start_beat: f64,
    pub velocity_scale: f32,
    /// Follow the host transport (else run freely at the host tempo from activation).
    pub follow_transport: bool,
}

/// What the engine is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PlayState {
    Stopped,
    Playing,
    /// The playhead is past what the worker has produced.
    Waiting,
    Finished,
}

#[derive(Debug, Clone, Copy)]
struct Sounding {
    pitch: u8,
    end: f64,
}

/// The audio-thread engine.
pub struct Engine {
    /// The song so far, sorted by start.
    timeline: Vec<Note>,
    ready_until: f64,
    end: Option<f64>,
    sounding: Vec<Sounding>,
    /// Song beat where the previous block ended, when playing.
    expected: Option<f64>,
    /// Index of the next timeline note to start, valid while playback is continuous.
    cursor: usize,
    /// Free-run clock (song beats).
    free_clock: f64,
    pub state: PlayState,
    /// Notes dropped because the timeline was full.
    pub dropped: usize,
    /// End every sounding note at the start of the next block (after a deactivation).
    flush: bool,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

impl Engine {
    pub fn new() -> Engine {
        Engine {
            timeline: Vec::with_capacity(TIMELINE_CAPACITY),
            ready_until: 0.0,
            end: None,
            sounding: Vec::with_capacity(256),
            expected: None,
            cursor: 0,
            free_clock: 0.0,
            state: PlayState::Stopped,
            dropped: 0,
            flush: false,
        }
    }

    /// Takes one event from the worker.
    pub fn receive(&mut self, event: SongEvent) {
        match event {
            SongEvent::Reset => {
                self.timeline.clear();
                self.ready_until = 0.0;
                self.end = None;
                self.expected = None;
                self.cursor = 0;
                self.free_clock = 0.0;
            }
            SongEvent::Note(note) => {
                if self.timeline.len() == self.timeline.capacity() {
                    self.dropped += 1;
                    return;
                }
                // Usually appended in order; a note that goes back in time is inserted in place.
                let at = self.timeline.partition_point(|n| n.start <= note.start);
                self.timeline.insert(at, note);
                if at < self.cursor {
                    self.cursor += 1;
                }
            }
            SongEvent::ReadyUntil(beat) => self.ready_until = self.ready_until.max(beat),
            SongEvent::End(beat) => {
                self.end = Some(beat);
                self.ready_until = f64::INFINITY;
            }
        }
    }

    /// Song beat where the last block ended (while playing).
    pub fn playhead(&self) -> Option<f64> {
        self.expected
    }

    /// Ends every sounding note at `offset`.
    pub fn all_notes_off(&mut self, offset: u32, out: &mut impl FnMut(NoteOut)) {
        for s in self.sounding.drain(..) {
            out(NoteOut::Off { offset, pitch: s.pitch });
        }
    }

    /// The host stopped processing (deactivate, bypass): the notes still sounding get their
    /// note-offs at the start of the next block, and playback restarts from the playhead.
    pub fn suspend(&mut self) {
        self.flush = !self.sounding.is_empty();
        self.expected = None;
    }

    /// Processes one block of `samples` samples at `sample_rate`.
    pub fn process(
        &mut self,
        transport: Transport,
        settings: PlaySettings,
        samples: u32,
        sample_rate: f64,
        out: &mut impl FnMut(NoteOut),
    ) {
        if self.flush {
            self.flush = false;
            self.all_notes_off(0, out);
        }
        let tempo = if transport.tempo.is_finite() && transport.tempo > 0.0 { transport.tempo } else { 120.0 };
        let beats_per_sample = tempo / 60.0 / sample_rate;
        let block_beats = samples as f64 * beats_per_sample;
        let from = if settings.follow_transport {
            if !transport.playing {
                self.all_notes_off(0, out);
                self.expected = None;
                self.state = PlayState::Stopped;
                return;
            }
            transport.position.unwrap_or(self.expected.map_or(0.0, |e| e + settings.start_beat)) - settings.start_beat
        } else {
            self.free_clock
        };
        // A jump (loop, seek, restart) ends what sounds; the song plays on from the new place.
        // Without one, the cursor carries on from the last block, so rounding in the host's
        // positions can neither repeat nor skip a note on a block boundary.
        let continuous = self.expected.is_some_and(|e| (from - e).abs() <= 4.0 * beats_per_sample);
        if !continuous {
            if self.expected.is_some() {
                self.all_notes_off(0, out);
            }
            let half_sample = 0.5 * beats_per_sample;
            self.cursor = self.timeline.partition_point(|n| n.start < from - half_sample);
        }
        let to = from + block_beats;
        // Sample offset of a beat in this block (may be past its end).
        let offset_of = |beat: f64| ((beat - from) / beats_per_sample).round().max(0.0) as u32;
        // Endings inside this block.
        let mut i = 0;
        while i < self.sounding.len() {
            if self.sounding[i].end < to {
                let s = self.sounding.swap_remove(i);
                out(NoteOut::Off { offset: offset_of(s.end).min(samples.saturating_sub(1)), pitch: s.pitch });
            } else {
                i += 1;
            }
        }
        if to > self.ready_until {
            // The worker is behind: hold here (no late or partial notes) and say so.
            self.state = PlayState::Waiting;
            self.expected = None;
            return;
        }
        while let Some(n) = self.timeline.get(self.cursor).copied() {
            let offset = offset_of(n.start);
            if offset >= samples {
                break;
            }
            self.cursor += 1;
            if let Some(k) = self.sounding.iter().position(|s| s.pitch == n.pitch) {
                self.sounding.swap_remove(k);
                out(NoteOut::Off { offset, pitch: n.pitch });
            }
            if self.sounding.len() < self.sounding.capacity() {
                let velocity = (n.velocity as f32 / 127.0 * settings.velocity_scale).clamp(1.0 / 127.0, 1.0);
                out(NoteOut::On { offset, pitch: n.pitch, velocity });
                self.sounding.push(Sounding { pitch: n.pitch, end: n.start + n.duration.max(MIN_NOTE_BEATS) });
            }
        }
        self.expected = Some(to);
        if !settings.follow_transport {
            self.free_clock = to;
        }
        self.state = match self.end {
            Some(end) if from >= end && self.sounding.is_empty() => PlayState::Finished,
            _ => PlayState::Playing,
        };
    }
}
