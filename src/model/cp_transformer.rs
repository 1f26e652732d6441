//! The CP linear transformer in candle (training form), after Hsiao et al. (AAAI 2021).
//!
//! Read top to bottom: per-family embeddings scaled by sqrt(size) -> concatenation -> Linear to
//! d_model -> sinusoidal positional encoding of the word's true position in its song -> dropout
//! -> post-LN layers of causal linear attention (feature map elu(x)+1, eps 1e-6) and a GELU FFN
//! -> final LayerNorm -> the type head; then Linear(d + type embedding -> d) feeds the six other
//! family heads. Teacher forcing feeds the target type to that second stage.
//!
//! Attention is `fused::linear_attention`, in chunks of `CHUNK` words: quadratic inside a chunk,
//! prefix states across chunks; this is exactly the recurrence of `cp_rnn` (a test checks it).
//! The layers a hybrid config names (`Config::softmax_layers`) attend instead by causal softmax
//! over the last `Config::window` words (`fused::window_attention`); in recurrent form they
//! keep those words' keys and values. `step` is the recurrence on the model's own device,
//! which is how generation runs on CUDA. This module
//! knows tensors and the CP vocabulary only: no plugin, no files besides safetensors.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, VarBuilder};

use crate::tokens::cp::{Family, Word, FAMILIES};
use crate::model::config::Config;
use crate::model::cpu;
use crate::model::fused;
use crate::data::batches::Batch;
use crate::model::layers::{Dropout, Linear, Norm};

/// Words per attention chunk in the training form.
pub const CHUNK: usize = fused::attention::CHUNK;
/// Added to the attention normaliser (as in fast-transformers).
pub const ATTENTION_EPS: f64 = fused::attention::EPS as f64;

/// The families predicted after the type, in head order.
pub const AFTER_TYPE: [Family; 6] =
    [Family::Tempo, Family::Chord, Family::BarBeat, Family::Pitch, Family::Duration, Family::Velocity];

/// How a layer attends to the words before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attention {
    /// Causal linear attention over the whole song (the paper's).
    Linear,
    /// Causal softmax attention over the last this many words.
    Window(usize),
}

impl Attention {
    /// Layer `layer`'s attention under `config`.
    pub fn of(config: &Config, layer: usize) -> Attention {
        if config.is_softmax(layer) {
            Attention::Window(config.window)
        } else {
            Attention::Linear
        }
    }
}

/// One post-LN layer: x = LN(x + Drop(Attn(x))); x = LN(x + Drop(FFN(x))).
#[derive(Debug, Clone)]
pub struct Layer {
    pub attention: Attention,
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub out: Linear,
    pub norm1: Norm,
    pub ffn_in: Linear,
    pub ffn_out: Linear,
    pub norm2: Norm,
}

/// residual + drop(x), or the plain sum without dropout (validation, generation).
fn residual(residual: &Tensor, x: &Tensor, dropout: &mut Option<&mut Dropout>) -> Result<Tensor> {
    match dropout.as_deref_mut() {
        Some(drop) => drop.add_to(residual, x),
        None => residual + x,
    }
}

impl Layer {
    fn new(vb: VarBuilder, c: &Config, index: usize) -> Result<Layer> {
        let d = c.d_model;
        Ok(Layer {
            attention: Attention::of(c, index),
            query: Linear::new(vb.pp("query"), d, d)?,
            key: Linear::new(vb.pp("key"), d, d)?,
            value: Linear::new(vb.pp("value"), d, d)?,
            out: Linear::new(vb.pp("out"), d, d)?,
            norm1: Norm::new(vb.pp("norm1"), d)?,
            ffn_in: Linear::new(vb.pp("ffn_in"), d, c.d_ff)?,
            ffn_out: Linear::new(vb.pp("ffn_out"), c.d_ff, d)?,
            norm2: Norm::new(vb.pp("norm2"), d)?,
        })
    }

    fn forward(&self, x: &Tensor, heads: usize, dropout: &mut Option<&mut Dropout>) -> Result<Tensor> {
        let (q, k, v) = (self.query.forward(x)?, self.key.forward(x)?, self.value.forward(x)?);
        let attended = match self.attention {
            Attention::Linear => fused::linear_attention(&q, &k, &v, heads)?,
            Attention::Window(window) => fused::window_attention(&q, &k, &v, heads, window)?,
        };
        let attended = self.out.forward(&attended)?;
        let x = self.norm1.forward(&residual(x, &attended, dropout)?)?;
        let ffn = self.ffn_out.forward(&fused::gelu(&self.ffn_in.forward(&x)?)?)?;
        self.norm2.forward(&residual(&x, &ffn, dropout)?)
    }
}

/// The CP linear transformer.
#[derive(Debug, Clone)]
pub struct CpTransformer {
    pub config: Config,
    pub embeddings: Vec<Embedding>,
    pub in_linear: Linear,
    pub layers: Vec<Layer>,
    pub final_norm: Norm,
    pub type_head: Linear,
    pub type_concat: Linear,
    /// Heads for `AFTER_TYPE`, in that order.
    pub heads: Vec<Linear>,
}

impl CpTransformer {
    pub fn new(config: &Config, vb: VarBuilder) -> Result<CpTransformer> {
        config.validate().map_err(candle_core::Error::msg)?;
        let c = config;
        let embeddings = Family::ALL
            .iter()
            .map(|f| candle_nn::embedding(c.vocab_sizes[f.index()], c.emb_sizes[f.index()], vb.pp("embed").pp(f.name())))
            .collect::<Result<Vec<_>>>()?;
        let layers = (0..c.n_layers).map(|i| Layer::new(vb.pp("layers").pp(i), c, i)).collect::<Result<Vec<_>>>()?;
        let heads = AFTER_TYPE
            .iter()
            .map(|f| Linear::new(vb.pp("head").pp(f.name()), c.d_model, c.vocab_sizes[f.index()]))
            .collect::<Result<Vec<_>>>()?;
        Ok(CpTransformer {
            config: c.clone(),
            embeddings,
            in_linear: Linear::new(vb.pp("in_linear"), c.emb_total(), c.d_model)?,
            layers,
            final_norm: Norm::new(vb.pp("final_norm"), c.d_model)?,
            type_head: Linear::new(vb.pp("head").pp("type"), c.d_model, c.vocab_sizes[Family::Type.index()])?,
            type_concat: Linear::new(vb.pp("type_concat"), c.d_model + c.emb_sizes[Family::Type.index()], c.d_model)?,
            heads,
        })
    }

    /// Embeds one family's ids scaled by sqrt(embedding size).
    fn embed(&self, family: Family, ids: &Tensor) -> Result<Tensor> {
        self.embeddings[family.index()].forward(ids)? * (self.config.emb_sizes[family.index()] as f64).sqrt()
    }

    /// The layers' input for words (batch, time, 7): embeddings, concatenated, projected.
    fn embed_words(&self, inputs: &Tensor) -> Result<Tensor> {
        let embedded = Family::ALL
            .iter()
            .map(|&f| self.embed(f, &inputs.narrow(D::Minus1, f.index(), 1)?.squeeze(D::Minus1)?))
            .collect::<Result<Vec<_>>>()?;
        self.in_linear.forward(&Tensor::cat(&embedded, D::Minus1)?)
    }

    /// Hidden states (batch, time, d) for input words (batch, time, 7) at encoded positions.
    pub fn hidden(&self, inputs: &Tensor, positions: &Tensor, mut dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let mut x = (self.embed_words(inputs)? + positions)?;
        if let Some(drop) = dropout.as_deref_mut() {
            x = drop.apply(&x)?;
        }
        for layer in &self.layers {
            x = layer.forward(&x, self.config.n_heads, &mut dropout)?;
        }
        self.final_norm.forward(&x)
    }

    /// Logits of all seven families (family order) given hidden states and the type that
    /// conditions the other six (the target type in training, the sampled one in generation).
    pub fn logits(&self, hidden: &Tensor, types: &Tensor) -> Result<Vec<Tensor>> {
        let type_logits = self.type_head.forward(hidden)?;
        let type_emb = self.embed(Family::Type, types)?;
        let conditioned = self.type_concat.forward(&Tensor::cat(&[hidden, &type_emb], D::Minus1)?)?;
        let mut out: Vec<Option<Tensor>> = vec![None; FAMILIES];
        out[Family::Type.index()] = Some(type_logits);
        for (head, family) in self.heads.iter().zip(AFTER_TYPE) {
            out[family.index()] = Some(head.forward(&conditioned)?);
        }
        Ok(out.into_iter().map(|t| t.expect("every family has a head")).collect())
    }

    /// Teacher-forced loss: the mean over the seven families of each family's masked
    /// cross-entropy. Returns (loss, per-family losses as a (7,) tensor).
    pub fn loss(&self, batch: &Batch, dropout: Option<&mut Dropout>) -> Result<(Tensor, Tensor)> {
        let hidden = self.hidden(&batch.inputs, &batch.positions, dropout)?;
        let target_types = batch.targets.narrow(D::Minus1, Family::Type.index(), 1)?.squeeze(D::Minus1)?;
        let logits = self.logits(&hidden, &target_types)?;
        let count = batch.mask.sum_all()?.maximum(1.0)?;
        let mut per_family = Vec::with_capacity(FAMILIES);
        for (f, l) in logits.iter().enumerate() {
            let target = batch.targets.narrow(D::Minus1, f, 1)?;
            let log_probs = candle_nn::ops::log_softmax(l, D::Minus1)?;
            let picked = log_probs.gather(&target.contiguous()?, D::Minus1)?.squeeze(D::Minus1)?;
            per_family.push((picked.mul(&batch.mask)?.sum_all()?.neg()? / &count)?);
        }
        let per_family = Tensor::stack(&per_family, 0)?;
        Ok((per_family.mean_all()?, per_family))
    }
}

/// A layer's memory of the words so far in recurrent form.
#[derive(Clone)]
enum Memory {
    /// Linear attention: the sums S = sum phi(k) v^T (heads, dh, dh) and z = sum phi(k)
    /// (heads, 1, dh).
    Sums { s: Tensor, z: Tensor },
    /// Window attention: the keys and values of the last words (heads, words, dh), at most
    /// the window.
    Window { keys: Option<Tensor>, values: Option<Tensor> },
}

/// The recurrent form on the model's own device (how generation runs on CUDA): each layer's
/// memory, the next word's position, and the hidden state after the last word.
#[derive(Clone)]
pub struct DeviceState {
    memory: Vec<Memory>,
    pub position: usize,
    hidden: Tensor,
}

impl DeviceState {
    /// Bytes this state holds on its device.
    pub fn bytes(&self) -> usize {
        let memory: usize = self
            .memory
            .iter()
            .map(|m| match m {
                Memory::Sums { s, z } => s.elem_count() + z.elem_count(),
                Memory::Window { keys, values } => keys.iter().chain(values).map(Tensor::elem_count).sum(),
            })
            .sum();
        (memory + self.hidden.elem_count()) * std::mem::size_of::<f32>()
    }
}

/// `kept` with `new` appended along the words, keeping the last `window`.
fn append_window(kept: &Option<Tensor>, new: &Tensor, window: usize) -> Result<Tensor> {
    let all = match kept {
        Some(kept) => Tensor::cat(&[kept, new], 1)?,
        None => new.clone(),
    };
    let words = all.dim(1)?;
    if words > window {
        all.narrow(1, words - window, window)?.contiguous()
    } else {
        Ok(all)
    }
}

impl Layer {
    /// One word through the layer in recurrent form; x: (1, d).
    fn step(&self, x: &Tensor, memory: &mut Memory, heads: usize) -> Result<Tensor> {
        let d = x.dim(1)?;
        let dh = d / heads;
        let (q, k) = (self.query.forward(x)?, self.key.forward(x)?);
        let v = self.value.forward(x)?.reshape((heads, 1, dh))?;
        let attended = match (self.attention, memory) {
            (Attention::Linear, Memory::Sums { s, z }) => {
                let q = fused::feature_map(&q)?.reshape((heads, 1, dh))?;
                let k = fused::feature_map(&k)?.reshape((heads, 1, dh))?;
                *s = (&*s + k.transpose(1, 2)?.matmul(&v)?)?;
                *z = (&*z + &k)?;
                let num = q.matmul(s)?;
                let den = ((&q * &*z)?.sum_keepdim(D::Minus1)? + ATTENTION_EPS)?;
                num.broadcast_div(&den)?
            }
            (Attention::Window(window), Memory::Window { keys, values }) => {
                let q = (q.reshape((heads, 1, dh))? * (1.0 / (dh as f64).sqrt()))?;
                let all_keys = append_window(keys, &k.reshape((heads, 1, dh))?, window)?;
                let all_values = append_window(values, &v, window)?;
                let p = candle_nn::ops::softmax_last_dim(&q.matmul(&all_keys.t()?)?)?;
                let out = p.matmul(&all_values)?;
                (*keys, *values) = (Some(all_keys), Some(all_values));
                out
            }
            _ => candle_core::bail!("a layer's recurrent memory does not match its attention"),
        };
        let attended = attended.reshape((1, d))?;
        let x = self.norm1.forward(&(x + self.out.forward(&attended)?)?)?;
        let ffn = self.ffn_out.forward(&fused::gelu(&self.ffn_in.forward(&x)?)?)?;
        self.norm2.forward(&(x + ffn)?)
    }
}

impl CpTransformer {
    /// An empty recurrent state on the model's device.
    pub fn new_state(&self) -> Result<DeviceState> {
        let c = &self.config;
        let (h, dh) = (c.n_heads, c.head_dim());
        let device = self.in_linear.weight.device();
        let memory = |layer: &Layer| -> Result<Memory> {
            Ok(match layer.attention {
                Attention::Linear => Memory::Sums { s: Tensor::zeros((h, dh, dh), DType::F32, device)?, z: Tensor::zeros((h, 1, dh), DType::F32, device)? },
                Attention::Window(_) => Memory::Window { keys: None, values: None },
            })
        };
        Ok(DeviceState {
            memory: self.layers.iter().map(memory).collect::<Result<_>>()?,
            position: 0,
            hidden: Tensor::zeros((1, c.d_model), DType::F32, device)?,
        })
    }

    /// Feeds one word at the state's position (ids outside their family read as ignore).
    pub fn step(&self, state: &mut DeviceState, word: Word) -> Result<()> {
        let c = &self.config;
        let device = self.in_linear.weight.device();
        let ids: Vec<u32> = (0..FAMILIES).map(|f| if (word.0[f] as usize) < c.vocab_sizes[f] { word.0[f] as u32 } else { 0 }).collect();
        let ids = Tensor::from_vec(ids, (1, FAMILIES), device)?;
        let position = Tensor::from_vec(cpu::positional_encoding(&[state.position as u32], c.d_model), (1, c.d_model), device)?;
        let mut x = (self.embed_words(&ids)? + position)?;
        for (layer, memory) in self.layers.iter().zip(&mut state.memory) {
            x = layer.step(&x, memory, c.n_heads)?;
        }
        state.hidden = self.final_norm.forward(&x)?;
        state.position += 1;
        Ok(())
    }

    /// Type logits of the next word, into `out` (3 values).
    pub fn step_type_logits(&self, state: &DeviceState, out: &mut [f32]) -> Result<()> {
        let logits = self.type_head.forward(&state.hidden)?.flatten_all()?.to_vec1::<f32>()?;
        out.copy_from_slice(&logits);
        Ok(())
    }

    /// Logits of the six other families of the next word given its type, into `out` (family
    /// order; the type entry is left as it is). One transfer from the device.
    pub fn step_family_logits(&self, state: &DeviceState, word_type: u16, out: &mut [Vec<f32>; FAMILIES]) -> Result<()> {
        let device = self.in_linear.weight.device();
        let t = (word_type as u32).min(self.config.vocab_sizes[Family::Type.index()] as u32 - 1);
        let types = Tensor::from_vec(vec![t], 1, device)?;
        let logits = self.logits(&state.hidden, &types)?;
        let after: Vec<Tensor> = AFTER_TYPE.iter().map(|f| logits[f.index()].flatten_all()).collect::<Result<_>>()?;
        let all = Tensor::cat(&after, 0)?.to_vec1::<f32>()?;
        let mut at = 0;
        for f in AFTER_TYPE {
            let n = out[f.index()].len();
            out[f.index()].copy_from_slice(&all[at..at + n]);
            at += n;
        }
        Ok(())
    }
}

/// Counts parameters of a model built from `config` (without building its tensors' values).
pub fn parameter_count(config: &Config) -> usize {
    let d = config.d_model;
    let linear = |i: usize, o: usize| i * o + o;
    let embeddings: usize = config.vocab_sizes.iter().zip(config.emb_sizes).map(|(v, e)| v * e).sum();
    let layer = 4 * linear(d, d) + linear(d, config.d_ff) + linear(config.d_ff, d) + 4 * d;
    let heads: usize = config.vocab_sizes.iter().map(|&v| linear(d, v)).sum();
    embeddings
        + linear(config.emb_total(), d)
        + config.n_layers * layer
        + 2 * d
        + linear(d + config.emb_sizes[Family::Type.index()], d)
        + heads
}

/// The device to run on: CUDA when asked for, built with the `cuda` feature and present.
pub fn device(want_cuda: bool) -> Result<Device> {
    if want_cuda {
        Device::new_cuda(0)
    } else {
        Ok(Device::Cpu)
    }
}
