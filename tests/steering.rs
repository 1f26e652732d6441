//! Steering generation: following a chord progression (constrained decoding of the chord
//! family) and continuing a prime (a clip, or a song regenerated from a bar).

mod common;


use cp_piano::eval::metrics::chord_agreement;
use cp_piano::generate::chords::Progression;
use cp_piano::generate::{GenerationSettings, Generator};
use cp_piano::model::config::Config;
use cp_piano::model::cp_rnn::CpRnn;
use cp_piano::model::cpu::Precision;
use cp_piano::music::grid::Grid;
use cp_piano::tokens::cp;

/// A small random model: what it plays is noise, but every constraint must still hold.
fn tiny_model(seed: u64) -> CpRnn {
    cp_piano::bench::random_rnn(&Config::preset("tiny").unwrap(), seed, Precision::F32).unwrap()
}

#[test]
fn a_forced_chord_appears_at_every_change_point_and_nowhere_else() {
    let model = tiny_model(3);
    let progression: Progression = "C:2 G:2 | Am F | Dm7 | G7".parse().unwrap();
    for (seed, looped) in [(1, true), (2, true), (3, false)] {
        // EOS is held back past the song's length, so the bar cap or the progression ends it.
        let settings = GenerationSettings { seed, min_bars: 13, max_bars: Some(12), chords: Some(progression.clone()), chords_loop: looped, ..Default::default() };
        let grid = Generator::new(&model, settings).run_to_end();
        let bars = if looped { 12 } else { progression.bars };
        assert_eq!(grid.bars, bars, "seed {seed}: the song ends with the bar cap or the progression");
        let mut expected = Vec::new();
        let mut at = 0;
        while let Some((p, chord)) = progression.next_change(at, looped).filter(|c| c.0 < bars * 16) {
            expected.push((p, chord));
            at = p + 1;
        }
        let written: Vec<_> = grid.slots.iter().filter_map(|s| s.chord.map(|c| (s.position, c))).collect();
        assert_eq!(written, expected, "seed {seed}: chords at the change points only");
    }
    // The same seed and settings give the same song.
    let settings = GenerationSettings { seed: 9, min_bars: 9, max_bars: Some(8), chords: Some(progression), chords_loop: true, ..Default::default() };
    assert_eq!(Generator::new(&model, settings.clone()).run_to_end(), Generator::new(&model, settings).run_to_end());
}

#[test]
fn a_prime_comes_out_unchanged_and_regenerating_from_a_bar_keeps_the_bars_before() {
    let model = tiny_model(4);
    let song = common::quantised_song(5, 12);
    let words = cp::encode(&Grid::from_song(&song));
    let kept = cp::first_bars(&words, 6);
    let settings = GenerationSettings { seed: 11, min_bars: 0, max_bars: Some(16), ..Default::default() };
    let mut generator = Generator::with_prime(&model, settings, kept);
    let grid = generator.run_to_end();
    assert_eq!(&generator.words()[..kept.len()], kept, "the prime's words come out unchanged");
    // Every note of bars 1-6 is the original's, bit for bit.
    let original = Grid::from_song(&song);
    let before = |g: &Grid| g.slots.iter().filter(|s| s.position < 6 * 16).cloned().collect::<Vec<_>>();
    assert_eq!(before(&grid), before(&original));
    assert!(grid.bars > 6, "the song goes on after the kept bars");
    // Asking for more bars than the prime has keeps all of it (but its EOS).
    assert_eq!(cp::first_bars(&words, 99), &words[..words.len() - 1]);
}

#[test]
fn regenerating_from_bar_n_keeps_every_word_before_it_and_equals_a_primed_song() {
    let model = tiny_model(6);
    let settings = GenerationSettings { seed: 21, min_bars: 10, max_bars: Some(14), ..Default::default() };
    // Without remembered states, with them, and with a budget of three states (thinned to
    // every 4th, then 8th bar as the song grows).
    let state_bytes = model.new_state().bytes();
    for budget in [None, Some(usize::MAX), Some(3 * state_bytes)] {
        let mut generator = Generator::new(&model, settings.clone());
        if let Some(budget) = budget {
            generator = generator.remember_bars_within(budget).unwrap();
        }
        let original_grid = generator.run_to_end();
        assert!(generator.remembered_bytes() <= budget.unwrap_or(0), "{} bytes of states", generator.remembered_bytes());
        if budget == Some(usize::MAX) {
            assert!(generator.remembered_bytes() >= 5 * state_bytes, "a state every other bar of 10 or more");
        }
        let original = generator.words().to_vec();
        assert!(original_grid.bars >= 10, "the tiny model wrote {} bars", original_grid.bars);
        // Bars 9, then 4, then 1 (the whole song), each from the song the last one left.
        let mut song = original.clone();
        for (bar, seed) in [(9u32, 5u64), (4, 6), (1, 7)] {
            generator.regenerate_from_bar(bar, seed).unwrap();
            let grid = generator.run_to_end();
            let kept = cp::first_bars(&song, bar - 1);
            assert_eq!(&generator.words()[..kept.len()], kept, "bar {bar}: the words before it are kept");
            let before = |g: &Grid| g.slots.iter().filter(|s| s.position < (bar - 1) * 16).cloned().collect::<Vec<_>>();
            assert_eq!(before(&grid), before(&cp::decode(&song).grid), "bar {bar}: the notes before it, bit for bit");
            let primed = Generator::with_prime(&model, GenerationSettings { seed, ..settings.clone() }, kept).run_to_end();
            assert_eq!(grid, primed, "bar {bar}: the same song as primed with the kept bars at that seed");
            assert_eq!(generator.settings().seed, seed);
            song = generator.words().to_vec();
        }
        assert_ne!(song, original, "a new seed gives a new song");
        let err = generator.regenerate_from_bar(999, 1).unwrap_err();
        assert!(err.to_string().contains("bar 999 is not in the song"), "{err}");
        assert_eq!(generator.words(), &song[..], "a refused regeneration changes nothing");
    }
}

#[test]
fn the_shipped_model_plays_the_chords_it_is_given() {
    // 20 seeds of "C G Am F" looped for 32 bars: the share of beats whose chord the recogniser
    // hears in the notes is the forced one. POP909's songs against their own annotations are
    // the ceiling the recogniser allows (printed when ../shared is there).
    let model = cp_piano::model::weights::load_cp_rnn(None, Precision::Int8).expect("the shipped weights");
    let progression: Progression = "C G Am F".parse().unwrap();
    let agreement = |chords: Option<Progression>| {
        let mut shares = Vec::new();
        for seed in 0..20 {
            let settings = GenerationSettings { seed, max_bars: Some(32), chords: chords.clone(), chords_loop: true, ..Default::default() };
            let song = Generator::new(&model, settings).run_to_end().to_song();
            shares.extend(chord_agreement(&song, |beat| progression.chord_at(beat * 4)));
        }
        shares.iter().sum::<f64>() / shares.len() as f64
    };
    let (generated, free) = (agreement(Some(progression.clone())), agreement(None));
    println!("chord agreement with C G Am F, shipped model, 20 seeds x 32 bars: {:.1} % following it (chord tones +{} nats), {:.1} % left free", generated * 100.0, cp_piano::generate::CHORD_TONES, free * 100.0);
    if let Some(root) = common::pop909_root() {
        let mut ceiling = Vec::new();
        for id in 1..=20 {
            let dir = cp_piano::midi::pop909::song_dir(&root, &format!("{id:03}"));
            let (Ok(song), Ok(chords)) = (cp_piano::midi::pop909::load_song(&dir), cp_piano::midi::pop909::annotated_chords(&dir)) else { continue };
            let at = |beat: u32| chords.iter().rev().find(|c| c.tick <= beat * 480).map_or(cp_piano::music::chord::Chord::NoChord, |c| c.chord);
            ceiling.extend(chord_agreement(&song, at));
        }
        println!("chord agreement, POP909 songs 001-020 against their annotations: {:.1} %", ceiling.iter().sum::<f64>() / ceiling.len().max(1) as f64 * 100.0);
    }
    assert!(generated > 0.2 && generated > 5.0 * free, "following the chords moves the harmony towards them ({:.1} % vs {:.1} % free)", generated * 100.0, free * 100.0);
}

#[test]
fn density_moves_notes_per_bar_and_leaves_song_endings_alone() {
    // The shipped model, 20 seeds at each density: notes per bar rise monotonically from -1 to
    // +1, by 30 % or more each way from 0, and the share of songs that end by EOS stays within
    // 5 points.
    use cp_piano::generate::Finish;
    let model = cp_piano::model::weights::load_cp_rnn(None, Precision::Int8).expect("the shipped weights");
    let mut rows = Vec::new();
    for density in [-1.0f32, -0.5, 0.0, 0.5, 1.0] {
        let (mut notes, mut bars, mut eos) = (0usize, 0u32, 0usize);
        for seed in 0..20 {
            let settings = GenerationSettings { seed, density, ..Default::default() };
            let mut generator = Generator::new(&model, settings);
            let grid = generator.run_to_end();
            notes += grid.note_count();
            bars += grid.bars.max(1);
            eos += (generator.finish() == Some(Finish::Eos)) as usize;
        }
        let per_bar = notes as f64 / bars as f64;
        println!("density {density:+.1}: {per_bar:.1} notes per bar, {} bars per song, EOS in {eos}/20 songs", bars / 20);
        rows.push((per_bar, eos as f64 / 20.0));
    }
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0), "notes per bar rise with density: {rows:?}");
    assert!(rows[0].0 <= 0.7 * rows[2].0 && rows[4].0 >= 1.3 * rows[2].0, "at least 30 % each way: {rows:?}");
    assert!(rows.iter().all(|r| (r.1 - rows[2].1).abs() <= 0.05 + 1e-9), "EOS rates within 5 points: {rows:?}");
}

#[test]
fn two_hands_put_every_note_on_exactly_one_of_two_channels() {
    use midly::{MidiMessage, Smf, TrackEventKind};
    let model = tiny_model(6);
    let settings = GenerationSettings { seed: 4, min_bars: 9, max_bars: Some(8), ..Default::default() };
    let song = Generator::new(&model, settings).run_to_end().to_song();
    let bytes = cp_piano::midi::export::export_hands(&song);
    let smf = Smf::parse(&bytes).unwrap();
    assert_eq!(smf.tracks.len(), 2, "a right-hand and a left-hand track");
    let mut heard: Vec<(u8, u8)> = Vec::new();
    for (t, track) in smf.tracks.iter().enumerate() {
        for e in track {
            if let TrackEventKind::Midi { channel, message: MidiMessage::NoteOn { key, vel } } = e.kind {
                if vel.as_int() > 0 {
                    assert_eq!(channel.as_int() as usize, t, "each hand on its own channel");
                    heard.push((key.as_int(), channel.as_int()));
                }
            }
        }
    }
    assert_eq!(heard.len(), song.notes.len(), "every note once");
    assert!(heard.iter().all(|&(p, c)| (c == 1) == cp_piano::music::song::is_left_hand(p)));
    assert!(heard.iter().any(|h| h.1 == 0) && heard.iter().any(|h| h.1 == 1), "both hands play");
}

#[test]
fn k_takes_are_k_different_songs_each_the_same_as_its_seed_alone() {
    use cp_piano::generate::takes::Takes;
    for precision in [Precision::Int8, Precision::F32] {
        let model = cp_piano::bench::random_rnn(&Config::preset("tiny").unwrap(), 8, precision).unwrap();
        let settings = GenerationSettings { seed: 40, min_bars: 2, max_bars: Some(12), max_words: 600, ..Default::default() };
        let mut takes = Takes::new(&model, &settings, &[], 5).unwrap();
        let grids = takes.run_to_end();
        assert_eq!(grids.len(), 5);
        for (i, take) in takes.takes().iter().enumerate() {
            let mut alone = Generator::new(&model, GenerationSettings { seed: 40 + i as u64, ..settings.clone() });
            alone.run_to_end();
            assert_eq!(take.words(), alone.words(), "{precision:?}: take {i} is the song of seed {} alone", 40 + i);
            assert_eq!(take.finish(), alone.finish());
        }
        for i in 0..5 {
            for j in i + 1..5 {
                assert_ne!(takes.takes()[i].words(), takes.takes()[j].words(), "takes {i} and {j} differ");
            }
        }
        // Takes that end early drop out while the others go on.
        let lengths: Vec<usize> = takes.takes().iter().map(|t| t.words().len()).collect();
        assert!(lengths.iter().any(|&l| l != lengths[0]), "the takes have different lengths: {lengths:?}");
    }
    assert!(Takes::new(&tiny_model(1), &GenerationSettings::default(), &[], 9).is_err(), "at most 8 takes");
}

#[test]
fn the_plugins_chord_text_becomes_the_progression_its_songs_follow() {
    let params = cp_piano::plugin::CpPianoParams::default();
    assert_eq!(params.generation_settings().chords, None, "no text: the model's own chords");
    *params.chords.write().unwrap() = "C:2 G:2 | Am F".into();
    let settings = params.generation_settings();
    assert_eq!(settings.chords, Some("C:2 G:2 | Am F".parse::<Progression>().unwrap()));
    assert!(settings.chords_loop, "the plugin loops the progression until the song ends");
    *params.chords.write().unwrap() = "C Xq7".into();
    assert!(params.progression().is_err(), "text that does not read is an error the editor shows");
    assert_eq!(params.generation_settings().chords, None, "and songs then follow no progression");
}
