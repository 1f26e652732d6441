//! The REMI Transformer-XL token by token, in plain Rust: what generation runs, as the seed's
//! generator did (one token per step, each layer's memory the last `mem_len` inputs).
//!
//! A memory entry's key and value depend only on that token's layer input, so they are kept
//! (a ring of `mem_len + 1` per layer) instead of being recomputed from the memory at every
//! step; the relative-position keys `r_net(encoding(distance))` for distances 0..=mem_len are
//! computed once at load. The result equals `remi_xl::RemiXl::forward` fed one token at a time
//! with its memories (a test checks it). Nothing here knows candle beyond reading tensors.

use std::collections::HashMap;

use candle_core::Tensor;

use crate::model::cpu::{dot, expect_shape, layer_norm, relative_encoding, tensor_f32, Linear, LoadError, Norm, Precision};
use crate::model::remi_xl::XlConfig;

struct StreamLayer {
    norm1: Norm,
    qkv: Linear,
    o_net: Linear,
    norm2: Norm,
    ffn_in: Linear,
    ffn_out: Linear,
    /// r_net(encoding(distance)) for distance 0..=mem_len: (mem_len + 1) x attention width.
    relative_keys: Vec<f32>,
}

/// The model's weights for streaming.
pub struct RemiXlStream {
    pub config: XlConfig,
    embedding: Vec<f32>,
    layers: Vec<StreamLayer>,
    r_w_bias: Vec<f32>,
    r_r_bias: Vec<f32>,
    out: Linear,
}

/// One song's memory: per layer, keys and values of the last tokens, and scratch buffers.
#[derive(Clone)]
pub struct StreamState {
    /// Per layer: (mem_len + 1) slots of keys, then of values (attention width each).
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    /// Tokens fed so far.
    pub tokens: usize,
    x: Vec<f32>,
    normed: Vec<f32>,
    qkv: Vec<f32>,
    scores: Vec<f32>,
    attended: Vec<f32>,
    tmp: Vec<f32>,
    ffn: Vec<f32>,
    /// Logits of the next token after the last one fed.
    pub logits: Vec<f32>,
}

impl RemiXlStream {
    /// Builds the streaming model from named tensors (the names `remi_xl` uses).
    pub fn from_tensors(config: &XlConfig, tensors: &HashMap<String, Tensor>, precision: Precision) -> Result<RemiXlStream, LoadError> {
        config.validate().map_err(LoadError::Config)?;
        let c = config;
        let (d, a) = (c.d_model, c.attention_width());
        let (embedding, dims) = tensor_f32(tensors, "word_embedding.weight")?;
        expect_shape("word_embedding.weight", &dims, &[c.vocab_size, d])?;
        let scale = (d as f32).sqrt();
        let embedding = embedding.into_iter().map(|v| v * scale).collect();
        let distances: Vec<f32> = (0..=c.mem_len).map(|p| p as f32).collect();
        let encodings = relative_encoding(&distances, d);
        let mut layers = Vec::new();
        for i in 0..c.n_layers {
            let p = format!("layers.{i}");
            let r_net = Linear::load_without_bias(tensors, &format!("{p}.r_net"), a, d, Precision::F32)?;
            let mut relative_keys = vec![0f32; (c.mem_len + 1) * a];
            for (row, enc) in relative_keys.chunks_mut(a).zip(encodings.chunks(d)) {
                r_net.forward(enc, row);
            }
            layers.push(StreamLayer {
                norm1: Norm::load(tensors, &format!("{p}.norm1"), d)?,
                qkv: Linear::load_without_bias(tensors, &format!("{p}.qkv"), 3 * a, d, precision)?,
                o_net: Linear::load_without_bias(tensors, &format!("{p}.o_net"), d, a, precision)?,
                norm2: Norm::load(tensors, &format!("{p}.norm2"), d)?,
                ffn_in: Linear::load(tensors, &format!("{p}.ffn_in"), c.d_ff, d, precision)?,
                ffn_out: Linear::load(tensors, &format!("{p}.ffn_out"), d, c.d_ff, precision)?,
                relative_keys,
            });
        }
        let bias = |name: &str| -> Result<Vec<f32>, LoadError> {
            let (v, dims) = tensor_f32(tensors, name)?;
            expect_shape(name, &dims, &[c.n_heads, c.d_head])?;
            Ok(v)
        };
        Ok(RemiXlStream {
            config: c.clone(),
            embedding,
            layers,
            r_w_bias: bias("r_w_bias")?,
            r_r_bias: bias("r_r_bias")?,
            out: Linear::load(tensors, "out", c.vocab_size, d, precision)?,
        })
    }

    /// An empty memory.
    pub fn new_state(&self) -> StreamState {
        let c = &self.config;
        let (d, a, slots) = (c.d_model, c.attention_width(), c.mem_len + 1);
        StreamState {
            keys: vec![vec![0.0; slots * a]; c.n_layers],
            values: vec![vec![0.0; slots * a]; c.n_layers],
            tokens: 0,
            x: vec![0.0; d],
            normed: vec![0.0; d],
            qkv: vec![0.0; 3 * a],
            scores: vec![0.0; slots],
            attended: vec![0.0; a],
            tmp: vec![0.0; d],
            ffn: vec![0.0; c.d_ff],
            logits: vec![0.0; c.vocab_size],
        }
    }

    /// Feeds one token; afterwards `state.logits` holds the next token's logits. Ids outside the
    /// vocabulary are read as 0 (Bar).
    pub fn step(&self, state: &mut StreamState, token: u16) {
        let c = &self.config;
        let (d, h, dh, a) = (c.d_model, c.n_heads, c.d_head, c.attention_width());
        let slots = c.mem_len + 1;
        let id = if (token as usize) < c.vocab_size { token as usize } else { 0 };
        state.x.copy_from_slice(&self.embedding[id * d..(id + 1) * d]);
        // The newest token takes slot `tokens % slots`; the visible ones are the last
        // min(tokens, mem_len) before it and itself.
        let slot = state.tokens % slots;
        let visible = state.tokens.min(c.mem_len) + 1;
        let scale = 1.0 / (dh as f32).sqrt();
        for (l, layer) in self.layers.iter().enumerate() {
            state.normed.copy_from_slice(&state.x);
            layer_norm(&mut state.normed, &layer.norm1.weight, &layer.norm1.bias);
            layer.qkv.forward(&state.normed, &mut state.qkv);
            state.keys[l][slot * a..(slot + 1) * a].copy_from_slice(&state.qkv[a..2 * a]);
            state.values[l][slot * a..(slot + 1) * a].copy_from_slice(&state.qkv[2 * a..]);
            for head in 0..h {
                let span = head * dh..(head + 1) * dh;
                let query = &state.qkv[span.clone()];
                let mut q_content = [0f32; 256];
                let mut q_position = [0f32; 256];
                for i in 0..dh {
                    q_content[i] = query[i] + self.r_w_bias[head * dh + i];
                    q_position[i] = query[i] + self.r_r_bias[head * dh + i];
                }
                let mut max = f32::NEG_INFINITY;
                for distance in 0..visible {
                    let s = (slot + slots - distance) % slots;
                    let key = &state.keys[l][s * a + head * dh..s * a + (head + 1) * dh];
                    let rel = &layer.relative_keys[distance * a + head * dh..distance * a + (head + 1) * dh];
                    let score = (dot(&q_content[..dh], key) + dot(&q_position[..dh], rel)) * scale;
                    state.scores[distance] = score;
                    max = max.max(score);
                }
                let mut total = 0f32;
                for score in &mut state.scores[..visible] {
                    *score = (*score - max).exp();
                    total += *score;
                }
                let out = &mut state.attended[span];
                out.iter_mut().for_each(|o| *o = 0.0);
                for distance in 0..visible {
                    let s = (slot + slots - distance) % slots;
                    let p = state.scores[distance] / total;
                    let value = &state.values[l][s * a + head * dh..s * a + (head + 1) * dh];
                    for (o, v) in out.iter_mut().zip(value) {
                        *o += p * v;
                    }
                }
            }
            layer.o_net.forward(&state.attended, &mut state.tmp);
            state.x.iter_mut().zip(&state.tmp).for_each(|(x, t)| *x += t);
            state.normed.copy_from_slice(&state.x);
            layer_norm(&mut state.normed, &layer.norm2.weight, &layer.norm2.bias);
            layer.ffn_in.forward(&state.normed, &mut state.ffn);
            state.ffn.iter_mut().for_each(|v| *v = v.max(0.0));
            layer.ffn_out.forward(&state.ffn, &mut state.tmp);
            state.x.iter_mut().zip(&state.tmp).for_each(|(x, t)| *x += t);
        }
        self.out.forward(&state.x, &mut state.logits);
        state.tokens += 1;
    }
}
