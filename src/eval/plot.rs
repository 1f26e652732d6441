//! PNG figures drawn with plotters into a pixel buffer, with an embedded font (egui's Ubuntu
//! Light), so no system font or library is needed: the trainer's loss curve, the evaluation's
//! metric bars and piano rolls. Plots take plain series and songs; they know nothing of the
//! trainer or the models.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::combinators::BindKeyPoints;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle, RGBColor};

use crate::data::dataset::{write_atomically, DatasetError};
use crate::music::chord::ROOT_NAMES;
use crate::music::grid::{Grid, PITCH_MAX, PITCH_MIN};
use crate::music::song::POSITIONS_PER_BAR;

/// A colour of a series.
pub type Rgb = RGBColor;
pub const BLUE: Rgb = RGBColor(40, 90, 200);
pub const RED: Rgb = RGBColor(200, 50, 50);
pub const GREEN: Rgb = RGBColor(30, 150, 70);
/// Colours for the loss families, in family order (then repeated).
const FAMILY_COLOURS: [Rgb; 7] = [
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(120, 120, 120),
];

/// Why a figure could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{}: cannot draw the figure: {message}", path.display())]
    Draw { path: PathBuf, message: String },
    #[error("{}: cannot encode the PNG: {error}", path.display())]
    Encode { path: PathBuf, error: png::EncodingError },
    #[error(transparent)]
    Write(#[from] DatasetError),
}

const FONT: &str = "sans-serif";

/// Registers the embedded font once per process (plotters keeps a global font table).
fn register_embedded_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        if register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT).is_err() {
            // The font is a constant of a dependency; a failure here is a broken build.
            panic!("the embedded Ubuntu Light font does not parse");
        }
    });
}

/// Draws a `width` x `height` figure with `draw` and writes it to `path` as a PNG.
fn figure<F>(path: &Path, width: u32, height: u32, draw: F) -> Result<(), PlotError>
where
    F: FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), Box<dyn std::error::Error>>,
{
    register_embedded_font();
    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        let drawn = draw(&root).and_then(|()| root.present().map_err(Into::into));
        drawn.map_err(|e| PlotError::Draw { path: path.to_path_buf(), message: e.to_string() })?;
    }
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let encode = |error| PlotError::Encode { path: path.to_path_buf(), error };
        encoder.write_header().map_err(encode)?.write_image_data(&pixels).map_err(encode)?;
    }
    Ok(write_atomically(path, &bytes)?)
}

/// The range of the finite values, padded so a flat series still has height.
fn value_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return None;
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    Some((lo - pad, hi + pad))
}

/// The trainer's loss curve against optimizer steps: the training loss as a line, the mean
/// validation loss as points, and one line per family of the validation loss (`families`:
/// name and (step, loss) points).
pub fn loss_curve(train: &[(f64, f64)], valid: &[(f64, f64)], families: &[(&str, Vec<(f64, f64)>)], path: &Path) -> Result<(), PlotError> {
    let all = || train.iter().chain(valid).chain(families.iter().flat_map(|f| f.1.iter()));
    let (x_lo, x_hi) = value_range(all().map(|p| p.0)).unwrap_or((0.0, 1.0));
    let (y_lo, y_hi) = value_range(all().map(|p| p.1)).unwrap_or((0.0, 1.0));
    figure(path, 1000, 600, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("training and validation loss", (FONT, 26))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x_lo.max(0.0)..x_hi, y_lo.max(0.0)..y_hi)?;
        chart
            .configure_mesh()
            .x_desc("optimizer step")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("cross-entropy (nats)")
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .draw()?;
        chart
            .draw_series(LineSeries::new(train.iter().copied(), BLUE.stroke_width(2)))?
            .label("train (mean of families)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        for (i, (name, points)) in families.iter().enumerate() {
            let colour = FAMILY_COLOURS[i % FAMILY_COLOURS.len()];
            chart
                .draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(1)))?
                .label(format!("valid {name}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(1)));
        }
        chart
            .draw_series(valid.iter().map(|&p| Circle::new(p, 4, RED.filled())))?
            .label("valid (mean)")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, RED.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

/// One metric of the evaluation's bar figure: a value per model (NaN: not measured) and the
/// data's value, drawn as a reference line across the panel.
pub struct MetricPanel<'a> {
    pub name: &'a str,
    pub values: Vec<f64>,
    pub reference: Option<f64>,
}

/// Side-by-side panels, one per metric, each with its own scale from 0: a bar per model
/// (`models`: label and colour, in the order of each panel's values) and the reference line.
pub fn metric_bars(title: &str, models: &[(&str, Rgb)], panels: &[MetricPanel<'_>], reference_label: &str, path: &Path) -> Result<(), PlotError> {
    let width = 260 * panels.len().max(1) as u32;
    figure(path, width, 480, |root| {
        let (head, body) = root.split_vertically(70);
        head.draw(&Text::new(title, (16, 8), (FONT, 24).into_font()))?;
        let mut x = 16;
        for (label, colour) in models {
            head.draw(&Rectangle::new([(x, 44), (x + 14, 58)], colour.filled()))?;
            head.draw(&Text::new(*label, (x + 20, 42), (FONT, 16).into_font()))?;
            x += 40 + 9 * label.len() as i32;
        }
        head.draw(&PathElement::new(vec![(x, 51), (x + 24, 51)], GREEN.stroke_width(3)))?;
        head.draw(&Text::new(reference_label, (x + 30, 42), (FONT, 16).into_font()))?;
        for (area, panel) in body.split_evenly((1, panels.len().max(1))).iter().zip(panels) {
            let top = panel.values.iter().copied().chain(panel.reference).filter(|v| v.is_finite()).fold(0f64, f64::max).max(1e-6) * 1.2;
            let n = panel.values.len().max(1) as f64;
            let mut chart = ChartBuilder::on(area)
                .caption(panel.name, (FONT, 20))
                .margin(10)
                .x_label_area_size(10)
                .y_label_area_size(46)
                .build_cartesian_2d(0.0..n, 0.0..top)?;
            chart.configure_mesh().disable_x_mesh().disable_x_axis().label_style((FONT, 14)).draw()?;
            for (i, (&value, (_, colour))) in panel.values.iter().zip(models).enumerate() {
                if !value.is_finite() {
                    continue;
                }
                let x0 = i as f64 + 0.15;
                chart.draw_series(std::iter::once(Rectangle::new([(x0, 0.0), (x0 + 0.7, value)], colour.filled())))?;
                chart.draw_series(std::iter::once(Text::new(format!("{value:.2}"), (x0 + 0.1, value + top * 0.06), (FONT, 14).into_font())))?;
            }
            if let Some(reference) = panel.reference.filter(|r| r.is_finite()) {
                chart.draw_series(LineSeries::new([(0.0, reference), (n, reference)], GREEN.stroke_width(3)))?;
            }
        }
        Ok(())
    })
}

/// The name of a MIDI pitch, C4 = 60.
fn pitch_name(pitch: u8) -> String {
    format!("{}{}", ROOT_NAMES[pitch as usize % 12], pitch as i32 / 12 - 1)
}

/// A piano roll of a song's first `bars` bars: time across in bars (numbered from 1 at each
/// bar line), pitch up with the C of each octave named, each note shaded by its velocity (pale:
/// soft, full `colour`: loud).
pub fn piano_roll(title: &str, grid: &Grid, bars: u32, colour: Rgb, path: &Path) -> Result<(), PlotError> {
    let bars = bars.max(1) as i32;
    let bar = POSITIONS_PER_BAR as i32;
    let positions = bars * bar;
    let (low, high) = (PITCH_MIN as i32, PITCH_MAX as i32 + 1);
    let bar_lines: Vec<i32> = (0..=bars).map(|b| b * bar).collect();
    let octaves: Vec<i32> = (low..high).filter(|p| p % 12 == 0).collect();
    figure(path, (80 + 56 * bars as u32).max(480), 620, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 24))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(52)
            .build_cartesian_2d((0..positions).with_key_points(bar_lines.clone()), (low..high).with_key_points(octaves.clone()))?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| format!("{}", x / bar + 1))
            .x_desc("bar")
            .y_label_formatter(&|y| pitch_name(*y as u8))
            .y_desc("pitch")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .bold_line_style(RGBColor(215, 215, 215))
            .light_line_style(WHITE)
            .draw()?;
        let notes = grid.slots.iter().filter(|s| (s.position as i32) < positions).flat_map(|slot| slot.notes.iter().map(move |n| (slot.position, n)));
        chart.draw_series(notes.map(|(position, note)| {
            let x0 = position as i32;
            let x1 = (x0 + note.duration.max(1) as i32).min(positions);
            let y = note.pitch as i32;
            let loudness = 0.2 + 0.8 * note.velocity as f64 / 127.0;
            Rectangle::new([(x0, y), (x1, y + 1)], colour.mix(loudness).filled())
        }))?;
        Ok(())
    })
}
