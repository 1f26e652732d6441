//! Training and generation end to end on a tiny corpus the test writes itself: the loss falls,
//! checkpoints reload exactly, resume continues the same curve, and generation is reproducible,
//! capped and key-locked.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use candle_core::{Device, Tensor, D};
use common::quantised_song;
use cp_piano::model::weights::Weights;
use cp_piano::train::checkpoint::load_checkpoint;
use cp_piano::tokens::cp::Family;
use cp_piano::data::dataset::{build, Representation, Source};
use cp_piano::generate::{Finish, GenerationSettings, Generator};
use cp_piano::music::key::Key;
use cp_piano::midi::export::export_bytes;
use cp_piano::midi::import::import_bytes;
use cp_piano::model::cp_rnn::CpRnn;
use cp_piano::model::cpu::Precision;
use cp_piano::model::cpu::Precision as StreamPrecision;
use cp_piano::model::remi_xl_stream::RemiXlStream;
use cp_piano::model::config::Config;
use cp_piano::model::{ModelKind, Trainable};
use cp_piano::tokens::remi;
use cp_piano::generate::remi::{RemiGenerator, RemiSettings};
use cp_piano::train::log::read_log;
use cp_piano::train::{train, TrainOptions};

/// A corpus of 24 short songs written as MIDI files, built into a CP data set file.
fn corpus(dir: &Path) -> std::path::PathBuf {
    let midi = dir.join("midi");
    std::fs::create_dir_all(&midi).unwrap();
    for seed in 0..24 {
        // Few distinct songs, repeated: learnable in a few hundred steps.
        std::fs::write(midi.join(format!("song{seed:02}.mid")), export_bytes(&quantised_song(seed % 3, 4), 0)).unwrap();
    }
    let data = build(&Source::MidiFolder(midi), Representation::Cp, false).unwrap();
    let path = dir.join("data.bin");
    data.save(&path).unwrap();
    path
}

fn options(data: &Path, out: &Path, steps: u64) -> TrainOptions {
    TrainOptions {
        data: data.to_path_buf(),
        model: ModelKind::Cp,
        preset: Some("tiny".into()),
        out: out.to_path_buf(),
        steps,
        batch_size: 4,
        window: 128,
        lr: 3e-3,
        warmup: 20,
        eval_every: 1000,
        save_minutes: 60.0,
        seed: 5,
        cuda: false,
        progress: false,
        init: None,
        start_step: 0,
        transpose: false,
    }
}

fn train_losses(out: &Path) -> Vec<(u64, f64)> {
    read_log(&out.join("log.jsonl")).iter().filter_map(|l| l.train_loss.map(|v| (l.step, v))).collect()
}

#[test]
fn two_hundred_steps_lower_the_loss_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("run");
    let state = train(options(&data, &out, 200), false, Arc::new(AtomicBool::new(false))).unwrap();
    assert_eq!(state.step, 200);
    let losses = train_losses(&out);
    let (first, last) = (losses[0].1, losses.last().unwrap().1);
    println!("train loss {first:.3} at step 10 -> {last:.3} at step 200");
    assert!(last < first * 0.5, "loss {first} -> {last}");
    assert!(out.join("loss.png").exists());
    assert!(out.join("best/model.safetensors").exists() && out.join("last/config.json").exists());
    // `cp-piano loss`: the trained weights on whole training songs, per family, below the loss
    // of the untrained start.
    let dataset = cp_piano::data::dataset::Dataset::load(&data).unwrap();
    let trained = cp_piano::eval::teacher_forced_loss(&Weights::load_dir(&out.join("last")).unwrap(), &dataset, cp_piano::data::dataset::Split::Train).unwrap();
    assert_eq!(trained.len(), 7);
    assert!(trained.iter().all(|l| l.is_finite() && *l >= 0.0));
    assert!(trained.iter().sum::<f64>() / 7.0 < first * 0.5, "{trained:?}");
    // How it ends songs: one true end per song, probabilities.
    let endings = cp_piano::eval::song_endings(&Weights::load_dir(&out.join("last")).unwrap(), &dataset, cp_piano::data::dataset::Split::Train).unwrap();
    assert_eq!(endings.songs, dataset.split(cp_piano::data::dataset::Split::Train).count());
    for p in [endings.at_end_mean, endings.at_end_median, endings.elsewhere_mean, endings.end_is_highest] {
        assert!((0.0..=1.0).contains(&p), "{endings:?}");
    }
}

#[test]
fn resume_continues_the_same_loss_curve_and_checkpoints_reload_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let straight = dir.path().join("straight");
    train(options(&data, &straight, 40), false, stop.clone()).unwrap();
    let split = dir.path().join("split");
    train(options(&data, &split, 20), false, stop.clone()).unwrap();
    // The resumed run keeps its own window length (and so its data) whatever the command says.
    let state = train(TrainOptions { window: 16, ..options(&data, &split, 40) }, true, stop.clone()).unwrap();
    assert_eq!(state.step, 40);
    assert_eq!(train_losses(&straight), train_losses(&split));

    // Starting a new run in a folder that holds one (a slip of --out, or a forgotten --resume)
    // is refused before anything is written: its checkpoint, weights and log stay as they were.
    let run_files = |out: &Path| ["checkpoint.safetensors", "log.jsonl", "best/model.safetensors", "last/model.safetensors"].map(|f| std::fs::read(out.join(f)).unwrap());
    let before = run_files(&split);
    let refused = train(options(&data, &split, 10), false, stop.clone()).unwrap_err();
    assert!(refused.to_string().contains("already holds a run") && refused.to_string().contains("--resume"), "{refused}");
    assert!(run_files(&split) == before, "a refused run changed the folder it was refused in");
    // A resume where a run's files are but its checkpoint is not is refused too (it would start
    // again over them).
    let orphan = dir.path().join("orphan");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::copy(split.join("log.jsonl"), orphan.join("log.jsonl")).unwrap();
    let refused = train(options(&data, &orphan, 10), true, stop.clone()).unwrap_err();
    assert!(refused.to_string().contains("no checkpoint.safetensors"), "{refused}");
    assert_eq!(std::fs::read(orphan.join("log.jsonl")).unwrap(), before[1]);
    // A run's folder given where weights are wanted names the folders that hold them.
    let error = Weights::load_dir(&split).err().expect("a run folder is not weights");
    assert!(error.to_string().contains("give its best/ or last/"), "{error}");

    // A new run started from exported weights begins where they left off, not at random.
    let warm = dir.path().join("warm");
    train(TrainOptions { init: Some(split.join("last")), ..options(&data, &warm, 10) }, false, Arc::new(AtomicBool::new(false))).unwrap();
    let (fresh, continued) = (train_losses(&straight)[0].1, train_losses(&warm)[0].1);
    assert!(continued < fresh * 0.8, "from weights: {continued}, from scratch: {fresh}");

    // A run carried on from its exported weights at its step follows the run's own
    // learning-rate schedule from there (and its data order), not a new one from step 0.
    let half = dir.path().join("half");
    train(options(&data, &half, 20), false, Arc::new(AtomicBool::new(false))).unwrap();
    let carried = dir.path().join("carried");
    let state = train(TrainOptions { init: Some(half.join("last")), start_step: 20, ..options(&data, &carried, 40) }, false, Arc::new(AtomicBool::new(false))).unwrap();
    assert_eq!(state.step, 40);
    let lrs = |out: &Path| read_log(&out.join("log.jsonl")).iter().filter(|l| l.train_loss.is_some()).map(|l| (l.step, l.lr)).collect::<Vec<_>>();
    assert_eq!(lrs(&carried), lrs(&straight)[2..].to_vec());
    let (carried_first, straight_there) = (train_losses(&carried)[0].1, train_losses(&straight)[2].1);
    assert!(carried_first < fresh * 0.8 && carried_first < straight_there * 1.3, "carried {carried_first}, straight {straight_there}, fresh {fresh}");
    // It needs the weights it carries on, and a step before the end.
    for bad in [TrainOptions { start_step: 20, ..options(&data, &dir.path().join("no-init"), 40) }, TrainOptions { init: Some(half.join("last")), start_step: 40, ..options(&data, &dir.path().join("past"), 40) }] {
        let error = train(bad, false, Arc::new(AtomicBool::new(false))).unwrap_err();
        assert!(error.to_string().contains("--start-step"), "{error}");
    }

    // A named preset starts from weights whose tensors fit it: `tiny-hybrid` from `tiny`
    // weights (one layer's attention turned softmax) keeps their knowledge and its own shape.
    let hybrid = dir.path().join("hybrid");
    let from = |preset: &str, out: &Path| TrainOptions { init: Some(split.join("last")), preset: Some(preset.into()), ..options(&data, out, 10) };
    train(from("tiny-hybrid", &hybrid), false, Arc::new(AtomicBool::new(false))).unwrap();
    assert_eq!(Weights::load_dir(&hybrid.join("last")).unwrap().cp_config().unwrap(), Config::preset("tiny-hybrid").unwrap());
    let hybrid_first = train_losses(&hybrid)[0].1;
    assert!(hybrid_first < fresh * 0.8, "hybrid from weights: {hybrid_first}, from scratch: {fresh}");
    // A preset the weights do not fit is refused, and names the weights.
    let refused = train(from("small", &dir.path().join("refused")), false, Arc::new(AtomicBool::new(false))).unwrap_err();
    assert!(refused.to_string().contains("weights do not fit"), "{refused}");

    // The checkpoint's weights give the same logits as the exported ones, in candle and in the
    // recurrent form.
    let ck = load_checkpoint(&split.join("checkpoint.safetensors"), &Device::Cpu).unwrap();
    let exported = Weights::load_dir(&split.join("last")).unwrap();
    let config = exported.cp_config().unwrap();
    let a = Trainable::new(&config, 0, &Device::Cpu).unwrap();
    a.load(&ck.model).unwrap();
    let b = Trainable::new(&config, 1, &Device::Cpu).unwrap();
    b.load(&exported.tensors).unwrap();
    let ids = Tensor::from_vec((0..64 * 7).map(|i| (i % 3) as u32).collect::<Vec<_>>(), (1, 64, 7), &Device::Cpu).unwrap();
    let pos: Vec<u32> = (0..64).collect();
    let pe = Tensor::from_vec(cp_piano::model::cpu::positional_encoding(&pos, config.d_model), (1, 64, config.d_model), &Device::Cpu).unwrap();
    let types = ids.narrow(D::Minus1, Family::Type.index(), 1).unwrap().squeeze(D::Minus1).unwrap();
    let la = a.cp().logits(&a.cp().hidden(&ids, &pe, None).unwrap(), &types).unwrap();
    let lb = b.cp().logits(&b.cp().hidden(&ids, &pe, None).unwrap(), &types).unwrap();
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!(x.flatten_all().unwrap().to_vec1::<f32>().unwrap(), y.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
}

fn trained_rnn() -> (tempfile::TempDir, CpRnn) {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("run");
    train(options(&data, &out, 120), false, Arc::new(AtomicBool::new(false))).unwrap();
    let weights = Weights::load_dir(&out.join("last")).unwrap();
    let rnn = CpRnn::from_tensors(&weights.cp_config().unwrap(), &weights.tensors, Precision::F32).unwrap();
    (dir, rnn)
}

#[test]
fn generation_is_reproducible_capped_and_key_locked() {
    let (_dir, rnn) = trained_rnn();
    let song = |settings: GenerationSettings| {
        let mut g = Generator::new(&rnn, settings);
        let grid = g.run_to_end();
        (export_bytes(&grid.to_song(), 0), g.words().len(), g.finish(), grid)
    };
    let settings = GenerationSettings { seed: 42, max_words: 400, ..Default::default() };
    let (a, ..) = song(settings.clone());
    let (b, ..) = song(settings.clone());
    assert_eq!(a, b, "same seed and settings give byte-identical MIDI");
    let (c, ..) = song(GenerationSettings { seed: 43, ..settings.clone() });
    assert_ne!(a, c, "another seed gives another song");
    assert!(import_bytes(&a).is_ok());

    let (_, words, finish, _) = song(GenerationSettings { seed: 1, max_words: 50, ..Default::default() });
    assert!(words <= 50);
    if finish != Some(Finish::Eos) {
        assert_eq!((words, finish), (50, Some(Finish::WordCap)));
    }
    // The bar cap ends the song on a bar line (unless EOS came first).
    let (_, _, finish, grid) = song(GenerationSettings { seed: 2, max_bars: Some(2), ..Default::default() });
    match finish {
        Some(Finish::BarCap) => assert_eq!(grid.bars, 2),
        other => assert_eq!(other, Some(Finish::Eos)),
    }

    // EOS never comes before the minimum length.
    for seed in 0..5 {
        let (_, _, finish, grid) = song(GenerationSettings { seed, min_bars: 3, max_words: 2000, ..Default::default() });
        if finish == Some(Finish::Eos) {
            assert!(grid.bars >= 3, "seed {seed}: EOS after {} bars", grid.bars);
        }
    }
    for key in ["Eb", "F#m"] {
        let key: Key = key.parse().unwrap();
        let (.., grid) = song(GenerationSettings { seed: 3, key: Some(key), ..Default::default() });
        let notes = grid.to_song().notes;
        assert!(!notes.is_empty());
        assert!(notes.iter().all(|n| key.contains(n.pitch)), "{key}: an out-of-key pitch");
    }
}

#[test]
fn the_shipped_weights_generate_songs_with_notes() {
    let weights = cp_piano::model::weights::load_weights(None).expect("the build embeds weights/ (the shipped model)");
    let config = weights.cp_config().unwrap();
    let rnn = CpRnn::from_tensors(&config, &weights.tensors, Precision::Int8).unwrap();
    let mut ended = 0;
    for seed in 0..5 {
        let mut g = Generator::new(&rnn, GenerationSettings { seed, max_words: 1500, ..Default::default() });
        let grid = g.run_to_end();
        let bytes = export_bytes(&grid.to_song(), 0);
        let song = import_bytes(&bytes).expect("a parseable MIDI file");
        assert!(song.notes.len() > 20, "seed {seed}: {} notes", song.notes.len());
        ended += (g.finish() == Some(Finish::Eos)) as usize;
    }
    println!("{ended} of 5 songs ended with EOS within 1500 words");
    let _: HashMap<String, Tensor> = weights.tensors;
}

#[test]
fn remi_xl_trains_resumes_exactly_and_generates_reproducibly() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let midi = dir.path().join("midi");
    // The CP data set file is refused for REMI-XL; the MIDI folder is built as REMI tokens.
    let cp_file = dir.path().join("data.bin");
    let xl = |data: &Path, out: &Path, steps| TrainOptions { model: ModelKind::RemiXl, window: 96, ..options(data, out, steps) };
    let refused = train(xl(&cp_file, &dir.path().join("bad"), 5), false, Arc::new(AtomicBool::new(false)));
    assert!(refused.unwrap_err().to_string().contains("needs Remi tokens"));

    let straight = dir.path().join("xl");
    train(xl(&midi, &straight, 150), false, Arc::new(AtomicBool::new(false))).unwrap();
    let losses = train_losses(&straight);
    let (first, last) = (losses[0].1, losses.last().unwrap().1);
    println!("REMI-XL train loss {first:.3} at step 10 -> {last:.3} at step 150");
    assert!(last < first * 0.5, "loss {first} -> {last}");
    let (whole, split) = (dir.path().join("xl-40"), dir.path().join("xl-20-20"));
    train(xl(&midi, &whole, 40), false, Arc::new(AtomicBool::new(false))).unwrap();
    train(xl(&midi, &split, 20), false, Arc::new(AtomicBool::new(false))).unwrap();
    train(xl(&midi, &split, 40), true, Arc::new(AtomicBool::new(false))).unwrap();
    assert_eq!(train_losses(&split), train_losses(&whole), "20 + 20 steps == 40 steps");
    // Resuming with the wrong --model says so.
    let wrong = train(options(&midi, &split, 50), true, Arc::new(AtomicBool::new(false)));
    assert!(wrong.unwrap_err().to_string().contains("RemiXl run"));

    let weights = Weights::load_dir(&straight.join("best")).unwrap();
    let model = RemiXlStream::from_tensors(&weights.xl_config().unwrap(), &weights.tensors, StreamPrecision::F32).unwrap();
    let settings = RemiSettings { seed: 3, max_tokens: 600, min_bars: 0, key: Some("D".parse::<Key>().unwrap()), ..RemiSettings::default() };
    let song = |s: &RemiSettings| {
        let mut g = RemiGenerator::with_prime(&model, s.clone(), &[]);
        let grid = g.run_to_end();
        (g.tokens().to_vec(), grid, g.finish())
    };
    let (tokens, grid, finish) = song(&settings);
    assert_eq!(song(&settings).0, tokens, "same seed, same song");
    assert_ne!(song(&RemiSettings { seed: 4, ..settings.clone() }).0, tokens);
    assert!(tokens.len() <= 600);
    assert!(finish.is_some());
    assert!(grid.note_count() > 0, "a trained model writes notes");
    let key = "D".parse::<Key>().unwrap();
    assert!(grid.slots.iter().flat_map(|s| &s.notes).all(|n| key.contains(n.pitch)), "every pitch is in D major");
    assert!(tokens.iter().all(|&t| (t as usize) < remi::VOCAB_SIZE));
}

/// A model with fixed logits: the type is Metrical with 92 %, EOS and Note 4 % each; every
/// Metrical word is a Beat (never a Bar).
struct FixedModel;

impl cp_piano::generate::WordModel for FixedModel {
    type State = ();
    fn new_state(&self) -> Result<(), cp_piano::generate::ModelError> {
        Ok(())
    }
    fn step(&self, _: &mut (), _: cp_piano::tokens::cp::Word) -> Result<(), cp_piano::generate::ModelError> {
        Ok(())
    }
    fn type_logits(&self, _: &(), out: &mut [f32]) -> Result<(), cp_piano::generate::ModelError> {
        out.copy_from_slice(&[0.04f32.ln(), 0.92f32.ln(), 0.04f32.ln()]);
        Ok(())
    }
    fn family_logits(&self, _: &mut (), _: u16, out: &mut [Vec<f32>; cp_piano::tokens::cp::FAMILIES]) -> Result<(), cp_piano::generate::ModelError> {
        for (f, logits) in out.iter_mut().enumerate() {
            logits.iter_mut().for_each(|l| *l = 0.0);
            if f == Family::BarBeat.index() {
                logits[1] = -100.0; // no Bar
            }
        }
        Ok(())
    }
    fn state_bytes(&self, _: &()) -> usize {
        0
    }
}

#[test]
fn eos_is_drawn_outside_the_type_nucleus_once_the_minimum_is_reached() {
    // The type nucleus (0.9) keeps only Metrical here; EOS still ends every song, at its own
    // 4 % a word, once the minimum length is reached, and never before it.
    let mut lengths = Vec::new();
    for seed in 0..10 {
        let settings = GenerationSettings { seed, max_words: 2000, min_bars: 0, ..GenerationSettings::default() };
        let mut g = Generator::try_with_prime(&FixedModel, settings, &[cp_piano::tokens::cp::Word::BAR]).unwrap();
        g.run_to_end();
        assert_eq!(g.finish(), Some(Finish::Eos), "seed {seed}");
        lengths.push(g.words().len());
    }
    let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
    assert!((5.0..100.0).contains(&mean), "mean length {mean} for a 4 % chance a word");
    let settings = GenerationSettings { seed: 1, max_words: 2000, min_bars: 1, ..GenerationSettings::default() };
    let mut g = Generator::try_with_prime(&FixedModel, settings, &[cp_piano::tokens::cp::Word::BAR]).unwrap();
    g.run_to_end();
    assert_eq!(g.finish(), Some(Finish::WordCap), "no bar completes, so EOS stays masked");
}
