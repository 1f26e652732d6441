//! The round-trip report: how much of a song survives encode -> decode. Compares the notes of
//! the original song with the notes decoded from its tokens.

use std::collections::HashMap;

use crate::music::grid::{duration_bin, velocity_bin, Grid};
use crate::music::song::{Song, TICKS_PER_BAR, TICKS_PER_POSITION};

/// Counts of a round trip. A note "matches" when a decoded note has the same pitch and an onset
/// within one 16th of it (each decoded note matches at most once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundTrip {
    pub notes_in: usize,
    pub notes_out: usize,
    pub matched: usize,
    pub same_duration_bin: usize,
    pub same_velocity_bin: usize,
}

impl RoundTrip {
    /// Compares `original` with `decoded` (whose leading empty bars were dropped).
    pub fn compare(original: &Song, decoded: &Song) -> RoundTrip {
        let shift = Grid::leading_bars(original) * TICKS_PER_BAR;
        let mut by_pitch: HashMap<u8, Vec<(u32, bool, usize)>> = HashMap::new();
        for (i, n) in decoded.notes.iter().enumerate() {
            by_pitch.entry(n.pitch).or_default().push((n.onset + shift, false, i));
        }
        let mut report = RoundTrip { notes_in: original.notes.len(), notes_out: decoded.notes.len(), ..Default::default() };
        for n in &original.notes {
            let Some(candidates) = by_pitch.get_mut(&n.pitch) else { continue };
            let best = candidates
                .iter_mut()
                .filter(|c| !c.1 && c.0.abs_diff(n.onset) <= TICKS_PER_POSITION)
                .min_by_key(|c| c.0.abs_diff(n.onset));
            if let Some(c) = best {
                c.1 = true;
                let out = decoded.notes[c.2];
                report.matched += 1;
                report.same_duration_bin += (duration_bin(out.duration) == duration_bin(n.duration)) as usize;
                report.same_velocity_bin += (velocity_bin(out.velocity) == velocity_bin(n.velocity)) as usize;
            }
        }
        report
    }

    /// Adds another song's counts.
    pub fn add(&mut self, other: RoundTrip) {
        self.notes_in += other.notes_in;
        self.notes_out += other.notes_out;
        self.matched += other.matched;
        self.same_duration_bin += other.same_duration_bin;
        self.same_velocity_bin += other.same_velocity_bin;
    }

    /// Share of input notes kept with the same pitch and onset within one 16th.
    pub fn kept(&self) -> f64 {
        self.matched as f64 / self.notes_in.max(1) as f64
    }

    /// One-line summary.
    pub fn summary(&self) -> String {
        let share = |n: usize| 100.0 * n as f64 / self.notes_in.max(1) as f64;
        format!(
            "notes in {}, notes out {}; same pitch and onset within a 16th: {:.2} %; also same duration bin: {:.2} %; same velocity bin: {:.2} %",
            self.notes_in,
            self.notes_out,
            share(self.matched),
            share(self.same_duration_bin),
            share(self.same_velocity_bin)
        )
    }
}
