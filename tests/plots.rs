//! The figures a user reads: the trainer's loss curve, the evaluation's metric bars and piano
//! rolls. Each is drawn from known data and read back as pixels (copies are left in
//! target/plots/ to look at).

use std::path::{Path, PathBuf};

use cp_piano::eval::plot::{loss_curve, metric_bars, piano_roll, MetricPanel, BLUE, RED};
use cp_piano::music::grid::{Grid, GridNote, Slot};

/// A decoded RGB picture.
struct Picture {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Picture {
    fn read(path: &Path) -> Picture {
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        Picture { width: info.width as usize, height: info.height as usize, pixels }
    }

    fn at(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// Pixels close to `colour` (each channel within 40).
    fn count(&self, colour: [u8; 3]) -> usize {
        self.pixels.chunks(3).filter(|p| p.iter().zip(colour).all(|(a, b)| a.abs_diff(b) <= 40)).count()
    }

    /// Dark pixels (text, axes) inside a rectangle.
    fn dark_in(&self, x0: usize, y0: usize, x1: usize, y1: usize) -> usize {
        (y0..y1).flat_map(|y| (x0..x1).map(move |x| (x, y))).filter(|&(x, y)| self.at(x, y).iter().all(|&c| c < 110)).count()
    }
}

fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/plots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn loss_curve_has_labelled_axes_per_family_lines_and_validation_points() {
    let path = out_dir().join("loss.png");
    let train: Vec<(f64, f64)> = (0..100).map(|s| (s as f64 * 10.0, 3.0 / (1.0 + s as f64 * 0.1))).collect();
    let valid: Vec<(f64, f64)> = (1..=4).map(|k| (k as f64 * 250.0, 1.2 - 0.1 * k as f64)).collect();
    let families: Vec<(&str, Vec<(f64, f64)>)> = ["tempo", "chord", "pitch"]
        .iter()
        .enumerate()
        .map(|(i, name)| (*name, valid.iter().map(|&(s, v)| (s, v * (0.5 + i as f64 * 0.4))).collect()))
        .collect();
    loss_curve(&train, &valid, &families, &path).unwrap();
    let picture = Picture::read(&path);
    assert_eq!((picture.width, picture.height), (1000, 600));
    // The training line (blue) and the validation points (red) are drawn.
    assert!(picture.count([BLUE.0, BLUE.1, BLUE.2]) > 500, "no training line");
    assert!(picture.count([RED.0, RED.1, RED.2]) > 4 * 30, "no validation points");
    // Each family has its own colour (the first family's orange).
    assert!(picture.count([230, 159, 0]) > 100, "no line for the first family");
    // Tick labels and axis names: text left of the plot and under it.
    assert!(picture.dark_in(0, 60, 70, 540) > 200, "no y axis labels");
    assert!(picture.dark_in(80, 545, 1000, 600) > 200, "no x axis labels");
}

#[test]
fn metric_bars_scale_with_the_values_and_draw_the_reference() {
    let path = out_dir().join("metrics.png");
    let panels = [
        MetricPanel { name: "H1", values: vec![2.0, 1.0], reference: Some(2.2) },
        MetricPanel { name: "GS", values: vec![0.6, f64::NAN], reference: None },
    ];
    metric_bars("metrics", &[("CP", BLUE), ("REMI-XL", RED)], &panels, "POP909", &path).unwrap();
    let picture = Picture::read(&path);
    assert_eq!(picture.width, 520);
    // In the first panel the CP bar (2.0) is twice as tall as the REMI-XL bar (1.0).
    let column_height = |colour: [u8; 3], x0: usize, x1: usize| -> usize {
        (x0..x1).map(|x| (0..picture.height).filter(|&y| picture.at(x, y).iter().zip(colour).all(|(a, b)| a.abs_diff(b) <= 40)).count()).max().unwrap()
    };
    let cp = column_height([BLUE.0, BLUE.1, BLUE.2], 0, 260);
    let remi = column_height([RED.0, RED.1, RED.2], 0, 260);
    assert!(remi > 20, "no REMI-XL bar");
    let ratio = cp as f64 / remi as f64;
    assert!((1.8..2.2).contains(&ratio), "bar heights {cp} and {remi} are not 2 : 1");
    // The reference line is green and spans the panel; the second panel has no REMI-XL bar.
    let green = (0..260).filter(|&x| (0..picture.height).any(|y| picture.at(x, y) == [30, 150, 70])).count();
    assert!(green > 150, "the reference line spans {green} columns");
    assert_eq!(column_height([RED.0, RED.1, RED.2], 300, 520), 0, "a NaN value was drawn");
}

#[test]
fn piano_roll_shades_notes_by_velocity_and_numbers_bars() {
    let path = out_dir().join("piano_roll.png");
    let note = |pitch, velocity| GridNote { pitch, duration: 8, velocity };
    let slot = |position, notes| Slot { position, tempo: None, chord: None, notes };
    let grid = Grid { bars: 8, slots: vec![slot(16, vec![note(60, 120)]), slot(96, vec![note(72, 30)])] };
    piano_roll("two notes", &grid, 8, BLUE, &path).unwrap();
    let picture = Picture::read(&path);
    // Find the two notes: the darkest blue-ish columns of each bar's half.
    let darkness = |x0: usize, x1: usize| -> u32 {
        let mut best = 0;
        for x in x0..x1 {
            for y in 0..picture.height {
                let [r, g, b] = picture.at(x, y);
                if b > r && b > g {
                    best = best.max(255 * 3 - (r as u32 + g as u32 + b as u32));
                }
            }
        }
        best
    };
    let (loud, soft) = (darkness(0, picture.width / 2), darkness(picture.width / 2, picture.width));
    assert!(soft > 0, "the soft note is not drawn");
    assert!(loud > soft + 60, "loud {loud} is not darker than soft {soft}");
    // Bar numbers and pitch names: text under the roll and left of it.
    assert!(picture.dark_in(60, picture.height - 45, picture.width, picture.height) > 50, "no bar numbers");
    assert!(picture.dark_in(0, 40, 60, picture.height - 50) > 100, "no pitch axis");
}
