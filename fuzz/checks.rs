// What each fuzz target does with its input, shared by the targets (`include!`) and by the
// stable regression test (tests/fuzz_regressions.rs), so a crashing input replays the same code.
// Each function takes any bytes and must return, never panic, hang or run out of memory: bad
// input is an error value.

/// MIDI import, then the CP tokens of what it imported and back.
#[allow(dead_code)]
pub fn midi_import(data: &[u8]) {
    if let Ok(song) = cp_piano::midi::import::import_bytes(data) {
        let grid = cp_piano::music::grid::Grid::from_song(&song);
        let words = cp_piano::tokens::cp::encode(&grid);
        let _ = cp_piano::tokens::cp::decode(&words);
    }
}

/// The plugin's saved state (the JSON song), restored and played by the audio-thread engine.
#[allow(dead_code)]
pub fn saved_song(data: &[u8]) {
    use cp_piano::playback::engine::{Engine, PlaySettings, SongEvent, Transport};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(song) = cp_piano::playback::song::StoredSong::from_saved(text) else { return };
    let mut engine = Engine::new();
    engine.receive(SongEvent::Reset { state: 1 });
    for n in &song.notes {
        engine.receive(SongEvent::Note(cp_piano::playback::worker::engine_note(n)));
    }
    engine.receive(SongEvent::End(song.end));
    let settings = PlaySettings { start_beat: 0.0, velocity_scale: 1.0, follow_transport: true, channel: 0, left_hand: Some(1), split_pitch: 60 };
    for block in 0..64u32 {
        let t = Transport { playing: true, tempo: 120.0, position: Some(block as f64 * 0.5), loop_range: Some((0.0, 16.0)) };
        engine.process(t, settings, 1024, 48_000.0, &mut |_| {});
    }
}

/// A weights folder's two files: the first two bytes give the length of `config.json`, the
/// rest is `model.safetensors`; then the recurrent model built from them.
#[allow(dead_code)]
pub fn weights(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let len = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let Ok(config) = std::str::from_utf8(&data[2..2 + len]) else { return };
    let Ok(weights) = cp_piano::model::weights::Weights::from_bytes(config, &data[2 + len..]) else { return };
    if let Ok(config) = weights.cp_config() {
        let _ = cp_piano::model::cp_rnn::CpRnn::from_tensors(&config, &weights.tensors, cp_piano::model::cpu::Precision::Int8);
    }
}

/// A data-set file (its header and token data), then every song's tokens.
#[allow(dead_code)]
pub fn dataset_header(data: &[u8]) {
    if let Ok(dataset) = cp_piano::data::dataset::Dataset::from_bytes(data) {
        for song in &dataset.songs {
            let _ = dataset.song_tokens(song).len();
        }
    }
}
