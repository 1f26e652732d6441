//! REMI tokens (Huang & Yang 2020), the baseline representation: one token per event, 332 in all.
//!
//! Id layout: 0 Bar; 1..=16 Beat_0..15; 17..=149 Chord (root * 11 + quality, 149 = N_N);
//! 150..=203 Tempo (54 values); 204..=289 Note_Pitch 22..=107; 290..=313 Note_Velocity 40..=86;
//! 314..=330 Note_Duration 0..=1920 ticks; 331 EOS.
//!
//! Order: Bar at every bar; per position with events: Beat, Chord (on change), Tempo (on change),
//! then per note (descending pitch) Pitch, Velocity, Duration; a closing Bar, then EOS.
//! Built on the same quantisation layer (`grid`) as CP.

use crate::music::chord::{Chord, CHORD_LABELS};
use crate::music::grid::{Grid, GridBuilder, GridNote, DURATION_BINS, PITCHES, PITCH_MIN, TEMPO_VALUES, VELOCITY_BINS};
use crate::music::song::POSITIONS_PER_BAR;

pub const BAR: u16 = 0;
pub const BEAT: u16 = 1;
pub const CHORD: u16 = BEAT + POSITIONS_PER_BAR as u16;
pub const TEMPO: u16 = CHORD + CHORD_LABELS as u16;
pub const PITCH: u16 = TEMPO + TEMPO_VALUES.len() as u16;
pub const VELOCITY: u16 = PITCH + PITCHES as u16;
pub const DURATION: u16 = VELOCITY + VELOCITY_BINS as u16;
pub const EOS: u16 = DURATION + DURATION_BINS as u16;
/// Vocabulary size (332).
pub const VOCAB_SIZE: usize = EOS as usize + 1;

/// Encodes a quantised song as REMI tokens, ending with the closing Bar and EOS.
pub fn encode(grid: &Grid) -> Vec<u16> {
    let mut tokens = Vec::new();
    let mut slots = grid.slots.iter().peekable();
    for bar in 0..grid.bars {
        tokens.push(BAR);
        while let Some(slot) = slots.next_if(|s| s.bar() == bar) {
            tokens.push(BEAT + slot.beat() as u16);
            if let Some(c) = slot.chord {
                tokens.push(CHORD + c.index() as u16);
            }
            if let Some(t) = slot.tempo {
                tokens.push(TEMPO + t as u16);
            }
            for n in &slot.notes {
                tokens.push(PITCH + (n.pitch - PITCH_MIN) as u16);
                tokens.push(VELOCITY + n.velocity as u16);
                tokens.push(DURATION + n.duration as u16);
            }
        }
    }
    if grid.bars > 0 {
        tokens.push(BAR);
    }
    tokens.push(EOS);
    tokens
}

/// Human-readable name of a token.
pub fn describe(token: u16) -> String {
    match token {
        BAR => "Bar".into(),
        t if t < CHORD => format!("Beat_{}", t - BEAT),
        t if t < TEMPO => format!("Chord_{}", Chord::from_index((t - CHORD) as usize).map_or("?".into(), |c| c.name())),
        t if t < PITCH => format!("Tempo_{}", TEMPO_VALUES[(t - TEMPO) as usize]),
        t if t < VELOCITY => format!("Note_Pitch_{}", t - PITCH + PITCH_MIN as u16),
        t if t < DURATION => format!("Note_Velocity_{}", 40 + 2 * (t - VELOCITY)),
        t if t < EOS => format!("Note_Duration_{}", 120 * (t - DURATION)),
        EOS => "EOS".into(),
        t => format!("?{t}"),
    }
}

/// What decoding made of a token sequence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded {
    pub grid: Grid,
    /// Tokens that did not fit where they stood (a Velocity without its Pitch, ...).
    pub skipped: usize,
    pub ended: bool,
}

/// Decodes tokens up to EOS. A note needs Pitch, Velocity, Duration in that order after a Beat;
/// anything out of place is counted and skipped.
pub fn decode(tokens: &[u16]) -> Decoded {
    let mut builder = GridBuilder::default();
    let mut bar: Option<u32> = None;
    let mut position: Option<u32> = None;
    let mut bar_tokens = 0u32;
    let mut skipped = 0;
    let mut ended = false;
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        i += 1;
        match t {
            BAR => {
                bar = Some(bar.map_or(0, |b| b + 1));
                position = None;
                bar_tokens += 1;
            }
            t if t < CHORD => {
                position = Some(*bar.get_or_insert(0) * POSITIONS_PER_BAR + (t - BEAT) as u32);
            }
            t if t < TEMPO && position.is_some() => {
                builder.slot(position.unwrap()).chord = Chord::from_index((t - CHORD) as usize);
            }
            t if (TEMPO..PITCH).contains(&t) && position.is_some() => {
                builder.slot(position.unwrap()).tempo = Some((t - TEMPO) as u8);
            }
            t if (PITCH..VELOCITY).contains(&t) && position.is_some() => {
                match (tokens.get(i), tokens.get(i + 1)) {
                    (Some(&v), Some(&d)) if (VELOCITY..DURATION).contains(&v) && (DURATION..EOS).contains(&d) => {
                        i += 2;
                        builder.slot(position.unwrap()).notes.push(GridNote {
                            pitch: PITCH_MIN + (t - PITCH) as u8,
                            velocity: (v - VELOCITY) as u8,
                            duration: (d - DURATION) as u8,
                        });
                    }
                    _ => skipped += 1,
                }
            }
            EOS => {
                ended = true;
                break;
            }
            _ => skipped += 1,
        }
    }
    builder.bars = builder.bars.max(bar_tokens.saturating_sub(1));
    Decoded { grid: builder.finish(), skipped, ended }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_has_332_tokens() {
        assert_eq!(VOCAB_SIZE, 332);
        assert_eq!((CHORD, TEMPO, PITCH, VELOCITY, DURATION, EOS), (17, 150, 204, 290, 314, 331));
    }

    #[test]
    fn broken_note_triples_are_skipped() {
        let tokens = [BAR, BEAT + 2, PITCH + 30, VELOCITY + 3, BAR, BEAT, PITCH + 30, VELOCITY + 3, DURATION + 2, EOS];
        let d = decode(&tokens);
        assert!(d.ended);
        assert_eq!(d.skipped, 2); // the lone pitch, then the lone velocity
        assert_eq!(d.grid.note_count(), 1);
        assert_eq!(d.grid.slots[0].position, 16);
    }
}
