//! Small PNG charts drawn without any font or GUI library: a canvas, lines, and a built-in 3x5
//! pixel font for numbers and short labels. Used for the trainer's loss curve and the
//! evaluation report's figures.

use std::path::Path;

use anyhow::Result;

/// 3x5 glyphs, one row per 3 bits (top row first).
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '%' => [5, 1, 2, 4, 5],
        ':' => [0, 2, 0, 2, 0],
        '/' => [1, 1, 2, 4, 4],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        c => match c.to_ascii_lowercase() {
            'a' => [2, 5, 7, 5, 5],
            'b' => [6, 5, 6, 5, 6],
            'c' => [3, 4, 4, 4, 3],
            'd' => [6, 5, 5, 5, 6],
            'e' => [7, 4, 6, 4, 7],
            'f' => [7, 4, 6, 4, 4],
            'g' => [3, 4, 5, 5, 3],
            'h' => [5, 5, 7, 5, 5],
            'i' => [7, 2, 2, 2, 7],
            'j' => [1, 1, 1, 5, 2],
            'k' => [5, 5, 6, 5, 5],
            'l' => [4, 4, 4, 4, 7],
            'm' => [5, 7, 7, 5, 5],
            'n' => [6, 5, 5, 5, 5],
            'o' => [2, 5, 5, 5, 2],
            'p' => [6, 5, 6, 4, 4],
            'q' => [2, 5, 5, 6, 3],
            'r' => [6, 5, 6, 5, 5],
            's' => [3, 4, 2, 1, 6],
            't' => [7, 2, 2, 2, 2],
            'u' => [5, 5, 5, 5, 7],
            'v' => [5, 5, 5, 5, 2],
            'w' => [5, 5, 7, 7, 5],
            'x' => [5, 5, 2, 5, 5],
            'y' => [5, 5, 2, 2, 2],
            'z' => [7, 1, 2, 4, 7],
            _ => [0; 5],
        },
    }
}

/// An RGB canvas.
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pixels: Vec<u8>,
}

pub type Rgb = [u8; 3];
pub const BLACK: Rgb = [0, 0, 0];
pub const GREY: Rgb = [200, 200, 200];
pub const BLUE: Rgb = [40, 90, 200];
pub const RED: Rgb = [210, 50, 40];
pub const GREEN: Rgb = [40, 150, 60];

impl Canvas {
    pub fn new(width: usize, height: usize) -> Canvas {
        Canvas { width, height, pixels: vec![255; width * height * 3] }
    }

    pub fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    pub fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        for y in y0.min(y1)..=y0.max(y1) {
            for x in x0.min(x1)..=x0.max(x1) {
                self.set(x, y, c);
            }
        }
    }

    /// A line `thick` pixels wide.
    pub fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: Rgb, thick: i64) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as i64).max(1);
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let (x, y) = ((x0 + (x1 - x0) * t).round() as i64, (y0 + (y1 - y0) * t).round() as i64);
            self.rect(x, y, x + thick - 1, y + thick - 1, c);
        }
    }

    /// Text at (x, y) (top left), each font pixel `scale` pixels wide.
    pub fn text(&mut self, x: i64, y: i64, text: &str, c: Rgb, scale: i64) {
        for (i, ch) in text.chars().enumerate() {
            for (row, bits) in glyph(ch).iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        let px = x + (i as i64 * 4 + col) * scale;
                        let py = y + row as i64 * scale;
                        self.rect(px, py, px + scale - 1, py + scale - 1, c);
                    }
                }
            }
        }
    }

    pub fn save_png(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut bytes, self.width as u32, self.height as u32);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            encoder.write_header()?.write_image_data(&self.pixels)?;
        }
        Ok(crate::data::dataset::write_atomically(path, &bytes)?)
    }
}

/// A line chart: named series of (x, y) points, with axes and tick labels.
pub fn line_chart(title: &str, series: &[(&str, Rgb, Vec<(f64, f64)>)], path: &Path) -> Result<()> {
    let (w, h) = (900usize, 540usize);
    let (left, right, top, bottom) = (80.0, 20.0, 50.0, 50.0);
    let mut canvas = Canvas::new(w, h);
    canvas.text(left as i64, 15, title, BLACK, 3);
    let points: Vec<(f64, f64)> = series.iter().flat_map(|s| s.2.iter().copied()).filter(|p| p.1.is_finite()).collect();
    if points.is_empty() {
        return canvas.save_png(path);
    }
    let (mut x_min, mut x_max) = points.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (mut y_min, mut y_max) = points.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    if x_max <= x_min {
        x_max = x_min + 1.0;
        x_min -= 0.0;
    }
    if y_max <= y_min {
        y_max = y_min + 1.0;
    }
    y_min = y_min.min(0.0).max(y_min - (y_max - y_min) * 0.05);
    let px = |x: f64| left + (x - x_min) / (x_max - x_min) * (w as f64 - left - right);
    let py = |y: f64| h as f64 - bottom - (y - y_min) / (y_max - y_min) * (h as f64 - top - bottom);
    for i in 0..=5 {
        let y = y_min + (y_max - y_min) * i as f64 / 5.0;
        canvas.line((left, py(y)), (w as f64 - right, py(y)), GREY, 1);
        canvas.text(5, py(y) as i64 - 5, &format!("{y:.3}"), BLACK, 2);
        let x = x_min + (x_max - x_min) * i as f64 / 5.0;
        canvas.text(px(x) as i64 - 10, h as i64 - bottom as i64 + 10, &format!("{x:.0}"), BLACK, 2);
    }
    canvas.line((left, top), (left, h as f64 - bottom), BLACK, 2);
    canvas.line((left, h as f64 - bottom), (w as f64 - right, h as f64 - bottom), BLACK, 2);
    for (i, (name, color, pts)) in series.iter().enumerate() {
        for pair in pts.windows(2) {
            canvas.line((px(pair[0].0), py(pair[0].1)), (px(pair[1].0), py(pair[1].1)), *color, 2);
        }
        if pts.len() == 1 {
            canvas.rect(px(pts[0].0) as i64 - 2, py(pts[0].1) as i64 - 2, px(pts[0].0) as i64 + 2, py(pts[0].1) as i64 + 2, *color);
        }
        canvas.text(w as i64 - 200, top as i64 + 10 + i as i64 * 20, name, *color, 3);
    }
    canvas.save_png(path)
}

/// The trainer's loss curve: training loss and validation loss against steps.
pub fn loss_curve(train: &[(f64, f64)], valid: &[(f64, f64)], path: &Path) -> Result<()> {
    line_chart("loss per step", &[("train", BLUE, train.to_vec()), ("valid", RED, valid.to_vec())], path)
}

/// Side-by-side bar panels, one per metric, each with its own scale from 0: `panels` holds
/// (metric name, bars as (label, colour, value)); NaN values are left out. A legend of the
/// bar labels sits under the title.
pub fn bar_panels(title: &str, panels: &[(&str, Vec<(&str, Rgb, f64)>)], path: &Path) -> Result<()> {
    let panel_w = 220usize;
    let (w, h) = ((panel_w * panels.len()).max(300) + 40, 480usize);
    let (top, bottom) = (110.0, 60.0);
    let mut canvas = Canvas::new(w, h);
    canvas.text(20, 15, title, BLACK, 3);
    if let Some((_, bars)) = panels.first() {
        let mut x = 20;
        for (label, color, _) in bars {
            canvas.rect(x, 52, x + 12, 64, *color);
            canvas.text(x + 18, 52, label, BLACK, 2);
            x += 30 + label.len() as i64 * 8;
        }
    }
    for (p, (name, bars)) in panels.iter().enumerate() {
        let x0 = 40.0 + (p * panel_w) as f64;
        let max = bars.iter().map(|b| b.2).filter(|v| v.is_finite()).fold(0f64, f64::max).max(1e-9) * 1.15;
        let py = |v: f64| h as f64 - bottom - v / max * (h as f64 - top - bottom);
        canvas.line((x0, top), (x0, h as f64 - bottom), BLACK, 1);
        canvas.line((x0, h as f64 - bottom), (x0 + panel_w as f64 - 30.0, h as f64 - bottom), BLACK, 1);
        canvas.text(x0 as i64 + 10, h as i64 - bottom as i64 + 15, name, BLACK, 3);
        let bar_w = (panel_w as f64 - 50.0) / bars.len().max(1) as f64;
        for (i, (_, color, value)) in bars.iter().enumerate() {
            if !value.is_finite() {
                continue;
            }
            let bx = x0 + 10.0 + i as f64 * bar_w;
            canvas.rect(bx as i64, py(*value) as i64, (bx + bar_w - 8.0) as i64, (h as f64 - bottom) as i64 - 1, *color);
            canvas.text(bx as i64, py(*value) as i64 - 14, &format!("{value:.2}"), BLACK, 2);
        }
    }
    canvas.save_png(path)
}

/// A piano roll of a song's first `bars` bars: time across (bar lines in grey), pitch up.
pub fn piano_roll(title: &str, grid: &crate::music::grid::Grid, bars: u32, color: Rgb, path: &Path) -> Result<()> {
    use crate::music::grid::{PITCH_MAX, PITCH_MIN};
    use crate::music::song::POSITIONS_PER_BAR;
    let (left, top, cell_w, cell_h) = (20i64, 50i64, 3i64, 4i64);
    let positions = (bars.max(1) * POSITIONS_PER_BAR) as i64;
    let pitches = (PITCH_MAX - PITCH_MIN + 1) as i64;
    let mut canvas = Canvas::new((left * 2 + positions * cell_w) as usize, (top + 20 + pitches * cell_h) as usize);
    canvas.text(left, 15, title, BLACK, 3);
    for bar in 0..=bars as i64 {
        let x = left + bar * POSITIONS_PER_BAR as i64 * cell_w;
        canvas.line((x as f64, top as f64), (x as f64, (top + pitches * cell_h) as f64), GREY, 1);
    }
    for slot in grid.slots.iter().filter(|s| (s.position as i64) < positions) {
        for n in &slot.notes {
            let x0 = left + slot.position as i64 * cell_w;
            let length = (n.duration as i64).max(1);
            let x1 = (x0 + length * cell_w - 1).min(left + positions * cell_w);
            let y = top + (PITCH_MAX - n.pitch) as i64 * cell_h;
            canvas.rect(x0, y, x1, y + cell_h - 2, color);
        }
    }
    canvas.save_png(path)
}
