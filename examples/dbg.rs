use std::collections::HashMap;
use candle_core::{Device, Tensor, D};
use cp_piano::cp::{Family, Word};
use cp_piano::model::config::Config;
use cp_piano::model::cp_rnn::{CpRnn, Precision};
use cp_piano::model::cp_transformer::positional_encoding;
use cp_piano::model::Trainable;
fn main() {
    let config = Config { n_layers: 1, d_model: 64, n_heads: 4, d_ff: 128, ..Config::preset("tiny").unwrap() };
    let model = Trainable::new(&config, 7, &Device::Cpu).unwrap();
    let w = Word([3, 5, 2, 1, 0, 0, 0]);
    let ids = Tensor::from_vec(w.0.iter().map(|&v| v as u32).collect::<Vec<_>>(), (1, 1, 7), &Device::Cpu).unwrap();
    let ids = Tensor::cat(&vec![ids; 64], 1).unwrap();
    let pos: Vec<u32> = (0..64).collect();
    let pe = Tensor::from_vec(positional_encoding(&pos, 64), (1, 64, 64), &Device::Cpu).unwrap();
    let hidden = model.model.hidden(&ids, &pe, None).unwrap();
    let emb: Vec<Tensor> = Family::ALL.iter().map(|&f| (model.model.embeddings[f.index()].forward(&ids.narrow(D::Minus1, f.index(), 1).unwrap().squeeze(D::Minus1).unwrap()).unwrap() * (config.emb_sizes[f.index()] as f64).sqrt()).unwrap()).collect();
    let x0 = (model.model.in_linear.forward(&Tensor::cat(&emb, D::Minus1).unwrap()).unwrap() + &pe).unwrap();
    let tensors: HashMap<String, Tensor> = model.named_tensors().into_iter().collect();
    let rnn = CpRnn::from_tensors(&config, &tensors, Precision::F32).unwrap();
    let mut st = rnn.new_state();
    rnn.step(&mut st, w);
    let h: Vec<f32> = hidden.squeeze(0).unwrap().get(0).unwrap().to_vec1().unwrap();
    let x: Vec<f32> = x0.squeeze(0).unwrap().get(0).unwrap().to_vec1().unwrap();
    println!("x0 {:?}", &x[..4]);
    println!("h  {:?}", &h[..4]);
    println!("rnn {:?}", &st.hidden[..4]);
}
use candle_core::Module;
