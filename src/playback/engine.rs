//! The playback engine that runs on the audio thread: it receives the song's notes (in beats)
//! from the inference worker through a lock-free ring, keeps the song's whole timeline, and
//! turns host transport blocks into note-on/note-off events at sample offsets.
//!
//! Audio-thread rules: no allocation, no locks, no waiting. All storage is reserved in `new`;
//! the ring is drained without blocking; taking a note is O(1) (the worker sends them in
//! order). It imports nothing else of the crate: the worker converts the generator's notes into
//! its `Note`.
//!
//! The musical contract: song beat b sounds at host beat `start_beat + b`. Offsets come from the
//! host's tempo and position of each block. Within a block, events go out in sample order (a
//! note-off before a note-on at the same sample), and an event lands on the sample nearest its
//! beat whatever the host's block size, so a song's events are the same at every block size.
//! Each note ends on the channel it started on (the left hand may have a channel of its own). Stop, loop, seek and deactivation end every
//! sounding note; after a seek the same song plays on from the new position. A loop range the
//! host reports is followed inside a block (the host need not split it at the loop end). When
//! the worker has not yet produced the music under the playhead, the engine waits (and says so)
//! rather than playing late notes. After the end of the song (EOS) it reports finished.

/// Longest note a song can hold on to (beats) when its duration is 0: a 32nd note.
const MIN_NOTE_BEATS: f64 = 0.125;
/// Notes the timeline can hold (a whole POP909 song has ~1,700; the model's cap is 8,192 words).
pub const TIMELINE_CAPACITY: usize = 16_384;
/// Notes that can sound at once (more are not started).
pub const POLYPHONY: usize = 256;
/// How far back (in notes) a note that arrives out of order may still be inserted.
const REORDER_WINDOW: usize = 64;

/// A note of the song in beats from its start (quarter notes), as the engine plays it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Note {
    pub start: f64,
    pub duration: f64,
    pub pitch: u8,
    pub velocity: u8,
}

/// What the worker sends to the audio thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SongEvent {
    /// A new song starts: forget the old timeline. `state` counts the plugin-state loads the
    /// worker had seen when it began the song (the plugin matches it; the engine ignores it).
    Reset { state: u64 },
    /// A note of the song.
    Note(Note),
    /// Every note starting before this beat has been sent.
    ReadyUntil(f64),
    /// The song is complete and ends at this beat.
    End(f64),
}

/// What the engine emits, to be turned into host note events (channel 0..16).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoteOut {
    On { offset: u32, pitch: u8, velocity: f32, channel: u8 },
    Off { offset: u32, pitch: u8, channel: u8 },
}

impl NoteOut {
    pub fn offset(&self) -> u32 {
        match *self {
            NoteOut::On { offset, .. } | NoteOut::Off { offset, .. } => offset,
        }
    }
}

/// The host's transport for one block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transport {
    pub playing: bool,
    pub tempo: f64,
    /// Host position at the block's first sample, in quarter notes (beats).
    pub position: Option<f64>,
    /// The host's loop (start, end) in host beats, when looping is on.
    pub loop_range: Option<(f64, f64)>,
}

/// Live settings the audio thread reads each block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlaySettings {
    /// Host beat where song beat 0 sounds.
    pub start_beat: f64,
    pub velocity_scale: f32,
    /// Follow the host transport (else run freely at the host tempo from activation).
    pub follow_transport: bool,
    /// MIDI channel (0..16) of the notes that start from now on.
    pub channel: u8,
    /// Two hands on two channels: notes below `split_pitch` start on this channel instead.
    pub left_hand: Option<u8>,
    pub split_pitch: u8,
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
    channel: u8,
    end: f64,
}

/// One stretch of a block without a jump: song beats from `from`, `samples` long, written at
/// `base` samples into the block.
#[derive(Debug, Clone, Copy)]
struct Span {
    from: f64,
    samples: u32,
    base: u32,
    beats_per_sample: f64,
}

impl Span {
    /// The span's sample nearest a beat (may lie outside the span).
    fn sample_of(&self, beat: f64) -> f64 {
        ((beat - self.from) / self.beats_per_sample).round()
    }

    fn contains(&self, sample: f64) -> bool {
        sample < self.samples as f64
    }

    fn offset(&self, sample: f64) -> u32 {
        self.base + sample.max(0.0) as u32
    }

    fn end(&self) -> f64 {
        self.from + self.samples as f64 * self.beats_per_sample
    }
}

/// The audio-thread engine.
pub struct Engine {
    /// The song so far, sorted by start.
    timeline: Vec<Note>,
    ready_until: f64,
    end: Option<f64>,
    sounding: Vec<Sounding>,
    /// Song beat where the previous span ended, when playing.
    expected: Option<f64>,
    /// Index of the next timeline note to start, valid while playback is continuous.
    cursor: usize,
    /// Free-run clock (song beats).
    free_clock: f64,
    pub state: PlayState,
    /// Notes dropped because the timeline was full or they came too far out of order.
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
            sounding: Vec::with_capacity(POLYPHONY),
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
            SongEvent::Reset { .. } => {
                self.timeline.clear();
                self.ready_until = 0.0;
                self.end = None;
                self.expected = None;
                self.cursor = 0;
                self.free_clock = 0.0;
            }
            SongEvent::Note(note) => self.take_note(note),
            SongEvent::ReadyUntil(beat) => self.ready_until = self.ready_until.max(beat),
            SongEvent::End(beat) => {
                self.end = Some(beat);
                self.ready_until = f64::INFINITY;
            }
        }
    }

    /// Appends a note (the worker sends them in order); one that goes back in time is inserted
    /// among the last `REORDER_WINDOW` notes, or dropped beyond them, so the work is bounded.
    fn take_note(&mut self, note: Note) {
        if self.timeline.len() == self.timeline.capacity() {
            self.dropped += 1;
            return;
        }
        let len = self.timeline.len();
        if self.timeline.last().is_none_or(|last| last.start <= note.start) {
            self.timeline.push(note);
            return;
        }
        let lo = len.saturating_sub(REORDER_WINDOW);
        let at = lo + self.timeline[lo..].partition_point(|n| n.start <= note.start);
        if at == lo && lo > 0 && self.timeline[lo - 1].start > note.start {
            self.dropped += 1;
            return;
        }
        self.timeline.insert(at, note);
        if at < self.cursor {
            self.cursor += 1;
        }
    }

    /// Song beat where the last block ended (while playing).
    pub fn playhead(&self) -> Option<f64> {
        self.expected
    }

    /// Ends every sounding note at `offset`, each on its own channel.
    pub fn all_notes_off(&mut self, offset: u32, out: &mut impl FnMut(NoteOut)) {
        for s in self.sounding.drain(..) {
            out(NoteOut::Off { offset, pitch: s.pitch, channel: s.channel });
        }
    }

    /// The host stopped processing (deactivate, bypass): the notes still sounding get their
    /// note-offs at the start of the next block, and playback restarts from the playhead.
    pub fn suspend(&mut self) {
        self.flush = !self.sounding.is_empty();
        self.expected = None;
    }

    /// Stops at once and forgets the song until the worker sends the next one (a state load).
    pub fn hold(&mut self, out: &mut impl FnMut(NoteOut)) {
        self.all_notes_off(0, out);
        self.receive(SongEvent::Reset { state: 0 });
        self.state = PlayState::Waiting;
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
        let (mut from, song_loop) = if settings.follow_transport {
            if !transport.playing {
                self.all_notes_off(0, out);
                self.expected = None;
                self.state = PlayState::Stopped;
                return;
            }
            let from = transport.position.unwrap_or(self.expected.map_or(0.0, |e| e + settings.start_beat)) - settings.start_beat;
            // A loop shorter than a few samples cannot be followed; it is ignored.
            let song_loop = transport
                .loop_range
                .map(|(a, b)| (a - settings.start_beat, b - settings.start_beat))
                .filter(|(a, b)| b - a > 4.0 * beats_per_sample);
            (from, song_loop)
        } else {
            (self.free_clock, None)
        };
        let mut done = 0u32;
        while done < samples {
            let mut span = Span { from, samples: samples - done, base: done, beats_per_sample };
            // The loop end inside this stretch: play up to it, end what sounds, go on from the
            // loop start, as a host that splits the block there would have us do.
            let wrap = song_loop.filter(|&(_, b)| from < b && span.contains(span.sample_of(b)));
            if let Some((_, b)) = wrap {
                span.samples = span.sample_of(b).max(0.0) as u32;
            }
            if !self.play(span, settings, out) {
                return;
            }
            done += span.samples;
            match wrap {
                Some((a, _)) if done < samples => {
                    self.all_notes_off(done, out);
                    self.expected = None;
                    from = a;
                }
                _ => break,
            }
        }
        if !settings.follow_transport {
            self.free_clock = self.expected.unwrap_or(self.free_clock);
        }
        self.state = match self.end {
            Some(end) if from >= end && self.sounding.is_empty() => PlayState::Finished,
            _ => PlayState::Playing,
        };
    }

    /// Plays one span: its note-offs and note-ons merged in sample order. False when the worker
    /// is behind (the engine then waits).
    fn play(&mut self, span: Span, settings: PlaySettings, out: &mut impl FnMut(NoteOut)) -> bool {
        // A jump (loop, seek, restart) ends what sounds; the song plays on from the new place.
        // Without one, the cursor carries on from the last span, so rounding in the host's
        // positions can neither repeat nor skip a note on a block boundary.
        let continuous = self.expected.is_some_and(|e| (span.from - e).abs() <= 4.0 * span.beats_per_sample);
        if !continuous {
            if self.expected.is_some() {
                self.all_notes_off(span.base, out);
            }
            let half_sample = 0.5 * span.beats_per_sample;
            self.cursor = self.timeline.partition_point(|n| n.start < span.from - half_sample);
        }
        let waiting = span.end() > self.ready_until;
        loop {
            let next_off = self
                .sounding
                .iter()
                .enumerate()
                .map(|(i, s)| (span.sample_of(s.end), i))
                .filter(|&(sample, _)| span.contains(sample))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let next_on = if waiting {
                None
            } else {
                self.timeline.get(self.cursor).map(|n| (span.sample_of(n.start), *n)).filter(|&(sample, _)| span.contains(sample))
            };
            match (next_off, next_on) {
                (Some((off, i)), Some((on, _))) if off <= on => self.end_note(i, span.offset(off), out),
                (Some((off, i)), None) => self.end_note(i, span.offset(off), out),
                (_, Some((on, note))) => {
                    self.cursor += 1;
                    self.start_note(note, span.offset(on), settings, out);
                }
                (None, None) => break,
            }
        }
        if waiting {
            // The worker is behind: hold here (no late or partial notes) and say so.
            self.state = PlayState::Waiting;
            self.expected = None;
            return false;
        }
        self.expected = Some(span.end());
        true
    }

    fn end_note(&mut self, i: usize, offset: u32, out: &mut impl FnMut(NoteOut)) {
        let s = self.sounding.swap_remove(i);
        out(NoteOut::Off { offset, pitch: s.pitch, channel: s.channel });
    }

    fn start_note(&mut self, n: Note, offset: u32, settings: PlaySettings, out: &mut impl FnMut(NoteOut)) {
        let channel = match settings.left_hand {
            Some(left) if n.pitch < settings.split_pitch => left.min(15),
            _ => settings.channel.min(15),
        };
        // The same key struck again on its channel ends the note that still sounds.
        if let Some(k) = self.sounding.iter().position(|s| s.pitch == n.pitch && s.channel == channel) {
            self.end_note(k, offset, out);
        }
        if self.sounding.len() < POLYPHONY {
            let velocity = (n.velocity as f32 / 127.0 * settings.velocity_scale).clamp(1.0 / 127.0, 1.0);
            out(NoteOut::On { offset, pitch: n.pitch, velocity, channel });
            self.sounding.push(Sounding { pitch: n.pitch, channel, end: n.start + n.duration.max(MIN_NOTE_BEATS) });
        }
    }
}
