//! The plugin's window (egui through nice-plug-egui): status, a piano roll of the song with the
//! playhead and bar numbers (click a bar to pick it), Regenerate, Regenerate from the picked
//! bar, Undo, Export MIDI and the main parameters. Runs on the GUI thread; reads the
//! worker's shared values and never touches the audio thread's data.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use nice_plug::context::gui::GuiContext;
use nice_plug::editor::dpi::LogicalSize;
use nice_plug_egui::{create_egui_editor, widgets, EguiEditor, EguiEditorState, EguiNiceSettings, NiceEguiApp, RepaintNotifier};

use crate::plugin::CpPianoParams;
use crate::playback::worker::{default_export_dir, export_midi, Shared};

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
}

/// Creates the editor.
pub fn create(params: Arc<CpPianoParams>, shared: Arc<Shared>) -> Option<EguiEditor<CpPianoEditor>> {
    create_egui_editor(
        EguiEditorState::from_size(LogicalSize::new(720.0, 520.0), 1.0),
        RepaintNotifier::default(),
        EguiNiceSettings { title: "CP Piano".into(), ..Default::default() },
        CpPianoEditor { chords: params.chords.read().map(|c| c.clone()).unwrap_or_default(), params, shared, gui: None, export_message: String::new(), selected_bar: None },
    )
}

impl CpPianoEditor {
    /// The song's notes over its bars (numbered every 4), the playhead, and the clicked bar
    /// highlighted; a click picks a bar.
    fn piano_roll(&mut self, ui: &mut egui::Ui) {
        let (rect, response) = ui.allocate_exact_size(egui::vec2(ui.available_width(), 220.0), egui::Sense::click());
        let painter = ui.painter_at(rect);
        painter.rect_filled(rect, 4.0, egui::Color32::from_gray(24));
        let Ok(song) = self.shared.song.lock() else { return };
        let Some(song) = song.as_ref() else {
            painter.text(rect.center(), egui::Align2::CENTER_CENTER, "no song yet", egui::FontId::proportional(14.0), egui::Color32::GRAY);
            return;
        };
        let end = song.end.max(4.0);
        let bars = (end / 4.0).ceil() as u32;
        let x = |beat: f64| rect.left() + (beat / end) as f32 * rect.width();
        if let Some(pos) = response.interact_pointer_pos().filter(|_| response.clicked()) {
            let beat = ((pos.x - rect.left()) / rect.width()) as f64 * end;
            self.selected_bar = Some(((beat / 4.0).floor() as u32 + 1).min(bars));
        }
        if let Some(bar) = self.selected_bar.filter(|&b| b <= bars) {
            let area = egui::Rect::from_x_y_ranges(x((bar - 1) as f64 * 4.0)..=x(bar as f64 * 4.0), rect.y_range());
            painter.rect_filled(area, 0.0, egui::Color32::from_rgb(60, 60, 30));
        }
        let (low, high) = song.notes.iter().fold((127u8, 0u8), |(l, h), n| (l.min(n.pitch), h.max(n.pitch)));
        let (low, high) = (low.saturating_sub(2) as f32, high.saturating_add(2) as f32);
        let y = |pitch: f32| rect.bottom() - 14.0 - (pitch - low) / (high - low).max(1.0) * (rect.height() - 14.0);
        for bar in (0..bars).step_by(4) {
            painter.vline(x(bar as f64 * 4.0), rect.y_range(), egui::Stroke::new(1.0, egui::Color32::from_gray(45)));
            painter.text(egui::pos2(x(bar as f64 * 4.0) + 2.0, rect.bottom() - 2.0), egui::Align2::LEFT_BOTTOM, (bar + 1).to_string(), egui::FontId::proportional(10.0), egui::Color32::GRAY);
        }
        for n in &song.notes {
            let top = y(n.pitch as f32 + 1.0);
            let note = egui::Rect::from_min_max(egui::pos2(x(n.start), top), egui::pos2(x(n.start + n.duration.max(0.125)).max(x(n.start) + 1.0), top + 2.0));
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
            ui.horizontal(|ui| {
                ui.label("Chords");
                let edit = ui.add(egui::TextEdit::singleline(&mut self.chords).hint_text("C G Am F  or  C:2 G:2 | Am F").desired_width(260.0));
                if edit.changed() {
                    if let Ok(mut chords) = self.params.chords.write() {
                        *chords = self.chords.clone();
                    }
                }
                match self.params.progression() {
                    Ok(Some(p)) => ui.label(format!("{} bars, looped (applies to the next song)", p.bars)),
                    Ok(None) => ui.label("the model's own chords"),
                    Err(e) => ui.colored_label(egui::Color32::from_rgb(230, 120, 90), e.to_string()),
                };
            });
            ui.horizontal(|ui| {
                let p = &self.params;
                ui.label("Listen");
                ui.add(widgets::ParamSlider::for_param(&p.listen, &setter));
                ui.label("bars");
                ui.add(widgets::ParamSlider::for_param(&p.listen_bars, &setter));
                ui.label("MIDI thru");
                ui.add(widgets::ParamSlider::for_param(&p.midi_thru, &setter));
                ui.label(self.shared.listen_text(p.start_bar.value(), p.listen_bars.value()));
            });
            egui::Grid::new("params").num_columns(4).spacing([12.0, 6.0]).show(ui, |ui| {
                let p = &self.params;
                ui.label("Seed");
                ui.add(widgets::ParamSlider::for_param(&p.seed, &setter));
                ui.label("Key lock");
                ui.add(widgets::ParamSlider::for_param(&p.key_lock, &setter));
                ui.end_row();
                ui.label("Variety");
                ui.add(widgets::ParamSlider::for_param(&p.variety, &setter));
                ui.label("Max bars");
                ui.add(widgets::ParamSlider::for_param(&p.max_bars, &setter));
                ui.end_row();
                ui.label("Top-p");
                ui.add(widgets::ParamSlider::for_param(&p.top_p, &setter));
                ui.label("Start bar");
                ui.add(widgets::ParamSlider::for_param(&p.start_bar, &setter));
                ui.end_row();
                ui.label("Velocity");
                ui.add(widgets::ParamSlider::for_param(&p.velocity_scale, &setter));
                ui.label("MIDI channel");
                ui.add(widgets::ParamSlider::for_param(&p.channel, &setter));
                ui.end_row();
                ui.label("Follow transport");
                ui.add(widgets::ParamSlider::for_param(&p.follow_transport, &setter));
                ui.end_row();
            });
        });
    }
}
