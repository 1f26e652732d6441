//! MIDI import: any standard MIDI file (format 0/1/2, any ticks per beat, tempo and
//! time-signature maps) becomes one 4/4 piano `Song` at 480 ticks per beat, with chords from the
//! recogniser.
//!
//! Rules: all tracks and channels merge into one stream except channel 10 (drums). A note-off
//! that arrives while the sustain pedal (CC 64 >= 64) is down on its channel is held until the
//! pedal lifts, or until the same key is struck again, whichever comes first. Notes still open at
//! the end of their track end there. Songs with a time signature other than 4/4 (or 2/2) are
//! refused with the reason. Bad input is an `ImportError`, never a panic or a hang.

use std::path::Path;

use midly::{MetaMessage, MidiMessage, Smf, Timing, TrackEventKind};

use crate::music::chord::recognise_chords;
use crate::music::song::{Note, Song, TempoChange, TICKS_PER_BEAT};

/// Songs longer than this many bars are refused (a guard against absurd delta times).
pub const MAX_BARS: u64 = 4000;

/// Why a file could not become a song.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a valid MIDI file: {0}")]
    Parse(String),
    #[error("SMPTE time division is not supported (only ticks per beat)")]
    Smpte,
    #[error("ticks per beat is 0")]
    ZeroDivision,
    #[error("no notes")]
    NoNotes,
    #[error("not in 4/4: time signature {numerator}/{denominator} at tick {tick}")]
    NotFourFour { numerator: u8, denominator: u32, tick: u64 },
    #[error("song too long: a note starts after bar {bars} (limit {MAX_BARS}); a delta time is absurd")]
    TooLong { bars: u64 },
    #[error("{0}")]
    Annotation(String),
}

/// A note in the file's own ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawNote {
    pub start: u64,
    pub end: u64,
    pub pitch: u8,
    pub velocity: u8,
}

/// What a MIDI file says, before it is mapped onto the song grid.
#[derive(Debug, Clone, Default)]
pub struct RawMidi {
    pub ticks_per_beat: u32,
    pub notes: Vec<RawNote>,
    /// (tick, microseconds per beat), sorted, starting with the value in force at tick 0.
    pub tempos: Vec<(u64, u32)>,
    /// (tick, numerator, denominator), sorted.
    pub time_signatures: Vec<(u64, u8, u32)>,
}

impl RawMidi {
    /// Parses MIDI bytes.
    pub fn parse(bytes: &[u8]) -> Result<RawMidi, ImportError> {
        check_chunks(bytes)?;
        let smf = Smf::parse(bytes).map_err(|e| ImportError::Parse(e.to_string()))?;
        let ticks_per_beat = match smf.header.timing {
            Timing::Metrical(t) if t.as_int() == 0 => return Err(ImportError::ZeroDivision),
            Timing::Metrical(t) => t.as_int() as u32,
            Timing::Timecode(..) => return Err(ImportError::Smpte),
        };
        let limit = MAX_BARS * 4 * ticks_per_beat as u64;
        let mut raw = RawMidi { ticks_per_beat, ..RawMidi::default() };
        for track in &smf.tracks {
            let mut tick = 0u64;
            // Per channel and key: onsets waiting for their note-off (first in, first out).
            let mut open: Vec<Vec<(u64, u8)>> = vec![Vec::new(); 16 * 128];
            // Per channel and key: notes released while the pedal was down.
            let mut held: Vec<Option<(u64, u8)>> = vec![None; 16 * 128];
            let mut pedal = [false; 16];
            for event in track {
                tick += event.delta.as_int() as u64;
                let TrackEventKind::Midi { channel, message } = event.kind else {
                    match event.kind {
                        TrackEventKind::Meta(MetaMessage::Tempo(t)) => raw.tempos.push((tick, t.as_int().max(1))),
                        TrackEventKind::Meta(MetaMessage::TimeSignature(n, d, _, _)) => {
                            raw.time_signatures.push((tick, n, 1u32.checked_shl(d as u32).unwrap_or(0)))
                        }
                        _ => {}
                    }
                    continue;
                };
                let ch = channel.as_int() as usize;
                if ch == 9 {
                    continue;
                }
                match message {
                    MidiMessage::NoteOn { key, vel } if vel.as_int() > 0 => {
                        if tick > limit {
                            return Err(ImportError::TooLong { bars: tick / (4 * ticks_per_beat as u64) });
                        }
                        let key = key.as_int() as usize;
                        release(&mut held, &mut raw.notes, ch * 128 + key, tick);
                        open[ch * 128 + key].push((tick, vel.as_int()));
                    }
                    MidiMessage::NoteOn { key, .. } | MidiMessage::NoteOff { key, .. } => {
                        let key = key.as_int() as usize;
                        let slot = &mut open[ch * 128 + key];
                        if !slot.is_empty() {
                            let (start, velocity) = slot.remove(0);
                            if pedal[ch] {
                                release(&mut held, &mut raw.notes, ch * 128 + key, tick);
                                held[ch * 128 + key] = Some((start, velocity));
                            } else {
                                raw.notes.push(RawNote { start, end: tick, pitch: key as u8, velocity });
                            }
                        }
                    }
                    MidiMessage::Controller { controller, value } if controller.as_int() == 64 => {
                        let down = value.as_int() >= 64;
                        if pedal[ch] && !down {
                            for key in 0..128 {
                                release(&mut held, &mut raw.notes, ch * 128 + key, tick);
                            }
                        }
                        pedal[ch] = down;
                    }
                    _ => {}
                }
            }
            for (i, h) in held.iter().enumerate() {
                if let Some((start, velocity)) = h {
                    raw.notes.push(RawNote { start: *start, end: tick, pitch: (i % 128) as u8, velocity: *velocity });
                }
            }
            for (i, starts) in open.iter().enumerate() {
                for &(start, velocity) in starts {
                    raw.notes.push(RawNote { start, end: tick, pitch: (i % 128) as u8, velocity });
                }
            }
        }
        if raw.notes.is_empty() {
            return Err(ImportError::NoNotes);
        }
        raw.notes.sort_by_key(|n| (n.start, n.pitch, n.end));
        raw.tempos.sort_by_key(|t| t.0);
        if raw.tempos.first().is_none_or(|t| t.0 > 0) {
            raw.tempos.insert(0, (0, 500_000));
        }
        raw.time_signatures.sort_by_key(|t| t.0);
        Ok(raw)
    }

    /// Refuses songs whose time signatures are not 4/4 (2/2 has the same bar and is accepted).
    pub fn check_four_four(&self) -> Result<(), ImportError> {
        for &(tick, numerator, denominator) in &self.time_signatures {
            if !matches!((numerator, denominator), (4, 4) | (2, 2)) {
                return Err(ImportError::NotFourFour { numerator, denominator, tick });
            }
        }
        Ok(())
    }

    /// Seconds at a tick, from the tempo map.
    pub fn seconds_at(&self, tick: u64) -> f64 {
        let mut seconds = 0.0;
        let mut last_tick = 0u64;
        let mut us_per_beat = 500_000u32;
        for &(t, us) in &self.tempos {
            if t >= tick {
                break;
            }
            seconds += (t - last_tick) as f64 * us_per_beat as f64 / 1e6 / self.ticks_per_beat as f64;
            last_tick = t;
            us_per_beat = us;
        }
        seconds + (tick - last_tick) as f64 * us_per_beat as f64 / 1e6 / self.ticks_per_beat as f64
    }

    /// Maps the file onto the song timeline with `to_song_tick` and recognises chords.
    pub fn to_song(&self, to_song_tick: impl Fn(u64) -> u32) -> Song {
        let mut song = Song::default();
        for n in &self.notes {
            let onset = to_song_tick(n.start);
            let end = to_song_tick(n.end).max(onset);
            song.notes.push(Note { onset, duration: end - onset, pitch: n.pitch, velocity: n.velocity });
        }
        for &(tick, us) in &self.tempos {
            let tempo = TempoChange { tick: to_song_tick(tick), bpm: (60e6 / us as f64) as f32 };
            // Several changes landing on one tick: the last one wins.
            match song.tempos.last_mut() {
                Some(last) if last.tick == tempo.tick => *last = tempo,
                _ => song.tempos.push(tempo),
            }
        }
        song.sort();
        song.chords = recognise_chords(&song.notes);
        song
    }
}

/// Walks the file's chunks and refuses a file that ends inside one (a truncated download):
/// the MIDI parser would otherwise keep whatever it could read without a word.
fn check_chunks(bytes: &[u8]) -> Result<(), ImportError> {
    let parse = |why: String| Err(ImportError::Parse(why));
    if bytes.len() < 14 || &bytes[..4] != b"MThd" {
        return parse("missing the MThd header".into());
    }
    let tracks = u16::from_be_bytes([bytes[10], bytes[11]]) as usize;
    let mut at = 8 + u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    for track in 0..tracks {
        if bytes.len() < at + 8 {
            return parse(format!("truncated: the file ends before track {} of {tracks}", track + 1));
        }
        let len = u32::from_be_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]) as usize;
        if bytes.len() < at + 8 + len {
            return parse(format!("truncated: the file ends inside track {} of {tracks}", track + 1));
        }
        at += 8 + len;
    }
    Ok(())
}

/// Ends a note that the pedal was holding (index = channel * 128 + key), if any.
fn release(held: &mut [Option<(u64, u8)>], notes: &mut Vec<RawNote>, index: usize, end: u64) {
    if let Some((start, velocity)) = held[index].take() {
        notes.push(RawNote { start, end, pitch: (index % 128) as u8, velocity });
    }
}

/// Imports a standard MIDI file: bars start at tick 0, ticks are rescaled to 480 per beat.
pub fn import_bytes(bytes: &[u8]) -> Result<Song, ImportError> {
    let raw = RawMidi::parse(bytes)?;
    raw.check_four_four()?;
    let tpb = raw.ticks_per_beat as u64;
    Ok(raw.to_song(|tick| ((tick * TICKS_PER_BEAT as u64 + tpb / 2) / tpb).min(u32::MAX as u64) as u32))
}

/// Imports a MIDI file from disk.
pub fn import_file(path: &Path) -> Result<Song, ImportError> {
    import_bytes(&std::fs::read(path)?)
}
