//! The plugin's window (egui through nice-plug-egui): status, a piano roll of the song (a
//! keyboard up the left, the song's chords along the top, bar numbers, velocity shading, the
//! playhead; click a bar to pick it), Regenerate, Regenerate from the picked bar, Undo, Export
//! MIDI, takes (K songs at once, as tabs: the picked one plays and is kept), the parameters in
//! three groups (Song, Steering, Output), the chord progression and the song's form.
//! Runs on the GUI thread; reads the worker's shared values and never touches the audio
//! thread's data.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use nice_plug::context::gui::GuiContext;
use nice_plug::editor::dpi::LogicalSize;
use nice_plug_egui::{create_egui_editor, widgets, EguiEditor, EguiEditorState, EguiNiceSettings, NiceEguiApp, RepaintNotifier};

use crate::plugin::CpPianoParams;
use crate::playback::engine::PlayState;
use crate::playback::shared::{Shared, Status};
use crate::playback::song::{default_export_dir, export_midi};

/// The window's state: parameters, the worker's shared values, the last export's outcome.
pub struct CpPianoEditor {
    params: Arc<CpPianoParams>,
    shared: Arc<Shared>,
    gui: Option<GuiContext>,
    export_message: String,
    /// The bar clicked in the piano roll (from 1), for "Regenerate from bar".
    selected_bar: Option<u32>,
    /// The chord progression being typed (written to the parameters as it changes).
    chords: String,
    /// The form being typed (written to the parameters as it changes).
    form: String,
    /// How many takes "Takes" asks for.
    take_count: u32,
}

/// Creates the editor.
pub fn create(params: Arc<CpPianoParams>, shared: Arc<Shared>) -> Option<EguiEditor<CpPianoEditor>> {
    create_egui_editor(
        EguiEditorState::from_size(LogicalSize::new(860.0, 600.0), 1.0),
        RepaintNotifier::default(),
        EguiNiceSettings { title: "CP Piano".into(), ..Default::default() },
        CpPianoEditor {
            chords: params.chords.read().map(|c| c.clone()).unwrap_or_default(),
            form: params.form.read().map(|f| f.clone()).unwrap_or_default(),
            params,
            shared,
            gui: None,
            export_message: String::new(),
            selected_bar: None,
            take_count: 4,
        },
    )
}

impl CpPianoEditor {
    /// The song's piano roll: a keyboard up the left (C of each octave named), the song's
    /// chords along the top, its notes over its bars (numbered every 4; louder notes brighter),
    /// the playhead, and the clicked bar highlighted; a click picks a bar.
    fn piano_roll(&mut self, ui: &mut egui::Ui) {
        const KEYBOARD: f32 = 30.0;
        const CHORD_ROW: f32 = 16.0;
        const BAR_ROW: f32 = 14.0;
        let (whole, response) = ui.allocate_exact_size(egui::vec2(ui.available_width(), 240.0), egui::Sense::click());
        let painter = ui.painter_at(whole);
        painter.rect_filled(whole, 4.0, egui::Color32::from_gray(24));
        let Ok(song) = self.shared.song.lock() else { return };
        let Some(song) = song.as_ref() else {
            painter.text(whole.center(), egui::Align2::CENTER_CENTER, "no song yet", egui::FontId::proportional(14.0), egui::Color32::GRAY);
            return;
        };
        // The notes' area, right of the keyboard and under the chord row.
        let rect = egui::Rect::from_min_max(whole.min + egui::vec2(KEYBOARD, CHORD_ROW), whole.max);
        let end = song.end.max(4.0);
        let bars = (end / 4.0).ceil() as u32;
        let x = |beat: f64| rect.left() + (beat / end) as f32 * rect.width();
        if let Some(pos) = response.interact_pointer_pos().filter(|p| response.clicked() && p.x >= rect.left()) {
            let beat = ((pos.x - rect.left()) / rect.width()) as f64 * end;
            self.selected_bar = Some(((beat / 4.0).floor() as u32 + 1).min(bars));
        }
        if let Some(bar) = self.selected_bar.filter(|&b| b <= bars) {
            let area = egui::Rect::from_x_y_ranges(x((bar - 1) as f64 * 4.0)..=x(bar as f64 * 4.0), rect.y_range());
            painter.rect_filled(area, 0.0, egui::Color32::from_rgb(60, 60, 30));
        }
        let (low, high) = song.notes.iter().fold((127u8, 0u8), |(l, h), n| (l.min(n.pitch), h.max(n.pitch)));
        let (low, high) = (low.saturating_sub(2), high.saturating_add(2).max(low.saturating_sub(2) + 12));
        let key_height = (rect.height() - BAR_ROW) / (high - low + 1) as f32;
        let y = |pitch: u8| rect.bottom() - BAR_ROW - (pitch - low + 1) as f32 * key_height;
        for pitch in low..=high {
            let black = matches!(pitch % 12, 1 | 3 | 6 | 8 | 10);
            let key = egui::Rect::from_min_size(egui::pos2(whole.left(), y(pitch)), egui::vec2(if black { KEYBOARD * 0.6 } else { KEYBOARD - 2.0 }, key_height.max(1.0)));
            painter.rect_filled(key, 0.0, if black { egui::Color32::from_gray(20) } else { egui::Color32::from_gray(200) });
            if pitch % 12 == 0 {
                let name = format!("C{}", pitch as i32 / 12 - 1);
                painter.text(egui::pos2(whole.left() + KEYBOARD - 3.0, y(pitch) + key_height), egui::Align2::RIGHT_BOTTOM, name, egui::FontId::proportional(9.0), egui::Color32::from_gray(40));
            }
        }
        let mut last_chord_end = f32::MIN;
        for (beat, chord) in song.chords() {
            let at = x(beat);
            if at < last_chord_end {
                continue;
            }
            let label = painter.text(egui::pos2(at + 1.0, whole.top() + 2.0), egui::Align2::LEFT_TOP, chord.label(), egui::FontId::proportional(10.0), egui::Color32::from_rgb(200, 190, 120));
            last_chord_end = label.right() + 4.0;
        }
        for bar in (0..bars).step_by(4) {
            painter.vline(x(bar as f64 * 4.0), rect.y_range(), egui::Stroke::new(1.0, egui::Color32::from_gray(45)));
            painter.text(egui::pos2(x(bar as f64 * 4.0) + 2.0, rect.bottom() - 2.0), egui::Align2::LEFT_BOTTOM, (bar + 1).to_string(), egui::FontId::proportional(10.0), egui::Color32::GRAY);
        }
        for n in &song.notes {
            let top = y(n.pitch);
            let note = egui::Rect::from_min_max(egui::pos2(x(n.start), top), egui::pos2(x(n.start + n.duration.max(0.125)).max(x(n.start) + 1.0), top + key_height.clamp(1.0, 3.0)));
            // Louder notes brighter.
            let v = 0.35 + 0.65 * n.velocity as f32 / 127.0;
            painter.rect_filled(note, 0.0, egui::Color32::from_rgb((90.0 * v) as u8, (160.0 * v) as u8, (230.0 * v) as u8));
        }
        let playhead = self.shared.playhead();
        if playhead > 0.0 {
            painter.vline(x(playhead.min(end)), rect.y_range(), egui::Stroke::new(2.0, egui::Color32::from_rgb(240, 120, 60)));
        }
    }

    fn export(&mut self) {
        let song = self.shared.song.lock().ok().and_then(|s| s.clone());
        self.export_message = match song {
            None => "Nothing to export yet".into(),
            Some(song) => match export_midi(&song, self.shared.tempo(), &default_export_dir()) {
                Ok(path) => format!("Exported to {}", path.display()),
                Err(e) => format!("Export failed: {e:#}"),
            },
        };
    }
}

impl NiceEguiApp for CpPianoEditor {
    fn build(&mut self, _egui: egui::Context, gui: GuiContext, _frame: &mut nice_plug_egui::Frame) -> Result<(), nice_plug_egui::baseview::HandlerError> {
        self.gui = Some(gui);
        Ok(())
    }

    fn editor_closed(&mut self) {
        self.gui = None;
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut nice_plug_egui::Frame) {
        let Some(gui) = self.gui.clone() else { return };
        let setter = gui.param_setter();
        // The worker and the audio thread change what is shown without any input event: redraw
        // often while a song is written or plays, now and then otherwise.
        let busy = matches!(self.shared.status(), Status::Loading | Status::Generating) || self.shared.play_state.load(Ordering::Relaxed) == PlayState::Playing as u8;
        ui.ctx().request_repaint_after(std::time::Duration::from_millis(if busy { 40 } else { 250 }));
        egui::Frame::new().inner_margin(egui::Margin::same(12)).show(ui, |ui| {
            ui.heading("CP Piano");
            ui.label(self.shared.status_text());
            self.piano_roll(ui);
            ui.horizontal(|ui| {
                if ui.button("Regenerate").clicked() {
                    self.shared.regenerate_requests.fetch_add(1, Ordering::Relaxed);
                }
                let from = self.selected_bar.unwrap_or(1);
                if ui.add_enabled(self.selected_bar.is_some(), egui::Button::new(format!("Regenerate from bar {from}"))).clicked() {
                    self.shared.request_regenerate_from(from);
                }
                if ui.button("Undo").clicked() {
                    self.shared.undo_requests.fetch_add(1, Ordering::Relaxed);
                }
                if ui.button("Export MIDI").clicked() {
                    self.export();
                }
                ui.label(&self.export_message);
            });
            // Takes: K songs of the current settings together; pick one to hear and keep it.
            ui.horizontal(|ui| {
                if ui.button(format!("{} takes", self.take_count)).clicked() {
                    self.shared.request_takes(self.take_count);
                }
                ui.add(egui::DragValue::new(&mut self.take_count).range(2..=crate::generate::takes::MAX_TAKES as u32));
                let count = self.shared.takes.lock().map(|t| t.len()).unwrap_or(0);
                let picked = self.shared.picked_take.load(Ordering::Relaxed) as usize;
                for i in 0..count {
                    if ui.selectable_label(i == picked, format!("Take {}", i + 1)).clicked() {
                        self.shared.pick_take(i as u32);
                    }
                }
                if count == 0 {
                    ui.label("generates several songs at once; pick the one to keep");
                }
            });
            // Parameters in three groups: the song, how it is steered, where it goes.
            ui.columns(3, |columns| {
                let p = &self.params;
                columns[0].strong("Song");
                egui::Grid::new("song").num_columns(2).spacing([8.0, 4.0]).show(&mut columns[0], |ui| {
                    ui.label("Seed");
                    ui.add(widgets::ParamSlider::for_param(&p.seed, &setter));
                    ui.end_row();
                    ui.label("Max bars");
                    ui.add(widgets::ParamSlider::for_param(&p.max_bars, &setter));
                    ui.end_row();
                    ui.label("Start bar");
                    ui.add(widgets::ParamSlider::for_param(&p.start_bar, &setter));
                    ui.end_row();
                    ui.label("Variety");
                    ui.add(widgets::ParamSlider::for_param(&p.variety, &setter));
                    ui.end_row();
                    ui.label("Top-p");
                    ui.add(widgets::ParamSlider::for_param(&p.top_p, &setter));
                    ui.end_row();
                });
                columns[1].strong("Steering");
                egui::Grid::new("steering").num_columns(2).spacing([8.0, 4.0]).show(&mut columns[1], |ui| {
                    ui.label("Key lock");
                    ui.add(widgets::ParamSlider::for_param(&p.key_lock, &setter));
                    ui.end_row();
                    ui.label("Density");
                    ui.add(widgets::ParamSlider::for_param(&p.density, &setter));
                    ui.end_row();
                    ui.label("Section bars");
                    ui.add(widgets::ParamSlider::for_param(&p.section_bars, &setter));
                    ui.end_row();
                    ui.label("Listen");
                    ui.add(widgets::ParamSlider::for_param(&p.listen, &setter));
                    ui.end_row();
                    ui.label("Listen bars");
                    ui.add(widgets::ParamSlider::for_param(&p.listen_bars, &setter));
                    ui.end_row();
                });
                columns[1].label(self.shared.listen_text(p.start_bar.value(), p.listen_bars.value()));
                columns[2].strong("Output");
                egui::Grid::new("output").num_columns(2).spacing([8.0, 4.0]).show(&mut columns[2], |ui| {
                    ui.label("Velocity");
                    ui.add(widgets::ParamSlider::for_param(&p.velocity_scale, &setter));
                    ui.end_row();
                    ui.label("MIDI channel");
                    ui.add(widgets::ParamSlider::for_param(&p.channel, &setter));
                    ui.end_row();
                    ui.label("Left hand");
                    ui.add(widgets::ParamSlider::for_param(&p.left_channel, &setter));
                    ui.end_row();
                    ui.label("MIDI thru");
                    ui.add(widgets::ParamSlider::for_param(&p.midi_thru, &setter));
                    ui.end_row();
                    ui.label("Follow transport");
                    ui.add(widgets::ParamSlider::for_param(&p.follow_transport, &setter));
                    ui.end_row();
                    ui.label("Preview voice");
                    ui.add(widgets::ParamSlider::for_param(&p.preview, &setter));
                    ui.end_row();
                });
            });
            ui.horizontal(|ui| {
                ui.label("Chords");
                text_field(ui, &mut self.chords, &self.params.chords, "C G Am F  or  C:2 G:2 | Am F", 260.0);
                match self.params.progression() {
                    Ok(Some(p)) => ui.label(format!("{} bars, looped (applies to the next song)", p.bars)),
                    Ok(None) => ui.label("the model's own chords"),
                    Err(e) => ui.colored_label(egui::Color32::from_rgb(230, 120, 90), e.to_string()),
                };
            });
            ui.horizontal(|ui| {
                ui.label("Form");
                text_field(ui, &mut self.form, &self.params.form, "ABABCB, AABA or none", 120.0);
                match self.params.form() {
                    Ok(form) if form.letters().is_empty() => ui.label("every bar new"),
                    Ok(form) if self.params.generation_settings().form_in_force().is_none() => ui.label(format!("{form}: not applied while following chords")),
                    Ok(form) => ui.label(format!("{form}: a repeated letter repeats its section (applies to the next song)")),
                    Err(e) => ui.colored_label(egui::Color32::from_rgb(230, 120, 90), e.to_string()),
                };
            });
        });
    }
}

/// A one-line text field whose text is written to the persisted `param` as it changes.
fn text_field(ui: &mut egui::Ui, text: &mut String, param: &RwLock<String>, hint: &str, width: f32) {
    if ui.add(egui::TextEdit::singleline(text).hint_text(hint).desired_width(width)).changed() {
        if let Ok(mut saved) = param.write() {
            *saved = text.clone();
        }
    }
}
