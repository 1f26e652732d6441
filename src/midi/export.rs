//! MIDI export: a `Song` becomes a standard MIDI file (format 0, one piano track, 480 ticks per
//! beat) with tempo events from the song's tempo changes and chord names as marker events; or
//! (`export_hands`) format 1 with the two hands as two tracks on channels 1 and 2.
//!
//! A note struck again while it still sounds is cut at the new onset (what a DAW expects), and
//! zero-length notes last 30 ticks so that every note-on has a later note-off.

use midly::num::{u15, u24, u28, u4, u7};
use midly::{Format, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind};

use crate::music::song::{is_left_hand, Song, TICKS_PER_BEAT};

/// Shortest note written, in ticks.
const MIN_NOTE_TICKS: u32 = 30;

/// Writes a song as MIDI file bytes on `channel` (0..16).
pub fn export_bytes(song: &Song, channel: u8) -> Vec<u8> {
    let all: Vec<usize> = (0..song.notes.len()).collect();
    let names = chord_names(song);
    let track = track(song, &all, channel, b"CP Piano", Some(&names));
    write(Format::SingleTrack, vec![track])
}

/// Writes a song with its two hands as two tracks: the right hand (notes at or above
/// `HAND_SPLIT`) on channel 1 with the tempos and chord markers, the left hand on channel 2.
pub fn export_hands(song: &Song) -> Vec<u8> {
    let (left, right): (Vec<usize>, Vec<usize>) = (0..song.notes.len()).partition(|&i| is_left_hand(song.notes[i].pitch));
    let names = chord_names(song);
    let tracks = vec![track(song, &right, 0, b"Right hand", Some(&names)), track(song, &left, 1, b"Left hand", None)];
    write(Format::Parallel, tracks)
}

fn chord_names(song: &Song) -> Vec<String> {
    song.chords.iter().map(|c| c.chord.name()).collect()
}

fn write(format: Format, tracks: Vec<Vec<TrackEvent<'_>>>) -> Vec<u8> {
    let smf = Smf { header: Header::new(format, Timing::Metrical(u15::new(TICKS_PER_BEAT as u16))), tracks };
    let mut bytes = Vec::new();
    smf.write_std(&mut bytes).expect("writing to a Vec cannot fail");
    bytes
}

/// One track: the notes `which` of the song on `channel`, with the song's tempos, meter and
/// chord markers (named by `chord_names`) when those are given.
fn track<'a>(song: &'a Song, which: &[usize], channel: u8, name: &'a [u8], chord_names: Option<&'a [String]>) -> Vec<TrackEvent<'a>> {
    let channel = u4::new(channel.min(15));
    // (tick, order, kind): at one tick, meta events first, then note-offs, then note-ons.
    let mut events: Vec<(u32, u8, TrackEventKind<'a>)> = Vec::new();
    events.push((0, 0, TrackEventKind::Meta(MetaMessage::TrackName(name))));
    events.push((
        0,
        0,
        TrackEventKind::Midi { channel, message: MidiMessage::ProgramChange { program: u7::new(0) } },
    ));
    if let Some(names) = chord_names {
        events.push((0, 0, TrackEventKind::Meta(MetaMessage::TimeSignature(4, 2, 24, 8))));
        if song.tempos.first().is_none_or(|t| t.tick > 0) {
            events.push((0, 0, TrackEventKind::Meta(MetaMessage::Tempo(u24::new(500_000)))));
        }
        for t in &song.tempos {
            let us = (60e6 / t.bpm.max(1.0) as f64).round().min(0xFF_FFFF as f64) as u32;
            events.push((t.tick, 0, TrackEventKind::Meta(MetaMessage::Tempo(u24::new(us)))));
        }
        for (c, name) in song.chords.iter().zip(names) {
            events.push((c.tick, 0, TrackEventKind::Meta(MetaMessage::Marker(name.as_bytes()))));
        }
    }
    for &i in which {
        let n = &song.notes[i];
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
    track
}
