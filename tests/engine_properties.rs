//! Property test of the audio-thread engine over 10,000 random transport scripts: play, stop,
//! seek back and forward, loops the host splits and loops it does not, tempo changes,
//! deactivation, channel, left-hand channel and start-bar changes, block sizes 1 to 16,384, rates 8 to 192 kHz, the
//! worker ahead or behind. Every script checks that events are in sample order within each
//! block, offsets lie inside the block, every note-on ends exactly once on its own channel, and
//! no note starts while the same pitch sounds on its channel. With the worker ahead, the same
//! script run at two other block partitions (one host splitting blocks at the loop end, one not)
//! gives the same events at the same absolute samples.

use cp_piano::model::init::Rng;
use cp_piano::playback::engine::{Engine, Note, NoteOut, PlaySettings, SongEvent, Transport};

/// A random song: `count` notes in `beats` beats, a few pitches (so keys are struck again while
/// they sound), durations from 0 (the engine's minimum) to long.
fn song(rng: &mut Rng, count: usize, beats: f64) -> Vec<Note> {
    let mut notes: Vec<Note> = (0..count)
        .map(|_| {
            let start = if rng.uniform() < 0.5 { (rng.uniform() * beats * 4.0).floor() / 4.0 } else { rng.uniform() * beats };
            let duration = match rng.next_u64() % 4 {
                0 => 0.0,
                1 => rng.uniform() * 0.1,
                2 => 0.25 * (1 + rng.next_u64() % 8) as f64,
                _ => rng.uniform() * 8.0,
            };
            Note { start, duration, pitch: 56 + (rng.next_u64() % 10) as u8, velocity: 1 + (rng.next_u64() % 127) as u8 }
        })
        .collect();
    notes.sort_by(|a, b| a.start.total_cmp(&b.start));
    notes
}

/// One stretch of a script between two host changes.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Play `samples` samples from host beat `position` at `tempo`, with an optional loop.
    Play { position: f64, samples: u64, tempo: f64, loop_range: Option<(f64, f64)> },
    /// Play on from where the last stretch ended, at a new tempo.
    Continue { samples: u64, tempo: f64 },
    /// One stopped block.
    Stop,
    /// The host deactivates and reactivates.
    Suspend,
    Channel(u8),
    /// The left hand (below middle C) on a channel of its own, or not.
    LeftHand(Option<u8>),
    StartBeat(f64),
}

struct Script {
    rate: f64,
    notes: Vec<Note>,
    steps: Vec<Step>,
    /// Typical block size.
    block: u32,
}

fn script(rng: &mut Rng) -> Script {
    let rate = 8_000.0 + rng.uniform() * 184_000.0;
    let block = (2f64.powf(rng.uniform() * 14.0)).round().max(1.0) as u32;
    let beats = 8.0 + rng.uniform() * 56.0;
    let count = 10 + (rng.next_u64() % 120) as usize;
    let notes = song(rng, count, beats);
    let mut steps = Vec::new();
    for _ in 0..1 + rng.next_u64() % 6 {
        let tempo = 40.0 + rng.uniform() * 200.0;
        let samples = block as u64 * (5 + rng.next_u64() % 60);
        let step = match rng.next_u64() % 10 {
            0..=2 => {
                let position = rng.uniform() * beats;
                let loop_range = rng.next_u64().is_multiple_of(2).then(|| {
                    let a = position - rng.uniform() * 4.0;
                    (a, position + 0.01 + rng.uniform() * 6.0)
                });
                Step::Play { position, samples, tempo, loop_range }
            }
            3 | 4 => Step::Continue { samples, tempo },
            5 => Step::Stop,
            6 => Step::Suspend,
            7 => Step::Channel((rng.next_u64() % 16) as u8),
            8 => Step::LeftHand(rng.next_u64().is_multiple_of(2).then(|| (rng.next_u64() % 16) as u8)),
            _ => Step::StartBeat((rng.next_u64() % 3) as f64 * 4.0),
        };
        steps.push(step);
    }
    steps.push(Step::Stop);
    Script { rate, notes, steps, block }
}

/// An event at its absolute sample: (sample, on, pitch, channel, velocity bits).
type Absolute = (u64, bool, u8, u8, u32);

/// What one run of a script produced: events at absolute samples, and violations found.
#[derive(Default)]
struct Run {
    events: Vec<Absolute>,
    violations: Vec<String>,
}

/// Runs a script through an engine. `blocks` gives block sizes; `split` makes the host end a
/// block at the loop end (as many hosts do); `behind` feeds the song while it plays.
fn run(s: &Script, rng: &mut Rng, split: bool, behind: bool) -> Run {
    let mut engine = Engine::new();
    let mut fed = 0usize;
    engine.receive(SongEvent::Reset { state: 0 });
    let feed_all = |engine: &mut Engine, fed: &mut usize| {
        for n in &s.notes[*fed..] {
            engine.receive(SongEvent::Note(*n));
        }
        *fed = s.notes.len();
        engine.receive(SongEvent::End(80.0));
    };
    if !behind {
        feed_all(&mut engine, &mut fed);
    }
    let mut settings = PlaySettings { start_beat: 0.0, velocity_scale: 1.0, follow_transport: true, channel: 0, left_hand: None, split_pitch: 60 };
    let mut out = Run::default();
    let mut sounding: Vec<(u8, u8)> = Vec::new();
    let mut abs = 0u64;
    let mut position = 0.0f64;
    let mut tempo = 120.0;
    let mut loop_range = None;
    let block_of = |rng: &mut Rng| 1 + (rng.next_u64() % (2 * s.block as u64)).min(16_383) as u32;
    let process = |engine: &mut Engine, t: Transport, settings: PlaySettings, samples: u32, abs: u64, out: &mut Run, sounding: &mut Vec<(u8, u8)>| {
        let mut last = 0u32;
        engine.process(t, settings, samples, s.rate, &mut |e| {
            let offset = e.offset();
            if offset >= samples {
                out.violations.push(format!("offset {offset} outside a block of {samples}"));
            }
            if offset < last {
                out.violations.push(format!("offset {offset} after {last} in one block"));
            }
            last = offset;
            match e {
                NoteOut::On { pitch, channel, .. } => {
                    if sounding.contains(&(pitch, channel)) {
                        out.violations.push(format!("note-on of {pitch} on channel {channel} while it sounds"));
                    }
                    sounding.push((pitch, channel));
                }
                NoteOut::Off { pitch, channel, .. } => match sounding.iter().position(|&k| k == (pitch, channel)) {
                    Some(i) => {
                        sounding.swap_remove(i);
                    }
                    None => out.violations.push(format!("note-off of {pitch} on channel {channel} with no note-on")),
                },
            }
            let at = abs + offset as u64;
            out.events.push(match e {
                NoteOut::On { pitch, channel, velocity, .. } => (at, true, pitch, channel, velocity.to_bits()),
                NoteOut::Off { pitch, channel, .. } => (at, false, pitch, channel, 0),
            });
        });
    };
    for step in &s.steps {
        let (samples, start, new_tempo, new_loop) = match *step {
            Step::Play { position: p, samples, tempo: t, loop_range: l } => (samples, p, t, l),
            Step::Continue { samples, tempo: t } => (samples, position, t, loop_range),
            Step::Stop => {
                let t = Transport { playing: false, tempo, position: Some(position), loop_range: None };
                process(&mut engine, t, settings, 64, abs, &mut out, &mut sounding);
                abs += 64;
                continue;
            }
            Step::Suspend => {
                engine.suspend();
                continue;
            }
            Step::Channel(c) => {
                settings.channel = c;
                continue;
            }
            Step::LeftHand(l) => {
                settings.left_hand = l;
                continue;
            }
            Step::StartBeat(b) => {
                settings.start_beat = b;
                continue;
            }
        };
        tempo = new_tempo;
        loop_range = new_loop;
        let bps = tempo / 60.0 / s.rate;
        let mut left = samples;
        position = start;
        while left > 0 {
            let mut n = (block_of(rng) as u64).min(left) as u32;
            let mut wrap_after = None;
            if let Some((a, b)) = loop_range.filter(|(a, b): &(f64, f64)| b - a > 4.0 * bps) {
                // A block that reaches the loop end wraps (a host that splits ends it there).
                let cut = ((b - position) / bps).round();
                if position < b && cut <= n as f64 {
                    if split {
                        n = cut.max(0.0) as u32;
                        wrap_after = Some(a);
                    } else {
                        // The host wraps as often as the block holds loop passes, as the
                        // engine does inside the block.
                        let pass = ((b - a) / bps).round();
                        let mut rest = n as f64 - cut.max(0.0);
                        while pass < rest {
                            rest -= pass;
                        }
                        wrap_after = Some(a + rest * bps);
                    }
                }
            }
            if behind && fed < s.notes.len() && rng.next_u64().is_multiple_of(3) {
                let more = (fed + 1 + (rng.next_u64() % 8) as usize).min(s.notes.len());
                for note in &s.notes[fed..more] {
                    engine.receive(SongEvent::Note(*note));
                }
                fed = more;
                let ready = s.notes.get(fed).map_or(80.0, |n| n.start);
                engine.receive(SongEvent::ReadyUntil(ready));
                if fed == s.notes.len() {
                    feed_all(&mut engine, &mut fed);
                }
            }
            if n > 0 {
                let t = Transport { playing: true, tempo, position: Some(position), loop_range };
                process(&mut engine, t, settings, n, abs, &mut out, &mut sounding);
                abs += n as u64;
                left -= n as u64;
            }
            position = match wrap_after {
                Some(p) if split => p,
                Some(p) => p,
                None => position + n as f64 * bps,
            };
        }
    }
    if !sounding.is_empty() {
        out.violations.push(format!("{} notes never ended: {sounding:?}", sounding.len()));
    }
    out
}

#[test]
fn ten_thousand_transport_scripts_keep_every_rule() {
    let mut rng = Rng::new(2026);
    let (mut scripts, mut events, mut compared) = (0usize, 0usize, 0usize);
    let mut violations = Vec::new();
    for i in 0..10_000 {
        let s = script(&mut rng);
        let behind = i % 4 == 3;
        let first = run(&s, &mut rng, false, behind);
        events += first.events.len();
        violations.extend(first.violations.iter().map(|v| format!("script {i}: {v}")));
        if !behind {
            // The same script at another block partition, with a host that splits at loop ends.
            let second = run(&s, &mut rng, true, false);
            violations.extend(second.violations.iter().map(|v| format!("script {i} (split): {v}")));
            if first.events != second.events {
                let at = first.events.iter().zip(&second.events).position(|(a, b)| a != b).unwrap_or(first.events.len().min(second.events.len()));
                violations.push(format!(
                    "script {i}: block size changed the events ({} vs {}; first difference at #{at}: {:?} vs {:?})",
                    first.events.len(),
                    second.events.len(),
                    first.events.get(at),
                    second.events.get(at)
                ));
            }
            compared += 1;
        }
        scripts += 1;
    }
    println!("{scripts} scripts, {events} events, {compared} compared across block partitions, {} violations", violations.len());
    assert!(violations.is_empty(), "{} violations, e.g.:\n{}", violations.len(), violations.iter().take(10).cloned().collect::<Vec<_>>().join("\n"));
    assert!(events > 100_000, "the scripts play notes ({events} events)");
}
