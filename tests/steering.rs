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
fn the_eos_bias_shortens_songs_and_old_settings_load_without_it() {
    // The shipped model, 12 seeds at each bias: the median length falls as the bias rises, and
    // every song still ends by EOS.
    use cp_piano::generate::sampling::{SamplingSettings, EOS_BIAS};
    use cp_piano::generate::Finish;
    let model = cp_piano::model::weights::load_cp_rnn(None, Precision::Int8).expect("the shipped weights");
    let mut medians = Vec::new();
    for eos_bias in [0.0, EOS_BIAS, 2.0] {
        let mut bars = Vec::new();
        for seed in 0..12 {
            let settings = GenerationSettings { seed, sampling: SamplingSettings { eos_bias, ..SamplingSettings::default() }, ..Default::default() };
            let mut generator = Generator::new(&model, settings);
            bars.push(generator.run_to_end().bars);
            assert_eq!(generator.finish(), Some(Finish::Eos), "bias {eos_bias}, seed {seed}: the song ends by itself");
        }
        bars.sort();
        println!("EOS bias {eos_bias}: bars {bars:?}");
        medians.push((bars[5] + bars[6]) as f64 / 2.0);
    }
    assert!(medians.windows(2).all(|w| w[1] < w[0]), "songs shorten as the bias rises: medians {medians:?}");
    // Settings saved before the bias existed load with none (they give the songs they gave);
    // today's default has the product's bias.
    let mut saved = serde_json::to_value(GenerationSettings::default()).unwrap();
    saved["sampling"].as_object_mut().unwrap().remove("eos_bias").expect("the field is saved");
    let loaded: GenerationSettings = serde_json::from_value(saved).unwrap();
    assert_eq!(loaded.sampling.eos_bias, 0.0);
    assert_eq!(GenerationSettings::default().sampling.eos_bias, EOS_BIAS);
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
        // However many go together (two at a time here, the next joining as one ends), the
        // songs are the same.
        let mut pairs = Takes::new(&model, &settings, &[], 5).unwrap().with_batch(2);
        assert_eq!(pairs.batch(), 2);
        pairs.run_to_end();
        for (i, (pair, take)) in pairs.takes().iter().zip(takes.takes()).enumerate() {
            assert_eq!(pair.words(), take.words(), "{precision:?}: take {i} in batches of 2");
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

/// Each bar's words after its Bar word, up to the next Bar word (a song's last, unclosed bar is
/// left out).
fn bar_bodies(words: &[cp::Word]) -> Vec<&[cp::Word]> {
    let bar_words: Vec<usize> = words.iter().enumerate().filter(|(_, w)| w.is_bar()).map(|(i, _)| i).collect();
    bar_words.windows(2).map(|pair| &words[pair[0] + 1..pair[1]]).collect()
}

#[test]
fn a_form_repeats_each_lettered_section_word_for_word_and_takes_keep_it() {
    use cp_piano::generate::form::Form;
    use cp_piano::generate::takes::Takes;
    let model = tiny_model(9);
    // A, B, A again, then free bars; EOS held back so every section is written.
    let form = Form::new("ABA", 2).unwrap();
    let settings = GenerationSettings { seed: 3, min_bars: 9, max_bars: Some(9), form, ..Default::default() };
    let mut generator = Generator::new(&model, settings.clone());
    generator.run_to_end();
    let bars = bar_bodies(generator.words());
    assert!(bars.len() >= 8, "{} bars", bars.len());
    assert_eq!(bars[4..6], bars[0..2], "the second A is the first, word for word");
    assert_ne!(bars[2..4], bars[0..2], "B is sampled anew");
    assert_ne!(bars[6..8], bars[0..2], "past the form's letters the song is free");
    let notes: usize = bars[0..2].iter().map(|b| b.len()).sum();
    assert!(notes > 2, "the copied bars hold words ({notes})");
    assert_eq!(generator.copied(), notes + 2, "the copied words: two bars' words and their closing Bar words");
    // Takes follow the form too, each the song of its seed alone.
    let mut takes = Takes::new(&model, &settings, &[], 3).unwrap();
    takes.run_to_end();
    for (i, take) in takes.takes().iter().enumerate() {
        let alone = Generator::new(&model, GenerationSettings { seed: 3 + i as u64, ..settings.clone() }).run_to_end();
        assert_eq!(cp::decode(take.words()).grid, alone, "take {i}");
        let bars = bar_bodies(take.words());
        assert_eq!(bars[4..6], bars[0..2], "take {i} repeats its A");
    }
    // A free song repeats nothing of the kind.
    let free = GenerationSettings { form: Form::free(), ..settings.clone() };
    let mut generator = Generator::new(&model, free);
    generator.run_to_end();
    let bars = bar_bodies(generator.words());
    assert_ne!(bars[4..6], bars[0..2]);
    assert_eq!(generator.copied(), 0);
}

#[test]
fn a_form_copies_only_sampled_bars_and_gives_way_to_a_chord_progression() {
    use cp_piano::generate::form::Form;
    let model = tiny_model(10);
    let settings = GenerationSettings { seed: 8, min_bars: 9, max_bars: Some(9), form: Form::new("ABAB", 2).unwrap(), ..Default::default() };
    let mut generator = Generator::new(&model, settings.clone());
    generator.run_to_end();
    let first = generator.words().to_vec();
    // Regenerate from bar 4: bars 1-3 are kept, so the second A (bars 5-6) copies no kept bar
    // (bar 5 would copy kept bar 1; it is sampled) and the second B copies only bar 4 into bar 8.
    generator.regenerate_from_bar(4, 99).unwrap();
    generator.run_to_end();
    let kept = cp::first_bars(&first, 3);
    assert_eq!(&generator.words()[..kept.len()], kept);
    let bars = bar_bodies(generator.words());
    assert_eq!(bars[7], bars[3], "the regenerated bar 4 comes back as bar 8");
    assert_ne!(bars[4], bars[0], "kept bar 1 is not copied into bar 5");
    assert_ne!(bars[6], bars[2], "kept bar 3 is not copied into bar 7");
    let primed = Generator::with_prime(&model, GenerationSettings { seed: 99, ..settings.clone() }, kept).run_to_end();
    assert_eq!(cp::decode(generator.words()).grid, primed, "the same song as primed with the kept bars");
    // With a progression the form is not applied: a copied bar would carry the wrong chords.
    let progression: Progression = "C G Am F Dm G7 E Am".parse().unwrap();
    let grid = Generator::new(&model, GenerationSettings { chords: Some(progression.clone()), ..settings }).run_to_end();
    let written: Vec<_> = grid.slots.iter().filter_map(|s| s.chord.map(|c| (s.position / 16, c))).collect();
    let expected: Vec<_> = (0..8).map(|bar| (bar, progression.chord_at(bar * 16))).collect();
    assert_eq!(written, expected, "every bar has its progression's chord");
}

#[test]
fn the_plugins_form_text_becomes_the_form_its_songs_have() {
    use cp_piano::generate::form::Form;
    let params = cp_piano::plugin::CpPianoParams::default();
    assert_eq!(params.generation_settings().form, Form::pop(), "the default form: ABABCB in 8-bar sections");
    *params.form.write().unwrap() = "aaba".into();
    assert_eq!(params.generation_settings().form, Form::new("AABA", 8).unwrap());
    *params.form.write().unwrap() = "none".into();
    assert_eq!(params.generation_settings().form, Form::free());
    *params.form.write().unwrap() = "A-B".into();
    assert!(params.form().is_err(), "text that does not read is an error the editor shows");
    assert_eq!(params.generation_settings().form, Form::free(), "and songs then have no form");
}
