//! `cp-piano bench`: speed figures. Generation cost per word of the recurrent model (f32 and
//! the int8 fast path, one thread) for the shipped model (trained `small-hybrid`) and random
//! `paper`, `small` (K takes of the paper's linear attention alone) and `small-hybrid` (its
//! window full) models, and the training speed of `small`,
//! `small-hybrid` and `paper`; the same per token for the REMI Transformer-XL baseline
//! (`small`, random weights, memory full).
//! Prints figures; asserts nothing.

use std::collections::HashMap;
use std::time::Instant;

/// Why a benchmark could not run (the figures come from real models and generators, so their
/// errors pass through).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    #[error(transparent)]
    Model(#[from] crate::generate::ModelError),
    #[error(transparent)]
    Load(#[from] crate::model::cpu::LoadError),
    #[error(transparent)]
    Takes(#[from] crate::generate::takes::TakesError),
    #[error(transparent)]
    Regenerate(#[from] crate::generate::RegenerateError),
}

type Result<T> = std::result::Result<T, BenchError>;
use candle_core::{Device, Tensor};

use crate::model::config::Config;
use crate::model::cp_rnn::CpRnn;
use crate::model::cpu::Precision;
use crate::model::layers::Dropout;
use crate::model::init::Rng;
use crate::model::remi_xl::XlConfig;
use crate::model::remi_xl_stream::RemiXlStream;
use crate::model::Trainable;
use crate::generate::sampling::{sample, Scratch};
use crate::generate::form::Form;
use crate::generate::{GenerationSettings, Generator};

/// Milliseconds per word over `words` words sampled by the real generator (EOS is held back so
/// the song runs the whole length; no form, so every word is sampled, none copied).
pub fn generation_ms_per_word(rnn: &CpRnn, words: usize, seed: u64) -> f64 {
    let settings = GenerationSettings { seed, max_words: words + 1, min_bars: u32::MAX, form: Form::free(), ..GenerationSettings::default() };
    let mut generator = Generator::new(rnn, settings);
    let start = Instant::now();
    generator.run_to_end();
    let sampled = generator.words().len().saturating_sub(1).max(1);
    start.elapsed().as_secs_f64() * 1000.0 / sampled as f64
}

/// Milliseconds per word of each of `k` takes generated together (`Takes`, at most its
/// `batch` at a time), over `words` words per take (EOS held back): compare with
/// `generation_ms_per_word` of one song. Also returns the batch.
pub fn takes_ms_per_word(rnn: &CpRnn, k: usize, words: usize, seed: u64) -> Result<(f64, usize)> {
    let settings = GenerationSettings { seed, max_words: words + 1, min_bars: u32::MAX, form: Form::free(), ..GenerationSettings::default() };
    let mut takes = crate::generate::takes::Takes::new(rnn, &settings, &[], k)?;
    let start = Instant::now();
    takes.run_to_end();
    let sampled: usize = takes.takes().iter().map(|t| t.words().len().saturating_sub(1)).sum();
    Ok((start.elapsed().as_secs_f64() * 1000.0 / (sampled.max(1) as f64 / k as f64), takes.batch()))
}

/// Milliseconds from "regenerate from bar `bar`" until that bar is written anew (the next Bar
/// word sampled), on a song of `bars` bars generated with its bar states kept: the worst of
/// `tries` seeds.
pub fn regenerate_ms(rnn: &CpRnn, bars: u32, bar: u32, tries: u64) -> Result<f64> {
    let settings = GenerationSettings { seed: 0, min_bars: u32::MAX, max_bars: Some(bars), form: Form::free(), ..GenerationSettings::default() };
    let mut generator = Generator::new(rnn, settings).remember_bars()?;
    generator.run_to_end();
    let mut worst = 0f64;
    for seed in 1..=tries {
        let start = Instant::now();
        generator.regenerate_from_bar(bar, seed)?;
        while generator.bars() < bar && generator.next_step().is_some() {}
        worst = worst.max(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(worst)
}

/// GFLOP/s of an f32 (m x k) @ (k x n) product on all threads (the GEMM of the fused training
/// ops), best of `repeats`: the machine's own yardstick for the training figures.
pub fn gemm_gflops(m: usize, k: usize, n: usize, repeats: usize) -> f64 {
    use crate::model::fused::linear::{matmul, Mat, Threads};
    let mut rng = Rng::new(1);
    let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
    let b: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
    let mut c = vec![0f32; m * n];
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let start = Instant::now();
        matmul(&mut c, n, false, Mat::rows(&a, m, k, k), Mat::rows(&b, k, n, n), Threads::All);
        best = best.min(start.elapsed().as_secs_f64());
    }
    2.0 * (m * k * n) as f64 / best / 1e9
}

/// Training words per second of a preset: `steps` timed steps after two warm-up steps (the
/// allocator's pool reaches its size in the first steps).
pub fn training_words_per_second(config: &Config, batch: usize, window: usize, steps: usize) -> Result<f64> {
    let device = Device::Cpu;
    let model = Trainable::new(config, 0, &device)?;
    let mut optimizer = crate::train::optim::AdamW::new(model.named_vars(), Default::default())?;
    let mut rng = Rng::new(3);
    let t = window.div_ceil(64) * 64;
    let ids: Vec<u32> = (0..batch * t * 7).map(|i| (rng.next_u64() % config.vocab_sizes[i % 7] as u64) as u32).collect();
    let positions: Vec<u32> = (0..batch * t).map(|i| (i % t) as u32).collect();
    let inputs = Tensor::from_vec(ids, (batch, t, 7), &device)?;
    let b = crate::data::batches::Batch {
        inputs: inputs.clone(),
        targets: inputs,
        mask: Tensor::ones((batch, t), candle_core::DType::F32, &device)?,
        positions: Tensor::from_vec(
            crate::model::cpu::positional_encoding(&positions, config.d_model),
            (batch, t, config.d_model),
            &device,
        )?,
    };
    let mut timed = 0.0;
    const WARM_UP: usize = 2;
    for step in 0..WARM_UP + steps {
        let start = Instant::now();
        let (loss, _) = model.loss(&b, Some(&mut Dropout::new(config.dropout, step as u64)))?;
        let grads = loss.backward()?;
        optimizer.step(&grads, 1e-4, crate::train::CLIP_NORM)?;
        if step >= WARM_UP {
            timed += start.elapsed().as_secs_f64();
        }
    }
    Ok((batch * t * steps) as f64 / timed)
}

/// Milliseconds per token of the streaming REMI-XL over `tokens` sampled tokens (the seed's
/// sampling). The first `mem_len` tokens fill the memory and are not timed.
pub fn remi_xl_ms_per_token(config: &XlConfig, precision: Precision, tokens: usize) -> Result<f64> {
    let model = Trainable::new(config, 1, &Device::Cpu)?;
    let tensors: HashMap<String, Tensor> = model.named_tensors().into_iter().collect();
    let stream = RemiXlStream::from_tensors(config, &tensors, precision)?;
    let mut state = stream.new_state();
    let mut rng = Rng::new(0);
    let mut scratch = Scratch::with_capacity(crate::tokens::remi::VOCAB_SIZE);
    let mut token = crate::tokens::remi::BAR;
    let mut timed = None;
    for i in 0..config.mem_len + tokens {
        if i == config.mem_len {
            timed = Some(Instant::now());
        }
        stream.step(&mut state, token);
        token = sample(&mut state.logits, crate::generate::remi::SEED_SAMPLING, &mut rng, &mut scratch) as u16;
    }
    Ok(timed.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1000.0 / tokens as f64))
}

/// A recurrent model of `config` with seeded random weights.
pub fn random_rnn(config: &Config, seed: u64, precision: Precision) -> Result<CpRnn> {
    let model = Trainable::new(config, seed, &Device::Cpu)?;
    let tensors: HashMap<String, Tensor> = model.named_tensors().into_iter().collect();
    Ok(CpRnn::from_tensors(config, &tensors, precision)?)
}

/// Microseconds for the int8 products of one word through `config`'s layers (query, key, value,
/// out and the two FFN matrices of each; random weights) with `n` inputs at once, one thread: the
/// part of a step that takes share. The best of 5 rounds of 200 words.
pub fn products_us_per_word(config: &Config, n: usize) -> Result<f64> {
    use crate::model::cpu::Linear;
    let (d, ff) = (config.d_model, config.d_ff);
    let mut rng = Rng::new(7);
    let mut linear = |rows: usize, cols: usize| -> Result<Linear> {
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.uniform() as f32 - 0.5).collect();
        let tensors = HashMap::from([
            ("l.weight".to_string(), Tensor::from_vec(w, (rows, cols), &Device::Cpu)?),
            ("l.bias".to_string(), Tensor::zeros(rows, candle_core::DType::F32, &Device::Cpu)?),
        ]);
        Ok(Linear::load(&tensors, "l", rows, cols, Precision::Int8)?)
    };
    let (square, up, down) = (linear(d, d)?, linear(ff, d)?, linear(d, ff)?);
    let layer = [&square, &square, &square, &square, &up, &down];
    let xs: Vec<f32> = (0..n * ff).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let mut out = vec![0f32; n * ff];
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..200 {
            for _ in 0..config.n_layers {
                for m in layer {
                    m.forward_many(&xs[..n * m.cols()], &mut out[..n * m.rows()], n);
                }
            }
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / 200.0);
    }
    Ok(best)
}

/// Nanoseconds per `Engine::process` call for 64-sample blocks at 120 BPM / 48 kHz while a dense
/// song plays (a note every 16th, chords of four), and the model load time of the shipped weights.
pub fn engine_ns_per_block(blocks: usize) -> f64 {
    use crate::playback::engine::{Engine, Note, PlaySettings, SongEvent, Transport};
    let mut engine = Engine::new();
    engine.receive(SongEvent::Reset { state: 0 });
    for i in 0..4000 {
        for k in 0..4 {
            let note = Note { start: i as f64 * 0.25, duration: 0.5, pitch: 48 + ((i * 7 + k * 4) % 40) as u8, velocity: 90 };
            engine.receive(SongEvent::Note(note));
        }
    }
    engine.receive(SongEvent::End(1000.0));
    let settings = PlaySettings { start_beat: 0.0, velocity_scale: 1.0, follow_transport: true, channel: 0, left_hand: None, split_pitch: 60 };
    let (rate, block) = (48_000.0, 64u32);
    let bps = 120.0 / 60.0 / rate;
    let mut sent = 0usize;
    let start = Instant::now();
    for b in 0..blocks {
        let position = (b as u64 * block as u64) as f64 * bps;
        let t = Transport { playing: true, tempo: 120.0, position: Some(position % 900.0), loop_range: None };
        engine.process(t, settings, block, rate, &mut |_| sent += 1);
    }
    let ns = start.elapsed().as_nanos() as f64 / blocks as f64;
    assert!(sent > 0);
    ns
}

/// Prints every figure (`cp-piano bench`): the GEMM and training figures unless `no_training`,
/// then, unless `training_only`, model load, engine, generation and REMI-XL figures.
pub fn print(words: usize, weights: Option<&std::path::Path>, no_training: bool, training_only: bool) -> Result<()> {
    if !no_training {
        let threads = rayon::current_num_threads();
        println!("f32 GEMM (4096x256 @ 256x1024, {threads} threads): {:.0} GFLOP/s", gemm_gflops(4096, 256, 1024, 20));
        let wps = training_words_per_second(&Config::small(), 2, 2048, 6)?;
        println!("training small (batch 2 x 2048 words, {threads} threads): {wps:.0} words/s");
        let wps = training_words_per_second(&Config::small_hybrid(), 2, 2048, 6)?;
        println!("training small-hybrid (batch 2 x 2048 words, {threads} threads): {wps:.0} words/s");
        let wps = training_words_per_second(&Config::paper(), 1, 2048, 2)?;
        println!("training paper (batch 1 x 2048 words, {threads} threads): {wps:.0} words/s");
    }
    if training_only {
        return Ok(());
    }
    let start = Instant::now();
    let loaded = crate::model::weights::load_cp_rnn(weights, Precision::Int8);
    if loaded.is_ok() {
        println!("model load (weights -> int8 recurrent model): {:.0} ms", start.elapsed().as_secs_f64() * 1000.0);
    }
    let ns = crate::bench::engine_ns_per_block(200_000);
    println!("plugin engine: {ns:.0} ns per 64-sample block (120 BPM, 48 kHz, dense song)");
    println!("generation, one thread, {words} words per song:");
    for precision in [Precision::F32, Precision::Int8] {
        match crate::model::weights::load_cp_rnn(weights, precision) {
            Ok(trained) => {
                let ms = generation_ms_per_word(&trained, words, 0);
                let name = format!("{} (trained)", trained.config.preset_name().unwrap_or("custom"));
                println!("  {name:<22} {precision:?}: {ms:.3} ms/word, {:.2} s per song, {:.1} MB of weights read per word", ms * words as f64 / 1000.0, trained.weight_bytes() as f64 / 1e6);
                if precision == Precision::Int8 {
                    let state_mb = trained.new_state().bytes() as f64 / 1e6;
                    println!("    each take's own state: {state_mb:.1} MB (the softmax layers' key and value windows and the linear layers' sums), read every word");
                    for k in [2, 4, 8] {
                        let (per_take, batch) = takes_ms_per_word(&trained, k, words, 0)?;
                        println!("    {k} takes, {batch} at a time: {per_take:.3} ms per word of each take = {:.2}x one song (target for 4: <= 1.6x)", per_take / ms);
                    }
                    let ms = regenerate_ms(&trained, 64, 33, 5)?;
                    println!("    regenerate from bar 33 of 64 until bar 33 is written: {ms:.1} ms (worst of 5 seeds; target <= 100 ms)");
                }
            }
            Err(e) => println!("  trained weights  {precision:?}: skipped ({e})"),
        }
    }
    for precision in [Precision::F32, Precision::Int8] {
        let paper = random_rnn(&Config::paper(), 1, precision)?;
        let ms = generation_ms_per_word(&paper, words, 0);
        println!("  paper (random)   {precision:?}: {ms:.3} ms/word, {:.2} s per song, {:.1} MB of weights read per word", ms * words as f64 / 1000.0, paper.weight_bytes() as f64 / 1e6);
        if precision == Precision::Int8 {
            let (per_take, batch) = takes_ms_per_word(&paper, 4, words, 0)?;
            println!("    4 takes, {batch} at a time: {per_take:.3} ms per word of each take = {:.2}x one song", per_take / ms);
        }
    }
    let small = random_rnn(&Config::small(), 1, Precision::Int8)?;
    let ms = generation_ms_per_word(&small, words, 0);
    let (per_take, batch) = takes_ms_per_word(&small, 4, words, 0)?;
    println!(
        "  small (random; linear attention only, {:.1} MB of state per take) Int8: {ms:.3} ms/word; 4 takes, {batch} at a time: {per_take:.3} ms per word of each take = {:.2}x one song (target <= 1.6x)",
        small.new_state().bytes() as f64 / 1e6,
        per_take / ms
    );
    let (one, four) = (products_us_per_word(&Config::small(), 1)?, products_us_per_word(&Config::small(), 4)?);
    println!(
        "  int8 products of one word through small's layers ({} kernel): 1 input {one:.0} us, 4 inputs {four:.0} us = {:.2}x (what takes share; the floor under their ratio)",
        crate::model::cpu::int8_kernel_name(),
        four / one
    );
    let hybrid = random_rnn(&Config::small_hybrid(), 1, Precision::Int8)?;
    let hybrid_words = words.max(2 * crate::model::config::DEFAULT_WINDOW);
    let ms = generation_ms_per_word(&hybrid, hybrid_words, 0);
    println!("  small-hybrid (random) Int8: {ms:.3} ms/word over {hybrid_words} words (its softmax layers' window full after 1,024; target <= 0.6 ms)");
    for precision in [Precision::F32, Precision::Int8] {
        let ms = crate::bench::remi_xl_ms_per_token(&crate::model::remi_xl::XlConfig::small(), precision, 1000)?;
        println!("  REMI-XL small (random, memory full) {precision:?}: {ms:.3} ms/token, {:.2} s per song of 6,124 tokens (POP909 mean)", ms * 6.124);
    }
    Ok(())
}
