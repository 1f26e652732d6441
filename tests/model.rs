//! The CP model: exact parameter count, gradient reach, and the recurrent form (generation)
//! equal to the chunked training form.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};
use cp_piano::tokens::cp::{Family, Word, FAMILIES, FAMILY_SIZES};
use cp_piano::model::config::Config;
use cp_piano::model::cp_rnn::CpRnn;
use cp_piano::model::cpu::Precision;
use cp_piano::data::batches::Batch;
use cp_piano::model::cp_transformer::parameter_count;
use cp_piano::model::cpu::positional_encoding;
use cp_piano::model::layers::Dropout;
use cp_piano::model::init::Rng;
use cp_piano::model::Trainable;

fn random_words(n: usize, seed: u64) -> Vec<Word> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| Word(std::array::from_fn(|f| (rng.next_u64() % FAMILY_SIZES[f] as u64) as u16))).collect()
}

fn batch_of(words: &[Word], d_model: usize) -> Batch {
    let t = words.len() - 1;
    let padded = t.div_ceil(64) * 64;
    let mut inputs = vec![0u32; padded * FAMILIES];
    let mut targets = vec![0u32; padded * FAMILIES];
    let mut mask = vec![0f32; padded];
    for i in 0..t {
        for f in 0..FAMILIES {
            inputs[i * FAMILIES + f] = words[i].0[f] as u32;
            targets[i * FAMILIES + f] = words[i + 1].0[f] as u32;
        }
        mask[i] = 1.0;
    }
    let positions: Vec<u32> = (0..padded as u32).collect();
    Batch {
        inputs: Tensor::from_vec(inputs, (1, padded, FAMILIES), &Device::Cpu).unwrap(),
        targets: Tensor::from_vec(targets, (1, padded, FAMILIES), &Device::Cpu).unwrap(),
        mask: Tensor::from_vec(mask, (1, padded), &Device::Cpu).unwrap(),
        positions: Tensor::from_vec(positional_encoding(&positions, d_model), (1, padded, d_model), &Device::Cpu).unwrap(),
    }
}

#[test]
fn the_paper_preset_has_exactly_39_016_630_parameters() {
    assert_eq!(parameter_count(&Config::paper()), 39_016_630);
    let small = Config::small();
    let model = Trainable::new(&small, 0, &Device::Cpu).unwrap();
    assert_eq!(model.parameter_count(), parameter_count(&small));
    assert!((3_000_000..=6_000_000).contains(&model.parameter_count()));
}

#[test]
fn the_built_paper_model_has_the_counted_parameters() {
    let model = Trainable::new(Config::paper(), 0, &Device::Cpu).unwrap();
    assert_eq!(model.parameter_count(), 39_016_630);
}

#[test]
fn every_parameter_receives_a_gradient() {
    let config = Config::preset("tiny").unwrap();
    let model = Trainable::new(&config, 1, &Device::Cpu).unwrap();
    let words = random_words(130, 2);
    let batch = batch_of(&words, config.d_model);
    let (loss, _) = model.loss(&batch, Some(&mut Dropout::new(0.1, 3))).unwrap();
    // Embedding rows of ids the batch never uses legitimately get zero: the whole tensor counts.
    common::assert_every_parameter_has_a_gradient(&model, &loss);
}

#[test]
fn recurrent_form_equals_the_training_form_over_300_steps() {
    recurrent_form_equals_the_training_form(Config { n_layers: 2, d_model: 64, n_heads: 4, d_ff: 128, ..Config::preset("tiny").unwrap() });
}

#[test]
fn hybrid_recurrent_form_equals_the_training_form_over_300_steps() {
    // Layer 1 of 3 attends by softmax over 40 words: 300 words wrap its ring of keys seven
    // times and cross the training form's query chunks.
    recurrent_form_equals_the_training_form(Config {
        n_layers: 3,
        d_model: 64,
        n_heads: 4,
        d_ff: 128,
        softmax_layers: vec![1],
        window: 40,
        ..Config::preset("tiny").unwrap()
    });
}

/// The recurrent model's logits over 300 words equal the training form's (teacher forced).
fn recurrent_form_equals_the_training_form(config: Config) {
    let model = Trainable::new(&config, 7, &Device::Cpu).unwrap();
    let words = random_words(301, 8);
    let batch = batch_of(&words, config.d_model);
    let hidden = model.cp().hidden(&batch.inputs, &batch.positions, None).unwrap();
    let types = batch.targets.narrow(D::Minus1, Family::Type.index(), 1).unwrap().squeeze(D::Minus1).unwrap();
    let logits: Vec<Vec<Vec<f32>>> = model
        .cp()
        .logits(&hidden, &types)
        .unwrap()
        .iter()
        .map(|l| l.squeeze(0).unwrap().to_vec2::<f32>().unwrap())
        .collect();
    let tensors: HashMap<String, Tensor> = model.named_tensors().into_iter().collect();
    let rnn = CpRnn::from_tensors(&config, &tensors, Precision::F32).unwrap();
    let mut state = rnn.new_state();
    let mut family = rnn.logit_buffers();
    let mut type_logits = vec![0f32; 3];
    let mut worst = 0f32;
    for i in 0..300 {
        rnn.step(&mut state, words[i]);
        rnn.type_logits(&state, &mut type_logits);
        rnn.family_logits(&mut state, words[i + 1].get(Family::Type), &mut family);
        family[Family::Type.index()].copy_from_slice(&type_logits);
        for f in 0..FAMILIES {
            for (a, b) in family[f].iter().zip(&logits[f][i]) {
                worst = worst.max((a - b).abs());
            }
        }
    }
    assert!(worst < 1e-4, "largest logit difference {worst}");
    let _ = DType::F32;
}

#[test]
fn int8_weights_stay_close_to_f32() {
    let config = Config::preset("tiny").unwrap();
    let model = Trainable::new(&config, 11, &Device::Cpu).unwrap();
    let tensors: HashMap<String, Tensor> = model.named_tensors().into_iter().collect();
    let exact = CpRnn::from_tensors(&config, &tensors, Precision::F32).unwrap();
    let fast = CpRnn::from_tensors(&config, &tensors, Precision::Int8).unwrap();
    assert!(fast.weight_bytes() * 3 < exact.weight_bytes());
    let (mut a, mut b) = (exact.new_state(), fast.new_state());
    let (mut la, mut lb) = (vec![0f32; 3], vec![0f32; 3]);
    let mut worst = 0f32;
    for w in random_words(100, 12) {
        exact.step(&mut a, w);
        fast.step(&mut b, w);
        exact.type_logits(&a, &mut la);
        fast.type_logits(&b, &mut lb);
        worst = worst.max(la.iter().zip(&lb).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max));
    }
    assert!(worst < 0.1, "int8 type logits differ by {worst}");
}

#[test]
fn fused_kernels_match_candle_ops_in_value_and_gradient() {
    use candle_core::Var;
    use cp_piano::model::fused;
    let mut rng = Rng::new(5);
    let values: Vec<f32> = (0..6 * 40).map(|_| (rng.normal() * 2.0) as f32).collect();
    let x = Var::from_tensor(&Tensor::from_vec(values, (6, 40), &Device::Cpu).unwrap()).unwrap();
    let w = Var::from_tensor(&Tensor::from_vec((0..40).map(|i| 0.5 + i as f32 / 40.0).collect::<Vec<_>>(), 40, &Device::Cpu).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::from_vec((0..40).map(|i| i as f32 / 80.0 - 0.2).collect::<Vec<_>>(), 40, &Device::Cpu).unwrap()).unwrap();
    let weights = Tensor::from_vec((0..240).map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.5).collect::<Vec<_>>(), (6, 40), &Device::Cpu).unwrap();
    type Op = fn(&Tensor, &Tensor, &Tensor) -> candle_core::Result<Tensor>;
    let pairs: [(&str, Op, Op); 2] = [
        ("gelu", |x, _, _| fused::gelu(x), |x, _, _| fused::reference::gelu(x)),
        ("layer norm", |x, w, b| fused::layer_norm(x, w, b, 1e-5), |x, w, b| fused::reference::layer_norm(x, w, b, 1e-5)),
    ];
    let max_diff = |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    for (name, fast, slow) in pairs {
        let yf = fast(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
        let ys = slow(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
        assert!(max_diff(&yf, &ys) < 1e-5, "{name} forward");
        let gf = (yf * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let gs = (ys * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        for (var, what) in [(&x, "x"), (&w, "weight"), (&b, "bias")] {
            match (gf.get(var.as_tensor()), gs.get(var.as_tensor())) {
                (Some(a), Some(c)) => assert!(max_diff(a, c) < 1e-4, "{name} gradient of {what}: {}", max_diff(a, c)),
                (None, None) => {}
                _ => panic!("{name}: gradient of {what} present in one form only"),
            }
        }
    }
}

/// Largest |a - b| over two tensors of one shape.
fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Checks a fused op against its composite form: the same forward values, and the same
/// gradients of every input under a fixed random weighting of the output.
fn check_against_composite(name: &str, inputs: &[Tensor], fast: &dyn Fn(&[Tensor]) -> Tensor, slow: &dyn Fn(&[Tensor]) -> Tensor, tolerance: f32) {
    use candle_core::Var;
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let (yf, ys) = (fast(&tensors), slow(&tensors));
    assert_eq!(yf.dims(), ys.dims(), "{name}: shapes");
    let scale = ys.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap().max(1.0);
    assert!(max_diff(&yf, &ys) < tolerance * scale, "{name} forward differs by {}", max_diff(&yf, &ys));
    let mut rng = Rng::new(99);
    let weighting = Tensor::from_vec((0..ys.elem_count()).map(|_| rng.normal() as f32).collect::<Vec<_>>(), ys.shape(), &Device::Cpu).unwrap();
    let gf = (yf * &weighting).unwrap().sum_all().unwrap().backward().unwrap();
    let gs = (ys * &weighting).unwrap().sum_all().unwrap().backward().unwrap();
    for (i, v) in vars.iter().enumerate() {
        let (a, b) = (gf.get(v.as_tensor()).expect("fused gradient"), gs.get(v.as_tensor()).expect("composite gradient"));
        let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap().max(1.0);
        assert!(max_diff(a, b) < tolerance * scale, "{name}: gradient of input {i} differs by {} (scale {scale})", max_diff(a, b));
    }
}

fn random_tensor(shape: &[usize], seed: u64, scale: f64) -> Tensor {
    let mut rng = Rng::new(seed);
    let n = shape.iter().product::<usize>();
    Tensor::from_vec((0..n).map(|_| (rng.normal() * scale) as f32).collect::<Vec<_>>(), shape, &Device::Cpu).unwrap()
}

#[test]
fn fused_linear_matches_matmul_plus_bias() {
    use cp_piano::model::fused;
    let inputs = [random_tensor(&[3, 50, 24], 1, 1.0), random_tensor(&[40, 24], 2, 0.3), random_tensor(&[40], 3, 0.5)];
    check_against_composite(
        "linear",
        &inputs,
        &|t| fused::linear(&t[0], &t[1], &t[2]).unwrap(),
        &|t| fused::reference::linear(&t[0], &t[1], &t[2]).unwrap(),
        1e-5,
    );
}

#[test]
fn fused_attention_matches_the_chunked_candle_form() {
    // 150 words: two whole chunks and a partial one, so the state carried across chunks and
    // the ragged end are both covered; two sequences of three heads.
    use cp_piano::model::fused;
    let inputs = [random_tensor(&[2, 150, 24], 4, 1.0), random_tensor(&[2, 150, 24], 5, 1.0), random_tensor(&[2, 150, 24], 6, 1.0)];
    check_against_composite(
        "linear attention",
        &inputs,
        &|t| fused::linear_attention(&t[0], &t[1], &t[2], 3).unwrap(),
        &|t| fused::reference::linear_attention(&t[0], &t[1], &t[2], 3).unwrap(),
        1e-4,
    );
}

#[test]
fn fused_window_attention_matches_the_candle_form() {
    // 150 words in query chunks of 64 (two whole, one partial); windows of one word, of 40
    // (keys cut off inside a chunk) and of more words than there are.
    use cp_piano::model::fused;
    let inputs = [random_tensor(&[2, 150, 24], 7, 1.0), random_tensor(&[2, 150, 24], 8, 1.0), random_tensor(&[2, 150, 24], 9, 1.0)];
    for window in [1, 40, 1000] {
        check_against_composite(
            &format!("window attention ({window} words)"),
            &inputs,
            &|t| fused::window_attention(&t[0], &t[1], &t[2], 3, window).unwrap(),
            &|t| fused::reference::window_attention(&t[0], &t[1], &t[2], 3, window).unwrap(),
            1e-4,
        );
    }
}

#[test]
fn window_attention_sees_only_its_window() {
    // A value written only at word 0 reaches word 39 through a 40-word window and not word 40.
    use cp_piano::model::fused;
    let (t, d) = (60, 8);
    let q = Tensor::zeros((1, t, d), candle_core::DType::F32, &Device::Cpu).unwrap();
    let k = q.clone();
    let mut v = vec![0f32; t * d];
    v[..d].fill(1.0);
    let v = Tensor::from_vec(v, (1, t, d), &Device::Cpu).unwrap();
    let out = fused::window_attention(&q, &k, &v, 2, 40).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    assert!((out[39][0] - 1.0 / 40.0).abs() < 1e-6, "word 39 averages 40 words, one of them word 0: {}", out[39][0]);
    assert_eq!(out[40][0], 0.0, "word 40's window starts at word 1");
    assert!((out[0][0] - 1.0).abs() < 1e-6);
}

#[test]
fn fused_dropout_drops_at_its_rate_and_matches_its_mask() {
    use cp_piano::model::layers::Dropout;
    let shape = [4, 100, 32];
    let inputs = [random_tensor(&shape, 7, 1.0), random_tensor(&shape, 8, 1.0)];
    // The fused residual add and the composite x + y * mask draw the same mask from the seed.
    check_against_composite(
        "residual dropout",
        &inputs,
        &|t| Dropout::new(0.1, 42).add_to(&t[0], &t[1]).unwrap(),
        &|t| {
            let mask = Dropout::new(0.1, 42).next_mask().tensor(t[1].shape(), &Device::Cpu).unwrap();
            (&t[0] + t[1].mul(&mask).unwrap()).unwrap()
        },
        1e-6,
    );
    check_against_composite(
        "dropout",
        &inputs[..1],
        &|t| Dropout::new(0.1, 42).apply(&t[0]).unwrap(),
        &|t| t[0].mul(&Dropout::new(0.1, 42).next_mask().tensor(t[0].shape(), &Device::Cpu).unwrap()).unwrap(),
        1e-6,
    );
    // About a tenth dropped, the rest scaled by 1 / 0.9; the next mask of a step differs.
    let mut dropout = Dropout::new(0.1, 42);
    let first = dropout.next_mask().tensor(&candle_core::Shape::from(&shape[..]), &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let second = dropout.next_mask().tensor(&candle_core::Shape::from(&shape[..]), &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let dropped = first.iter().filter(|&&m| m == 0.0).count() as f64 / first.len() as f64;
    assert!((dropped - 0.1).abs() < 0.01, "dropped {dropped}");
    assert!(first.iter().all(|&m| m == 0.0 || (m - 1.0 / 0.9).abs() < 1e-6));
    assert_ne!(first, second);
}

#[test]
fn the_device_recurrence_equals_the_cpu_model_and_writes_the_same_song() {
    device_recurrence_matches_the_cpu_model("tiny");
}

#[test]
fn the_hybrid_device_recurrence_equals_the_cpu_model_and_writes_the_same_song() {
    // 200 words run past the 64-word window of `tiny-hybrid`'s softmax layer.
    device_recurrence_matches_the_cpu_model("tiny-hybrid");
}

/// The candle recurrent step (how generation runs on a CUDA GPU), here on the CPU device:
/// the same logits as the plain-Rust model over 200 words, then the same generated song.
fn device_recurrence_matches_the_cpu_model(preset: &str) {
    use cp_piano::generate::{GenerationSettings, Generator, Inference};
    let config = Config::preset(preset).unwrap();
    let model = Trainable::new(&config, 13, &Device::Cpu).unwrap();
    let tensors: HashMap<String, Tensor> = model.named_tensors().into_iter().collect();
    let cpu = CpRnn::from_tensors(&config, &tensors, Precision::F32).unwrap();
    let device = model.cp().clone();
    let (mut a, mut b) = (cpu.new_state(), device.new_state().unwrap());
    let mut families = cpu.logit_buffers();
    let mut on_device = cpu.logit_buffers();
    let (mut ta, mut tb) = (vec![0f32; 3], vec![0f32; 3]);
    let mut worst = 0f32;
    for w in random_words(200, 14) {
        cpu.step(&mut a, w);
        device.step(&mut b, w).unwrap();
        cpu.type_logits(&a, &mut ta);
        device.step_type_logits(&b, &mut tb).unwrap();
        cpu.family_logits(&mut a, w.0[Family::Type.index()] % 3, &mut families);
        device.step_family_logits(&b, w.0[Family::Type.index()] % 3, &mut on_device).unwrap();
        worst = worst.max(ta.iter().zip(&tb).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max));
        for (x, y) in families.iter().zip(&on_device) {
            worst = worst.max(x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max));
        }
    }
    assert!(worst < 1e-4, "device logits differ by {worst}");
    let settings = GenerationSettings { seed: 2, max_words: 300, min_bars: 0, ..GenerationSettings::default() };
    let mut g1 = Generator::new(&cpu, settings.clone());
    g1.run_to_end();
    let inference = Inference::Device(Box::new(device));
    let mut g2 = Generator::try_with_prime(&inference, settings, &[Word::BAR]).unwrap();
    g2.run_to_end();
    assert_eq!(g1.words(), g2.words());
    assert!(g2.error().is_none());
}
