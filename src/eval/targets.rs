//! The figures a CP model must reach before it ships (issue 8, section 4), and the check of a
//! candidate against them next to the shipped model: the table `cp-piano eval --candidate`
//! prints. Pure functions over measured figures; generating and measuring the songs is
//! `eval::check_candidate`'s job.

use crate::eval::metrics::mean;
use crate::eval::{SongResult, Summary};

/// Highest mean validation loss (mean of the 7 families, whole POP909 validation songs).
pub const VALIDATION_LOSS_MAX: f64 = 0.65;
/// Lowest share of songs (%) that end with EOS within the word cap.
pub const EOS_PERCENT_MIN: f64 = 95.0;
/// The median song length, in bars.
pub const MEDIAN_BARS: (f64, f64) = (65.0, 95.0);
/// Songs shorter than this many bars are too short...
pub const SHORT_BARS: u32 = 24;
/// ...and fewer than this share of them (%) may be.
pub const SHORT_PERCENT_BELOW: f64 = 5.0;
/// H1, H4 and GS within this fraction of the POP909 validation songs' means.
pub const ENTROPY_AND_GROOVE_WITHIN: f64 = 0.10;
/// CPI within this fraction of the POP909 validation songs' mean.
pub const CPI_WITHIN: f64 = 0.25;
/// Lowest mean longest exact repeat, in bars.
pub const LONGEST_REPEAT_MIN: f64 = 2.0;

/// One model's figures as section 4 counts them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShipFigures {
    /// `None` where the POP909 data was not given.
    pub validation_loss: Option<f64>,
    pub eos_percent: f64,
    pub median_bars: f64,
    /// Share of songs (%) shorter than `SHORT_BARS`.
    pub short_percent: f64,
    pub h1: f64,
    pub h4: f64,
    pub gs: f64,
    pub cpi: f64,
    pub longest_repeat: f64,
}

impl ShipFigures {
    /// The figures of a model's generated songs (and its validation loss, where measured).
    pub fn of(songs: &[SongResult], validation_loss: Option<f64>) -> ShipFigures {
        let n = songs.len().max(1) as f64;
        let percent = |f: &dyn Fn(&SongResult) -> bool| songs.iter().filter(|s| f(s)).count() as f64 * 100.0 / n;
        let mut bars: Vec<f64> = songs.iter().map(|s| s.metrics.bars as f64).collect();
        bars.sort_by(f64::total_cmp);
        let median_bars = match bars.len() {
            0 => f64::NAN,
            len if len % 2 == 1 => bars[len / 2],
            len => (bars[len / 2 - 1] + bars[len / 2]) / 2.0,
        };
        let m = |f: &dyn Fn(&SongResult) -> f64| mean(&songs.iter().map(f).collect::<Vec<_>>());
        ShipFigures {
            validation_loss,
            eos_percent: percent(&|s| s.eos == Some(true)),
            median_bars,
            short_percent: percent(&|s| s.metrics.bars < SHORT_BARS),
            h1: m(&|s| s.metrics.h1),
            h4: m(&|s| s.metrics.h4),
            gs: m(&|s| s.metrics.gs),
            cpi: m(&|s| s.metrics.cpi),
            longest_repeat: m(&|s| s.metrics.longest_repeat_bars as f64),
        }
    }
}

/// What a figure must be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
    Below(f64),
    Between(f64, f64),
    /// Within `within` (a fraction) of the data's value.
    Near { data: f64, within: f64 },
}

impl Target {
    pub fn met(self, value: f64) -> bool {
        match self {
            Target::AtMost(max) => value <= max,
            Target::AtLeast(min) => value >= min,
            Target::Below(max) => value < max,
            Target::Between(low, high) => (low..=high).contains(&value),
            Target::Near { data, within } => (value - data).abs() <= within * data.abs(),
        }
    }

    fn describe(self, digits: usize) -> String {
        match self {
            Target::AtMost(max) => format!("<= {max:.digits$}"),
            Target::AtLeast(min) => format!(">= {min:.digits$}"),
            Target::Below(max) => format!("< {max:.digits$}"),
            Target::Between(low, high) => format!("{low:.digits$}-{high:.digits$}"),
            Target::Near { data, within } => {
                format!("{:.digits$}-{:.digits$} (POP909 {data:.digits$} +- {:.0} %)", data * (1.0 - within), data * (1.0 + within), within * 100.0)
            }
        }
    }
}

/// One line of the check: a figure, its target (`None` where it needs the POP909 data and that
/// was not given), and each model's value.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub figure: &'static str,
    pub target: Option<Target>,
    pub candidate: Option<f64>,
    pub shipped: Option<f64>,
    pub digits: usize,
}

impl Row {
    /// Whether a value meets the target (`None`: it cannot be judged).
    pub fn meets(&self, value: Option<f64>) -> Option<bool> {
        Some(self.target?.met(value.filter(|v| v.is_finite())?))
    }
}

/// Section 4's rows for a candidate and the shipped model; `data` is the POP909 validation
/// songs' summary, which the H1, H4, GS and CPI targets are relative to.
pub fn rows(candidate: &ShipFigures, shipped: &ShipFigures, data: Option<&Summary>) -> Vec<Row> {
    let near = |f: fn(&Summary) -> f64, within: f64| data.map(|d| Target::Near { data: f(d), within });
    let row = |figure, target, f: fn(&ShipFigures) -> Option<f64>, digits| Row { figure, target, candidate: f(candidate), shipped: f(shipped), digits };
    vec![
        row(VALIDATION_FIGURE, Some(Target::AtMost(VALIDATION_LOSS_MAX)), |f| f.validation_loss, 4),
        row("songs that end by EOS (%)", Some(Target::AtLeast(EOS_PERCENT_MIN)), |f| Some(f.eos_percent), 0),
        row("median bars", Some(Target::Between(MEDIAN_BARS.0, MEDIAN_BARS.1)), |f| Some(f.median_bars), 1),
        row("songs under 24 bars (%)", Some(Target::Below(SHORT_PERCENT_BELOW)), |f| Some(f.short_percent), 0),
        row("H1 (pitch-class entropy, 1 bar)", near(|d| d.h1, ENTROPY_AND_GROOVE_WITHIN), |f| Some(f.h1), 3),
        row("H4 (pitch-class entropy, 4 bars)", near(|d| d.h4, ENTROPY_AND_GROOVE_WITHIN), |f| Some(f.h4), 3),
        row("GS (grooving similarity)", near(|d| d.gs, ENTROPY_AND_GROOVE_WITHIN), |f| Some(f.gs), 3),
        row("CPI (chord progression irregularity)", near(|d| d.cpi, CPI_WITHIN), |f| Some(f.cpi), 3),
        row("longest exact repeat (bars, mean)", Some(Target::AtLeast(LONGEST_REPEAT_MIN)), |f| Some(f.longest_repeat), 1),
    ]
}

/// Targets met by one model, of those that can be judged.
pub fn met(rows: &[Row], value: fn(&Row) -> Option<f64>) -> (usize, usize) {
    let judged: Vec<bool> = rows.iter().filter_map(|r| r.meets(value(r))).collect();
    (judged.iter().filter(|&&m| m).count(), judged.len())
}

/// The validation loss's row (the tie-break of `ships`).
const VALIDATION_FIGURE: &str = "validation loss (mean of 7 families, whole validation songs)";

/// Whether the candidate replaces the shipped model: it meets more targets, or it meets every
/// target the shipped model meets and has the lower validation loss (the loss the model is
/// trained on breaks a tie). A target it cannot be judged on counts as not met.
pub fn ships(rows: &[Row]) -> bool {
    let (c, _) = met(rows, |r| r.candidate);
    let (s, _) = met(rows, |r| r.shipped);
    let keeps_every_target = rows.iter().all(|r| r.meets(r.shipped) != Some(true) || r.meets(r.candidate) == Some(true));
    let loss = |value: fn(&Row) -> Option<f64>| rows.iter().find(|r| r.figure == VALIDATION_FIGURE).and_then(value).filter(|v| v.is_finite());
    let lower_loss = matches!((loss(|r| r.candidate), loss(|r| r.shipped)), (Some(c), Some(s)) if c < s);
    c > s || (c == s && keeps_every_target && lower_loss)
}

/// The check as markdown: the table, how many targets each model meets, whether the candidate
/// meets every one of them, and whether it ships (`ships`).
pub fn report_markdown(rows: &[Row], candidate: &str, shipped: &str) -> String {
    let cell = |row: &Row, value: Option<f64>| match value.filter(|v| v.is_finite()) {
        Some(v) => {
            let mark = match row.meets(Some(v)) {
                Some(true) => " (met)",
                Some(false) => " (missed)",
                None => "",
            };
            format!("{v:.prec$}{mark}", prec = row.digits)
        }
        None => "-".into(),
    };
    let mut out = format!("| figure | target | candidate: {candidate} | shipped: {shipped} |\n|---|---|---|---|\n");
    for row in rows {
        let target = row.target.map_or("- (needs --pop909)".into(), |t| t.describe(row.digits));
        out.push_str(&format!("| {} | {target} | {} | {} |\n", row.figure, cell(row, row.candidate), cell(row, row.shipped)));
    }
    let (c, judged) = met(rows, |r| r.candidate);
    let (s, _) = met(rows, |r| r.shipped);
    out.push_str(&format!("\nTargets met: candidate {c} of {judged}, shipped {s} of {judged}"));
    if judged < rows.len() {
        out.push_str(&format!(" ({} need --pop909)", rows.len() - judged));
    }
    out.push_str(if c == rows.len() { ". The candidate meets every target.\n" } else { ". The candidate does not meet every target.\n" });
    let verdict = if ships(rows) { "yes" } else { "no" };
    out.push_str(&format!("\nShips: {verdict} (the rule: more targets met, or every target the shipped model meets and a lower validation loss).\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(bars: f64, h1: f64) -> ShipFigures {
        ShipFigures { validation_loss: Some(0.7), eos_percent: 99.0, median_bars: bars, short_percent: 1.0, h1, h4: 2.5, gs: 0.7, cpi: 0.7, longest_repeat: 2.5 }
    }

    fn data() -> Summary {
        Summary { songs: 40, eos_rate: None, steps: 2500.0, bars: 79.0, notes: 1500.0, h1: 2.0, h4: 2.6, gs: 0.75, cpi: 0.64, longest_repeat: 8.0, seconds_per_song: None, ms_per_step: None }
    }

    #[test]
    fn relative_targets_are_measured_from_the_data() {
        let rows = rows(&figures(80.0, 1.81), &figures(80.0, 1.79), Some(&data()));
        let h1 = rows.iter().find(|r| r.figure.starts_with("H1")).unwrap();
        // 10 % of 2.0: 1.81 is inside, 1.79 outside.
        assert_eq!(h1.meets(h1.candidate), Some(true));
        assert_eq!(h1.meets(h1.shipped), Some(false));
        let cpi = rows.iter().find(|r| r.figure.starts_with("CPI")).unwrap();
        // 25 % of 0.64 reaches 0.80 from above too: 0.7 is inside.
        assert_eq!(cpi.meets(Some(0.7)), Some(true));
        assert_eq!(cpi.meets(Some(0.81)), Some(false));
        assert_eq!(cpi.meets(Some(0.47)), Some(false));
    }

    #[test]
    fn the_count_and_verdict_follow_every_row() {
        let good = figures(80.0, 2.0);
        let rows_all = rows(&ShipFigures { validation_loss: Some(0.6), ..good }, &figures(120.0, 2.0), Some(&data()));
        assert_eq!(met(&rows_all, |r| r.candidate), (9, 9));
        // The shipped model misses the validation loss (0.7) and the median (120).
        assert_eq!(met(&rows_all, |r| r.shipped), (7, 9));
        let report = report_markdown(&rows_all, "a", "b");
        assert!(report.contains("candidate 9 of 9, shipped 7 of 9"), "{report}");
        assert!(report.contains("meets every target"));
        assert!(report.contains("| median bars | 65.0-95.0 | 80.0 (met) | 120.0 (missed) |"), "{report}");
    }

    #[test]
    fn a_tie_ships_only_with_every_target_kept_and_a_lower_loss() {
        let shipped = figures(80.0, 2.0);
        let better_loss = ShipFigures { validation_loss: Some(0.69), ..shipped };
        // Same targets met (8 of 9; both miss the loss), lower loss: ships.
        let tie = rows(&better_loss, &shipped, Some(&data()));
        assert_eq!(met(&tie, |r| r.candidate), met(&tie, |r| r.shipped));
        assert!(ships(&tie));
        assert!(report_markdown(&tie, "a", "b").contains("Ships: yes"));
        // The same loss: no reason to change.
        assert!(!ships(&rows(&shipped, &shipped, Some(&data()))));
        // As many targets and a lower loss, but it trades the median (met by the shipped model)
        // for the loss target: no.
        let traded = rows(&ShipFigures { median_bars: 120.0, validation_loss: Some(0.6), ..shipped }, &shipped, Some(&data()));
        assert_eq!(met(&traded, |r| r.candidate), met(&traded, |r| r.shipped));
        assert!(!ships(&traded));
        assert!(report_markdown(&traded, "a", "b").contains("Ships: no"));
        // More targets met ships whatever the loss.
        let more = rows(&ShipFigures { validation_loss: Some(0.75), ..shipped }, &figures(120.0, 2.0), Some(&data()));
        assert!(ships(&more));
    }

    #[test]
    fn without_the_data_the_relative_targets_are_not_judged() {
        let f = figures(80.0, 2.0);
        let rows = rows(&f, &f, None);
        // Five targets are judged; the validation loss (0.7) misses its 0.65.
        assert_eq!(met(&rows, |r| r.candidate), (4, 5));
        let report = report_markdown(&rows, "a", "b");
        assert!(report.contains("(4 need --pop909)") && report.contains("does not meet every target"), "{report}");
    }

    #[test]
    fn median_and_shares_of_songs() {
        use crate::eval::metrics::SongMetrics;
        use crate::music::grid::Grid;
        let song = |bars: u32, eos: bool| SongResult {
            name: String::new(),
            metrics: SongMetrics { bars, notes: 1, h1: 1.0, h4: 1.0, gs: 1.0, cpi: 1.0, longest_repeat_bars: 0 },
            steps: 0,
            eos: Some(eos),
            seconds: None,
            grid: Grid::default(),
        };
        let songs = [song(10, true), song(70, true), song(80, false), song(200, true)];
        let f = ShipFigures::of(&songs, None);
        assert_eq!(f.median_bars, 75.0);
        assert_eq!(f.eos_percent, 75.0);
        assert_eq!(f.short_percent, 25.0);
    }
}
