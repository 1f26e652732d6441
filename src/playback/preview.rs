//! The preview voice: a small piano-like synth on the audio thread, so a producer hears the
//! song in hosts that cannot route a plugin's MIDI out (Ableton Live) or before routing it.
//! Each voice is three decaying harmonics with a short attack; higher keys decay faster, a
//! released key fades in a tenth of a second. Fixed polyphony (the quietest voice is taken when
//! all sound); no allocation, no locks; it reads only the engine's `NoteOut` events.

use crate::playback::engine::NoteOut;

/// Voices that can sound at once.
pub const VOICES: usize = 32;
/// Samples of the attack ramp.
const ATTACK_SAMPLES: f32 = 48.0;
/// Seconds a released key takes to fall by 60 dB.
const RELEASE_SECONDS: f32 = 0.1;
/// Output level of one voice at full velocity (several voices add up).
const LEVEL: f32 = 0.15;

#[derive(Debug, Clone, Copy, Default)]
struct Voice {
    active: bool,
    released: bool,
    pitch: u8,
    channel: u8,
    /// Phase of the fundamental in cycles (0..1).
    phase: f32,
    /// Cycles per sample.
    step: f32,
    /// Envelope level and its per-sample factor while held.
    level: f32,
    decay: f32,
    /// Attack progress (0..1).
    attack: f32,
    gain: f32,
}

/// The preview synth.
pub struct Preview {
    voices: [Voice; VOICES],
    sample_rate: f32,
}

/// Per-sample factor that falls by 60 dB in `seconds`.
fn fall(seconds: f32, sample_rate: f32) -> f32 {
    (-6.907_755 / (seconds * sample_rate).max(1.0)).exp()
}

impl Preview {
    pub fn new(sample_rate: f32) -> Preview {
        Preview { voices: [Voice::default(); VOICES], sample_rate: sample_rate.max(1.0) }
    }

    pub fn set_sample_rate(&mut self, sample_rate: f32) {
        self.sample_rate = sample_rate.max(1.0);
    }

    /// Ends every voice at once.
    pub fn silence(&mut self) {
        self.voices.iter_mut().for_each(|v| v.active = false);
    }

    /// Voices sounding now.
    pub fn sounding(&self) -> usize {
        self.voices.iter().filter(|v| v.active).count()
    }

    fn note_on(&mut self, pitch: u8, velocity: f32, channel: u8) {
        let slot = match self.voices.iter().position(|v| !v.active) {
            Some(i) => i,
            None => self.voices.iter().enumerate().min_by(|a, b| a.1.level.total_cmp(&b.1.level)).map_or(0, |(i, _)| i),
        };
        let frequency = 440.0 * 2f32.powf((pitch as f32 - 69.0) / 12.0);
        // Low keys ring for ~4 s, the top of the keyboard for well under one.
        let ring = (4.0 * 2f32.powf(-(pitch as f32 - 36.0) / 24.0)).clamp(0.3, 6.0);
        self.voices[slot] = Voice {
            active: true,
            released: false,
            pitch,
            channel,
            phase: 0.0,
            step: frequency / self.sample_rate,
            level: 1.0,
            decay: fall(ring, self.sample_rate),
            attack: 0.0,
            gain: LEVEL * velocity.clamp(0.0, 1.0),
        };
    }

    fn note_off(&mut self, pitch: u8, channel: u8) {
        let release = fall(RELEASE_SECONDS, self.sample_rate);
        for v in self.voices.iter_mut().filter(|v| v.active && !v.released && v.pitch == pitch && v.channel == channel) {
            v.released = true;
            v.decay = v.decay.min(release);
        }
    }

    /// Adds the block to `left` and `right`, applying `events` (in offset order) at their samples.
    pub fn render(&mut self, events: &[NoteOut], left: &mut [f32], right: &mut [f32]) {
        let frames = left.len().min(right.len());
        let mut next = 0;
        for i in 0..frames {
            while let Some(e) = events.get(next).filter(|e| e.offset() as usize <= i) {
                match *e {
                    NoteOut::On { pitch, velocity, channel, .. } => self.note_on(pitch, velocity, channel),
                    NoteOut::Off { pitch, channel, .. } => self.note_off(pitch, channel),
                }
                next += 1;
            }
            let mut sample = 0.0f32;
            for v in self.voices.iter_mut().filter(|v| v.active) {
                let p = v.phase * std::f32::consts::TAU;
                let tone = p.sin() + 0.5 * (2.0 * p).sin() + 0.25 * (3.0 * p).sin();
                v.attack = (v.attack + 1.0 / ATTACK_SAMPLES).min(1.0);
                sample += tone * v.level * v.attack * v.gain;
                v.phase = (v.phase + v.step).fract();
                v.level *= v.decay;
                if v.level < 1e-4 {
                    v.active = false;
                }
            }
            left[i] += sample;
            right[i] += sample;
        }
        // Events at or past the block's end (none from the engine) still take effect.
        for e in &events[next..] {
            match *e {
                NoteOut::On { pitch, velocity, channel, .. } => self.note_on(pitch, velocity, channel),
                NoteOut::Off { pitch, channel, .. } => self.note_off(pitch, channel),
            }
        }
    }
}
