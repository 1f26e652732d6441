//! The REMI Transformer-XL baseline: exact parameter count, gradient reach across segments,
//! segment recurrence with memory equal to one pass over the whole sequence, and the
//! token-by-token generator equal to the candle model fed one token at a time.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor, D};
use cp_piano::model::cpu::Precision;
use cp_piano::data::batches::Batch;
use cp_piano::model::layers::Dropout;
use cp_piano::model::init::Rng;
use cp_piano::model::remi_xl::{RemiXl, XlConfig};
use cp_piano::model::remi_xl_stream::RemiXlStream;
use cp_piano::model::{Network, Trainable};
use cp_piano::tokens::remi::VOCAB_SIZE;

fn random_tokens(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| (rng.next_u64() % VOCAB_SIZE as u64) as u32).collect()
}

fn xl(model: &Trainable) -> &RemiXl {
    match &model.network {
        Network::RemiXl(m) => m,
        Network::Cp(_) => unreachable!(),
    }
}

fn row(tokens: &[u32]) -> Tensor {
    Tensor::from_vec(tokens.to_vec(), (1, tokens.len()), &Device::Cpu).unwrap()
}

fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(D::Minus1).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn the_paper_preset_has_exactly_41_291_084_parameters() {
    assert_eq!(XlConfig::paper().parameter_count(), 41_291_084);
    let model = Trainable::new(XlConfig::paper(), 0, &Device::Cpu).unwrap();
    assert_eq!(model.parameter_count(), 41_291_084);
    // The small preset is at the CP small preset's budget (5,111,606) within 5 %.
    let small = Trainable::new(XlConfig::small(), 0, &Device::Cpu).unwrap();
    assert_eq!(small.parameter_count(), XlConfig::small().parameter_count());
    assert!((small.parameter_count() as f64 / 5_111_606.0 - 1.0).abs() < 0.05, "{}", small.parameter_count());
}

#[test]
fn every_parameter_receives_a_gradient_over_several_segments() {
    let config = XlConfig::preset("tiny").unwrap();
    let model = Trainable::new(config.clone(), 1, &Device::Cpu).unwrap();
    let (b, t) = (2, 3 * config.seq_len + 10);
    let tokens = random_tokens(b * (t + 1), 2);
    let inputs: Vec<u32> = (0..b).flat_map(|r| tokens[r * (t + 1)..r * (t + 1) + t].to_vec()).collect();
    let targets: Vec<u32> = (0..b).flat_map(|r| tokens[r * (t + 1) + 1..(r + 1) * (t + 1)].to_vec()).collect();
    let mut mask = vec![1f32; b * t];
    mask[t - 5..t].iter_mut().for_each(|m| *m = 0.0); // padding at the end of the first row
    let batch = Batch {
        inputs: Tensor::from_vec(inputs, (b, t, 1), &Device::Cpu).unwrap(),
        targets: Tensor::from_vec(targets, (b, t, 1), &Device::Cpu).unwrap(),
        mask: Tensor::from_vec(mask, (b, t), &Device::Cpu).unwrap(),
        positions: Tensor::zeros((b, t, config.d_model), candle_core::DType::F32, &Device::Cpu).unwrap(),
    };
    let (loss, per_token) = model.loss(&batch, Some(&mut Dropout::new(0.1, 3))).unwrap();
    let value = loss.to_scalar::<f32>().unwrap();
    // A random model is near uniform over the 332 tokens.
    assert!((value - (VOCAB_SIZE as f32).ln()).abs() < 1.5, "loss {value}");
    assert_eq!(per_token.dims(), [1]);
    common::assert_every_parameter_has_a_gradient(&model, &loss);
}

#[test]
fn two_segments_with_memory_give_the_logits_of_one_pass() {
    // With a memory at least as long as the first segment, the second segment sees exactly the
    // hidden states a single pass over both would: the logits must agree.
    let config = XlConfig { mem_len: 40, ..XlConfig::preset("tiny").unwrap() };
    let model = Trainable::new(config, 5, &Device::Cpu).unwrap();
    let model = xl(&model);
    let tokens = random_tokens(70, 6);
    let (first, second) = tokens.split_at(40);
    let (_, mems) = model.forward(&row(first), &[], None).unwrap();
    assert_eq!(mems[0].dims(), [1, 40, 64]);
    let (by_segments, _) = model.forward(&row(second), &mems, None).unwrap();
    let (whole, _) = model.forward(&row(&tokens), &[], None).unwrap();
    let whole_tail = whole.narrow(1, 40, 30).unwrap();
    let diff = max_difference(&by_segments, &whole_tail);
    assert!(diff < 1e-4, "segment logits differ from one pass by {diff}");
    // And the memory matters: without it, the second segment's logits change.
    let (alone, _) = model.forward(&row(second), &[], None).unwrap();
    assert!(max_difference(&alone, &whole_tail) > 1e-2);
}

#[test]
fn token_by_token_generation_equals_the_model_with_a_sliding_memory() {
    // 60 tokens through a memory of 16: the memory slides, as in generation.
    let config = XlConfig { mem_len: 16, ..XlConfig::preset("tiny").unwrap() };
    let trainable = Trainable::new(config.clone(), 9, &Device::Cpu).unwrap();
    let model = xl(&trainable);
    let tensors: HashMap<String, Tensor> = trainable.named_tensors().into_iter().collect();
    let stream = RemiXlStream::from_tensors(&config, &tensors, Precision::F32).unwrap();
    let mut state = stream.new_state();
    let mut mems: Vec<Tensor> = Vec::new();
    let mut worst = 0f32;
    for &token in &random_tokens(60, 10) {
        let (logits, next) = model.forward(&row(&[token]), &mems, None).unwrap();
        mems = next;
        stream.step(&mut state, token as u16);
        let expected = logits.flatten_all().unwrap();
        let got = Tensor::from_vec(state.logits.clone(), VOCAB_SIZE, &Device::Cpu).unwrap();
        worst = worst.max(max_difference(&expected, &got));
    }
    assert_eq!(mems[0].dims(), [1, 16, 64]);
    assert!(worst < 1e-4, "streamed logits differ by {worst}");
}
