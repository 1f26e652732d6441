//! MIDI export: a `Song` becomes a standard MIDI file (format 0, one piano track, 480 ticks per
//! beat) with tempo events from the song's tempo changes and chord names as marker events.
//!
//! A note struck again while it still sounds is cut at the new onset (what a DAW expects), and
//! zero-length notes last 30 ticks so that every note-on has a later note-off.

use midly::num::{u15, u24, u28, u4, u7};
use midly::{Format, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind};

use crate::music::song::{Song, TICKS_PER_BEAT};

/// Shortest note written, in ticks.
const MIN_NOTE_TICKS: u32 = 30;

/// Writes a song as MIDI file bytes on `channel` (0..16).
pub fn export_bytes(song: &Song, channel: u8) -> Vec<u8> {
    let channel = u4::new(channel.min(15));
    // (tick, order, kind): at one tick, meta events first, then note-offs, then note-ons.
    let mut events: Vec<(u32, u8, TrackEventKind<'_>)> = Vec::new();
    let names: Vec<String> = song.chords.iter().map(|c| c.chord.name()).collect();
    events.push((0, 0, TrackEventKind::Meta(MetaMessage::TrackName(b"CP Piano"))));
    events.push((0, 0, TrackEventKind::Meta(MetaMessage::TimeSignature(4, 2, 24, 8))));
    events.push((
        0,
        0,
        TrackEventKind::Midi { channel, message: MidiMessage::ProgramChange { program: u7::new(0) } },
    ));
    if song.tempos.first().is_none_or(|t| t.tick > 0) {
        events.push((0, 0, TrackEventKind::Meta(MetaMessage::Tempo(u24::new(500_000)))));
    }
    for t in &song.tempos {
        let us = (60e6 / t.bpm.max(1.0) as f64).round().min(0xFF_FFFF as f64) as u32;
        events.push((t.tick, 0, TrackEventKind::Meta(MetaMessage::Tempo(u24::new(us)))));
    }
    for (c, name) in song.chords.iter().zip(&names) {
        events.push((c.tick, 0, TrackEventKind::Meta(MetaMessage::Marker(name.as_bytes()))));
    }
    for (i, n) in song.notes.iter().enumerate() {
        let next_same_key = song.notes[i + 1..]
            .iter()
            .find(|m| m.pitch == n.pitch && m.onset > n.onset)
            .map(|m| m.onset);
        let mut end = n.onset + n.duration.max(MIN_NOTE_TICKS);
        if let Some(next) = next_same_key {
            end = end.min(next);
        }
        let key = u7::new(n.pitch.min(127));
        events.push((
            n.onset,
            2,
            TrackEventKind::Midi { channel, message: MidiMessage::NoteOn { key, vel: u7::new(n.velocity.clamp(1, 127)) } },
        ));
        events.push((end, 1, TrackEventKind::Midi { channel, message: MidiMessage::NoteOff { key, vel: u7::new(0) } }));
    }
    events.sort_by_key(|e| (e.0, e.1));
    let mut track = Vec::with_capacity(events.len() + 1);
    let mut last = 0;
    for (tick, _, kind) in events {
        track.push(TrackEvent { delta: u28::new(tick - last), kind });
        last = tick;
    }
    track.push(TrackEvent { delta: u28::new(0), kind: TrackEventKind::Meta(MetaMessage::EndOfTrack) });
    let smf = Smf {
        header: Header::new(Format::SingleTrack, Timing::Metrical(u15::new(TICKS_PER_BEAT as u16))),
        tracks: vec![track],
    };
    let mut bytes = Vec::new();
    smf.write_std(&mut bytes).expect("writing to a Vec cannot fail");
    bytes
}
