//! Chord progressions for generation to follow: parsed from text ("C G Am F", one chord per
//! bar; "C:2 G:2 | Am F", bars split by `|` and chords given beats, the rest of a bar shared
//! equally), and the change points in 16ths that constrained decoding forces. Pure data.

use serde::{Deserialize, Serialize};

use crate::music::chord::Chord;
use crate::music::TextError;
use crate::music::song::POSITIONS_PER_BAR;

/// 16ths per beat.
const POSITIONS_PER_BEAT: u32 = POSITIONS_PER_BAR / 4;

/// A progression: where each chord starts (16ths from the start) over whole bars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progression {
    /// (start in 16ths, chord), starts increasing, the first at 0.
    pub changes: Vec<(u32, Chord)>,
    /// Length in bars.
    pub bars: u32,
}

impl std::str::FromStr for Progression {
    type Err = TextError;

    fn from_str(text: &str) -> Result<Progression, TextError> {
        // Without `|`, every chord is a bar.
        let bars: Vec<Vec<&str>> = if text.contains('|') {
            text.split('|').map(|b| b.split_whitespace().collect()).collect()
        } else {
            text.split_whitespace().map(|c| vec![c]).collect()
        };
        if bars.iter().all(|b| b.is_empty()) {
            return Err(TextError("an empty chord progression".into()));
        }
        let mut changes: Vec<(u32, Chord)> = Vec::new();
        for (b, bar) in bars.iter().enumerate() {
            if bar.is_empty() {
                return Err(TextError(format!("bar {} of the progression is empty", b + 1)));
            }
            let mut parsed = Vec::with_capacity(bar.len());
            for item in bar {
                let (name, beats) = match item.split_once(':') {
                    Some((n, k)) => (n, Some(k.parse::<u32>().map_err(|_| TextError(format!("{item:?}: beats must be a whole number")))?)),
                    None => (*item, None),
                };
                parsed.push((name.parse::<Chord>()?, beats));
            }
            let given: u32 = parsed.iter().filter_map(|p| p.1).sum();
            let open = parsed.iter().filter(|p| p.1.is_none()).count() as u32;
            if given > 4 || (given == 4 && open > 0) || parsed.iter().any(|p| p.1 == Some(0)) {
                return Err(TextError(format!("bar {} of the progression does not fit in 4 beats", b + 1)));
            }
            // Chords without beats share what is left of the bar, in 16ths.
            let share = ((4 - given) * POSITIONS_PER_BEAT).checked_div(open).unwrap_or(0);
            let mut at = b as u32 * POSITIONS_PER_BAR;
            for (chord, beats) in parsed {
                if changes.last().is_none_or(|&(_, c)| c != chord) {
                    changes.push((at, chord));
                }
                at += beats.map_or(share, |k| k * POSITIONS_PER_BEAT);
            }
        }
        Ok(Progression { changes, bars: bars.len() as u32 })
    }
}

impl Progression {
    fn length(&self) -> u32 {
        self.bars * POSITIONS_PER_BAR
    }

    /// The chord in force at `position` (16ths from the song's start), the progression looping.
    pub fn chord_at(&self, position: u32) -> Chord {
        let p = position % self.length();
        self.changes.iter().rev().find(|c| c.0 <= p).map_or(Chord::NoChord, |c| c.1)
    }

    /// The first change point at or after `position`, the progression looping (`looped`) or
    /// played once. A loop's first chord counts as a change when it differs from the last.
    pub fn next_change(&self, position: u32, looped: bool) -> Option<(u32, Chord)> {
        let length = self.length();
        let pass = position / length;
        if !looped && pass > 0 {
            return None;
        }
        let within = position % length;
        let last = self.changes.last().map(|c| c.1);
        let is_change = |i: usize, pass: u32| i > 0 || pass == 0 || Some(self.changes[0].1) != last;
        if let Some((_, &(at, chord))) = self.changes.iter().enumerate().find(|(i, c)| c.0 >= within && is_change(*i, pass)) {
            return Some((pass * length + at, chord));
        }
        if !looped {
            return None;
        }
        let next = pass + 1;
        self.changes.iter().enumerate().find(|(i, _)| is_change(*i, next)).map(|(_, &(at, chord))| (next * length + at, chord))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::music::chord::Quality;

    fn chord(text: &str) -> Chord {
        text.parse().unwrap()
    }

    #[test]
    fn progressions_parse_with_bars_and_beats() {
        let p: Progression = "C G Am F".parse().unwrap();
        assert_eq!(p.bars, 4);
        assert_eq!(p.changes, vec![(0, chord("C")), (16, chord("G")), (32, chord("Am")), (48, chord("F"))]);
        let q: Progression = "C:2 G:2 | Am F | F#m7b5".parse().unwrap();
        assert_eq!(q.changes, vec![(0, chord("C")), (8, chord("G")), (16, chord("Am")), (24, chord("F")), (32, chord("F#m7b5"))]);
        assert_eq!(chord("Bbmaj7"), Chord::Chord { root: 10, quality: Quality::Major7 });
        assert_eq!(chord("F#_m7"), Chord::Chord { root: 6, quality: Quality::Minor7 });
        for bad in ["", "H", "C:5", "Cxyz", "C:2 G:3 |", "C | | G"] {
            assert!(bad.parse::<Progression>().is_err(), "{bad:?} parses");
        }
        // The same chord twice in a row is one change.
        assert_eq!("C C G".parse::<Progression>().unwrap().changes.len(), 2);
    }

    #[test]
    fn change_points_loop_or_stop() {
        let p: Progression = "C G".parse().unwrap();
        assert_eq!(p.next_change(0, true), Some((0, chord("C"))));
        assert_eq!(p.next_change(1, true), Some((16, chord("G"))));
        assert_eq!(p.next_change(17, true), Some((32, chord("C"))));
        assert_eq!(p.next_change(17, false), None);
        assert_eq!(p.chord_at(40), chord("C"));
        // A loop that begins with the chord it ended on has no change at the seam.
        let same: Progression = "C G C".parse().unwrap();
        assert_eq!(same.next_change(33, true), Some((64, chord("G"))));
    }
}
