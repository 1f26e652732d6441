//! MIDI import: any standard MIDI file (format 0/1/2, any ticks per beat, tempo and
//! time-signature maps) becomes one 4/4 piano `Song` at 480 ticks per beat, with chords from the
//! recogniser.
//!
//! Rules: all tracks and channels merge into one stream except channel 10 (drums). A note-off
//! that arrives while the sustain pedal (CC 64 >= 64) is down on its channel is held until the
//! pedal lifts, or until the same key is struck again, whichever comes first. Notes still open at
//! the end of their track end there. Meters: 4/4 and 2/2 as they are, 2/4 and 1/4 joined into 4/4
//! bars (a pickup padded to a bar), sections in other meters cut out and reported, a song with
//! nothing in those meters refused with the reason (`RawMidi::in_four_four`). Bad input is an `ImportError`, never a panic or a hang.

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

/// A section that import cut out because its meter is not 4/4, 2/2, 2/4 or 1/4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedSection {
    pub from_tick: u64,
    pub to_tick: u64,
    pub numerator: u8,
    pub denominator: u32,
    /// Notes that started in it.
    pub notes: usize,
    pub ticks_per_beat: u32,
}

impl std::fmt::Display for DroppedSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let beat = |t: u64| t as f64 / self.ticks_per_beat.max(1) as f64;
        write!(f, "beats {:.1}-{:.1} in {}/{} ({} notes) cut out", beat(self.from_tick), beat(self.to_tick), self.numerator, self.denominator, self.notes)
    }
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
        // A note-off (or a track end) absurdly far out ends its note at the length limit.
        for n in &mut raw.notes {
            n.end = n.end.min(limit.max(n.start));
        }
        raw.notes.sort_by_key(|n| (n.start, n.pitch, n.end));
        raw.tempos.sort_by_key(|t| t.0);
        if raw.tempos.first().is_none_or(|t| t.0 > 0) {
            raw.tempos.insert(0, (0, 500_000));
        }
        raw.time_signatures.sort_by_key(|t| t.0);
        Ok(raw)
    }

    /// The song in 4/4 bars from tick 0: 4/4 and 2/2 sections as they are; 2/4 and 1/4 sections
    /// run on (two 2/4 bars make one 4/4 bar); a 1/4 or 2/4 pickup at the start is padded with
    /// rests to a whole bar; a 4/4 section that starts inside a bar is moved to the next bar line;
    /// sections in any other meter (3/4, 6/8, ...) are cut out, with their notes, and listed.
    /// A file with nothing left is refused with the meter that is not 4/4.
    pub fn in_four_four(&self) -> Result<(RawMidi, Vec<DroppedSection>), ImportError> {
        let bar = 4 * self.ticks_per_beat as u64;
        let end = self.notes.iter().map(|n| n.end.max(n.start)).max().unwrap_or(0) + 1;
        // Sections: (from, to, numerator, denominator); 4/4 before the first signature.
        let mut signatures: Vec<(u64, u8, u32)> = Vec::new();
        let implied = self.time_signatures.first().is_none_or(|s| s.0 > 0).then_some((0, 4, 4));
        for &(tick, n, d) in implied.iter().chain(&self.time_signatures) {
            match signatures.last_mut() {
                // Of two signatures on one tick the later holds; a repeat changes nothing.
                Some(last) if last.0 == tick => (last.1, last.2) = (n, d),
                Some(last) if (last.1, last.2) == (n, d) => {}
                _ => signatures.push((tick, n, d)),
            }
        }
        let mut sections = Vec::new();
        for (i, &(from, n, d)) in signatures.iter().enumerate() {
            let to = signatures.get(i + 1).map_or(end.max(from), |s| s.0);
            if to > from {
                sections.push((from, to, n, d));
            }
        }
        // Each kept section's shift (song tick = file tick + shift), or None where it is cut;
        // and where each begins in the song (for a cut one, where the cut is).
        let mut shifts: Vec<Option<i64>> = Vec::new();
        let mut begins: Vec<u64> = Vec::new();
        let mut dropped = Vec::new();
        let mut at = 0u64;
        for (i, &(from, to, n, d)) in sections.iter().enumerate() {
            begins.push(at);
            match (n, d) {
                (4, 4) | (2, 2) => {
                    at = at.div_ceil(bar) * bar;
                    shifts.push(Some(at as i64 - from as i64));
                    at += to - from;
                }
                (2, 4) | (1, 4) => {
                    if i == 0 && to - from < bar && sections.len() > 1 {
                        at = bar - (to - from);
                    }
                    shifts.push(Some(at as i64 - from as i64));
                    at += to - from;
                }
                _ => {
                    let notes = self.notes.iter().filter(|note| (from..to).contains(&note.start)).count();
                    dropped.push(DroppedSection { from_tick: from, to_tick: to, numerator: n, denominator: d, notes, ticks_per_beat: self.ticks_per_beat });
                    shifts.push(None);
                }
            }
        }
        let section_of = |tick: u64| sections.partition_point(|s| s.0 <= tick).saturating_sub(1);
        let moved = |tick: u64, shift: i64| (tick as i64 + shift).max(0) as u64;
        let mut out = RawMidi { ticks_per_beat: self.ticks_per_beat, time_signatures: vec![(0, 4, 4)], ..RawMidi::default() };
        for note in &self.notes {
            if let Some(shift) = shifts[section_of(note.start)] {
                out.notes.push(RawNote { start: moved(note.start, shift), end: moved(note.start, shift) + (note.end - note.start), ..*note });
            }
        }
        if out.notes.is_empty() {
            let &(_, _, numerator, denominator) = sections.iter().find(|s| !matches!((s.2, s.3), (4, 4) | (2, 2) | (2, 4) | (1, 4))).unwrap_or(&sections[0]);
            let tick = dropped.first().map_or(0, |d| d.from_tick);
            return Err(ImportError::NotFourFour { numerator, denominator, tick });
        }
        // A tempo inside a cut section takes effect where the cut is.
        for &(tick, us) in &self.tempos {
            let i = section_of(tick);
            let place = shifts[i].map_or(begins[i], |shift| moved(tick, shift));
            out.tempos.push((place, us));
        }
        out.notes.sort_by_key(|n| (n.start, n.pitch, n.end));
        out.tempos.sort_by_key(|t| t.0);
        Ok((out, dropped))
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

/// Imports a standard MIDI file: bars start at tick 0, ticks are rescaled to 480 per beat, other
/// meters as `RawMidi::in_four_four` says. Returns the song and the sections it cut out.
pub fn import_reporting(bytes: &[u8]) -> Result<(Song, Vec<DroppedSection>), ImportError> {
    let (raw, dropped) = RawMidi::parse(bytes)?.in_four_four()?;
    let tpb = raw.ticks_per_beat as u64;
    Ok((raw.to_song(|tick| ((tick * TICKS_PER_BEAT as u64 + tpb / 2) / tpb).min(u32::MAX as u64) as u32), dropped))
}

/// `import_reporting` without the report.
pub fn import_bytes(bytes: &[u8]) -> Result<Song, ImportError> {
    import_reporting(bytes).map(|(song, _)| song)
}

/// Imports a MIDI file from disk.
pub fn import_file(path: &Path) -> Result<Song, ImportError> {
    import_bytes(&std::fs::read(path)?)
}
