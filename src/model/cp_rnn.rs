//! The CP linear transformer in recurrent form, in plain Rust: O(1) work per word, no
//! allocation per step, one thread. This is what generation (CLI and plugin worker) runs.
//!
//! Per layer and head the state is S = sum phi(k) v^T and z = sum phi(k) over the words so far;
//! the attention output for a query is phi(q)^T S / (phi(q)^T z + eps). This equals the chunked
//! training form of `cp_transformer` (a test checks 300 steps against it). A hybrid config's
//! softmax layers keep instead the keys and values of the last `window` words in a ring
//! (`ring`: f32 with f32 weights, bf16 with int8 weights), and attend by softmax over them:
//! O(window) per word, still bounded.
//!
//! Weights are f32 or, in the fast path, int8 in blocks of 32 with one scale each (quantised
//! at load; the input vector is quantised the same way per word). Nothing here knows candle beyond reading tensors at load time.

use std::collections::HashMap;

use candle_core::Tensor;

mod ring;

use crate::tokens::cp::{Family, Word, FAMILIES};
use crate::model::config::Config;
use crate::model::cp_transformer::{Attention, ATTENTION_EPS, AFTER_TYPE};
use crate::model::fused::activation::gelu_slice as gelu;
use crate::model::fused::attention::phi;
use crate::model::fused::simd::{lane_dot, multiversion};
use ring::Ring;
use crate::model::cpu::{add_positional_encoding, layer_norm, sinusoid_rates, tensor_f32, expect_shape, Linear, LoadError, Norm, Precision, MAX_ROWS};

struct Layer {
    attention: Attention,
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
    norm1: Norm,
    ffn_in: Linear,
    ffn_out: Linear,
    norm2: Norm,
}

/// The recurrent model (weights only; the state lives in `RnnState`).
pub struct CpRnn {
    pub config: Config,
    pub precision: Precision,
    embeddings: Vec<Vec<f32>>,
    in_linear: Linear,
    layers: Vec<Layer>,
    final_norm: Norm,
    type_head: Linear,
    type_concat: Linear,
    heads: Vec<Linear>,
    /// Inverse frequencies of the positional encoding (`cpu::sinusoid_rates`).
    pe_rates: Vec<f64>,
}

/// A layer's memory of the words so far.
#[derive(Clone)]
enum Memory {
    /// Linear attention: S (heads x head_dim x head_dim) and z (heads x head_dim).
    Sums { s: Vec<f32>, z: Vec<f32> },
    /// Window attention: the keys and values of the last `window` words.
    Window(Ring),
}

/// Per-song state: each layer's memory, the last hidden state, and work buffers (allocated
/// once).
#[derive(Clone)]
pub struct RnnState {
    memory: Vec<Memory>,
    /// Words fed so far (the position of the next word).
    pub position: usize,
    /// The final hidden state after the last word.
    pub hidden: Vec<f32>,
    /// Work buffers for this song alone.
    rows: Rows,
}

/// Work buffers for `n` songs advanced together (one row each): the activations of one word
/// per song between the layers.
#[derive(Clone, Default)]
pub struct Rows {
    n: usize,
    emb: Vec<f32>,
    x: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    q_phi: Vec<f32>,
    k_phi: Vec<f32>,
    att: Vec<f32>,
    tmp: Vec<f32>,
    ffn: Vec<f32>,
    ffn_gelu: Vec<f32>,
    concat: Vec<f32>,
    conditioned: Vec<f32>,
    logits: Vec<f32>,
    /// Each head's attention weights over a window (heads x window).
    scores: Vec<f32>,
}

impl RnnState {
    /// Bytes this state holds (its memory, hidden state and work buffers).
    pub fn bytes(&self) -> usize {
        let memory: usize = self
            .memory
            .iter()
            .map(|m| match m {
                Memory::Sums { s, z } => (s.len() + z.len()) * std::mem::size_of::<f32>(),
                Memory::Window(ring) => ring.bytes(),
            })
            .sum();
        let r = &self.rows;
        let rows = [&r.emb, &r.x, &r.q, &r.k, &r.v, &r.q_phi, &r.k_phi, &r.att, &r.tmp, &r.ffn, &r.ffn_gelu, &r.concat, &r.conditioned, &r.logits, &r.scores]
            .iter()
            .map(|b| b.len())
            .sum::<usize>();
        memory + (self.hidden.len() + rows) * std::mem::size_of::<f32>()
    }
}

impl Rows {
    /// Buffers for up to `n` songs (n <= `cpu::MAX_ROWS`).
    pub fn new(config: &Config, n: usize) -> Rows {
        assert!((1..=MAX_ROWS).contains(&n), "1..={MAX_ROWS} songs at once");
        let d = config.d_model;
        let widest_head = AFTER_TYPE.iter().map(|f| config.vocab_sizes[f.index()]).max().unwrap_or(0);
        Rows {
            n,
            emb: vec![0.0; n * config.emb_total()],
            x: vec![0.0; n * d],
            q: vec![0.0; n * d],
            k: vec![0.0; n * d],
            v: vec![0.0; n * d],
            q_phi: vec![0.0; n * d],
            k_phi: vec![0.0; n * d],
            att: vec![0.0; n * d],
            tmp: vec![0.0; n * d],
            ffn: vec![0.0; n * config.d_ff],
            ffn_gelu: vec![0.0; n * config.d_ff],
            concat: vec![0.0; n * (d + config.emb_sizes[Family::Type.index()])],
            conditioned: vec![0.0; n * d],
            logits: vec![0.0; n * widest_head],
            scores: vec![0.0; if config.softmax_layers.is_empty() { 0 } else { config.n_heads * config.window }],
        }
    }
}

multiversion! {
    /// Linear attention of one word for one layer and head: adds phi(k) v^T to S and phi(k) to
    /// z, then out = phi(q)^T S / (phi(q)^T z + eps), given `q` = phi(q) and `k` = phi(k). The
    /// loops vectorise without reordering a sum.
    fn attend(s: &mut [f32], z: &mut [f32], q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
        let dh = q.len();
        assert!(s.len() == dh * dh && z.len() == dh && k.len() == dh && v.len() == dh && out.len() == dh);
        z.iter_mut().zip(k).for_each(|(z, k)| *z += k);
        // phi(q)^T z in 16 partial sums, then those in order.
        let den = lane_dot(q, z) + ATTENTION_EPS as f32;
        // One pass over S: each row takes its k v^T term, then adds into phi(q)^T S.
        out.iter_mut().for_each(|o| *o = 0.0);
        for i in 0..dh {
            let (ki, qi) = (k[i], q[i]);
            for ((r, o), vj) in s[i * dh..(i + 1) * dh].iter_mut().zip(out.iter_mut()).zip(v) {
                *r += ki * vj;
                *o += qi * *r;
            }
        }
        out.iter_mut().for_each(|o| *o /= den);
    }
}

/// x = LayerNorm(x + t), row by row.
fn add_and_norm(x: &mut [f32], t: &[f32], norm: &Norm, d: usize) {
    for (x, t) in x.chunks_mut(d).zip(t.chunks(d)) {
        x.iter_mut().zip(t).for_each(|(x, t)| *x += t);
        layer_norm(x, &norm.weight, &norm.bias);
    }
}

impl CpRnn {
    /// Builds the recurrent model from named tensors (the names `cp_transformer` uses).
    pub fn from_tensors(config: &Config, tensors: &HashMap<String, Tensor>, precision: Precision) -> Result<CpRnn, LoadError> {
        config.validate().map_err(LoadError::Config)?;
        let c = config;
        let d = c.d_model;
        let mut embeddings = Vec::new();
        for f in Family::ALL {
            let name = format!("embed.{}.weight", f.name());
            let (e, dims) = tensor_f32(tensors, &name)?;
            expect_shape(&name, &dims, &[c.vocab_sizes[f.index()], c.emb_sizes[f.index()]])?;
            let scale = (c.emb_sizes[f.index()] as f32).sqrt();
            embeddings.push(e.into_iter().map(|v| v * scale).collect());
        }
        let lin = |name: &str, rows, cols| Linear::load(tensors, name, rows, cols, precision);
        let mut layers = Vec::new();
        for i in 0..c.n_layers {
            let p = format!("layers.{i}");
            layers.push(Layer {
                attention: Attention::of(c, i),
                query: lin(&format!("{p}.query"), d, d)?,
                key: lin(&format!("{p}.key"), d, d)?,
                value: lin(&format!("{p}.value"), d, d)?,
                out: lin(&format!("{p}.out"), d, d)?,
                norm1: Norm::load(tensors, &format!("{p}.norm1"), d)?,
                ffn_in: lin(&format!("{p}.ffn_in"), c.d_ff, d)?,
                ffn_out: lin(&format!("{p}.ffn_out"), d, c.d_ff)?,
                norm2: Norm::load(tensors, &format!("{p}.norm2"), d)?,
            });
        }
        let heads = AFTER_TYPE
            .iter()
            .map(|f| lin(&format!("head.{}", f.name()), c.vocab_sizes[f.index()], d))
            .collect::<Result<Vec<_>, LoadError>>()?;
        let pe_rates = sinusoid_rates(d);
        Ok(CpRnn {
            config: c.clone(),
            precision,
            embeddings,
            in_linear: lin("in_linear", d, c.emb_total())?,
            layers,
            final_norm: Norm::load(tensors, "final_norm", d)?,
            type_head: lin("head.type", c.vocab_sizes[Family::Type.index()], d)?,
            type_concat: lin("type_concat", d, d + c.emb_sizes[Family::Type.index()])?,
            heads,
            pe_rates,
        })
    }

    /// Bytes of weights read per word.
    pub fn weight_bytes(&self) -> usize {
        let layer = |l: &Layer| l.query.bytes() + l.key.bytes() + l.value.bytes() + l.out.bytes() + l.ffn_in.bytes() + l.ffn_out.bytes();
        self.in_linear.bytes()
            + self.layers.iter().map(layer).sum::<usize>()
            + self.type_head.bytes()
            + self.type_concat.bytes()
            + self.heads.iter().map(Linear::bytes).sum::<usize>()
    }

    /// A fresh state (no words yet).
    pub fn new_state(&self) -> RnnState {
        let c = &self.config;
        let (d, h, dh) = (c.d_model, c.n_heads, c.head_dim());
        let memory = |layer: &Layer| match layer.attention {
            Attention::Linear => Memory::Sums { s: vec![0.0; h * dh * dh], z: vec![0.0; h * dh] },
            Attention::Window(window) => Memory::Window(Ring::new(window, d, self.precision == Precision::Int8)),
        };
        RnnState {
            memory: self.layers.iter().map(memory).collect(),
            position: 0,
            hidden: vec![0.0; d],
            rows: Rows::new(c, 1),
        }
    }

    /// Feeds one word at the state's position; afterwards `state.hidden` predicts the next word.
    /// Ids outside their family are clamped to ignore (0).
    pub fn step(&self, state: &mut RnnState, word: Word) {
        let mut rows = std::mem::take(&mut state.rows);
        self.step_many(&mut [&mut *state], &[word], &mut rows);
        state.rows = rows;
    }

    /// Feeds one word to each of several songs at once (`rows` sized for at least as many),
    /// reading each weight once for all of them. Each state ends exactly as `step` leaves it.
    pub fn step_many(&self, states: &mut [&mut RnnState], words: &[Word], rows: &mut Rows) {
        let c = &self.config;
        let n = states.len();
        assert!(n == words.len() && n <= rows.n);
        let (d, h, dh, e_total) = (c.d_model, c.n_heads, c.head_dim(), c.emb_total());
        for (j, word) in words.iter().enumerate() {
            let mut at = j * e_total;
            for f in Family::ALL {
                let e = c.emb_sizes[f.index()];
                let id = word.0[f.index()] as usize;
                let id = if id < c.vocab_sizes[f.index()] { id } else { 0 };
                rows.emb[at..at + e].copy_from_slice(&self.embeddings[f.index()][id * e..(id + 1) * e]);
                at += e;
            }
        }
        let x = &mut rows.x[..n * d];
        self.in_linear.forward_many(&rows.emb[..n * e_total], x, n);
        for (state, x) in states.iter().zip(x.chunks_mut(d)) {
            add_positional_encoding(state.position as f64, &self.pe_rates, x);
        }
        for (l, layer) in self.layers.iter().enumerate() {
            let x = &mut rows.x[..n * d];
            layer.query.forward_many(x, &mut rows.q[..n * d], n);
            layer.key.forward_many(x, &mut rows.k[..n * d], n);
            layer.value.forward_many(x, &mut rows.v[..n * d], n);
            if layer.attention == Attention::Linear {
                phi(&rows.q[..n * d], &mut rows.q_phi[..n * d]);
                phi(&rows.k[..n * d], &mut rows.k_phi[..n * d]);
            }
            for (j, state) in states.iter_mut().enumerate() {
                let position = state.position;
                match &mut state.memory[l] {
                    Memory::Sums { s, z } => {
                        for head in 0..h {
                            let at = j * d + head * dh;
                            attend(
                                &mut s[head * dh * dh..(head + 1) * dh * dh],
                                &mut z[head * dh..(head + 1) * dh],
                                &rows.q_phi[at..at + dh],
                                &rows.k_phi[at..at + dh],
                                &rows.v[at..at + dh],
                                &mut rows.att[at..at + dh],
                            );
                        }
                    }
                    Memory::Window(ring) => {
                        let row = j * d..(j + 1) * d;
                        ring.push_and_attend(position, &rows.k[row.clone()], &rows.v[row.clone()], &rows.q[row.clone()], dh, &mut rows.scores, &mut rows.att[row]);
                    }
                }
            }
            layer.out.forward_many(&rows.att[..n * d], &mut rows.tmp[..n * d], n);
            add_and_norm(x, &rows.tmp[..n * d], &layer.norm1, d);
            layer.ffn_in.forward_many(x, &mut rows.ffn[..n * c.d_ff], n);
            gelu(&rows.ffn[..n * c.d_ff], &mut rows.ffn_gelu[..n * c.d_ff]);
            layer.ffn_out.forward_many(&rows.ffn_gelu[..n * c.d_ff], &mut rows.tmp[..n * d], n);
            add_and_norm(x, &rows.tmp[..n * d], &layer.norm2, d);
        }
        for (state, x) in states.iter_mut().zip(rows.x.chunks(d)) {
            state.hidden.copy_from_slice(x);
            layer_norm(&mut state.hidden, &self.final_norm.weight, &self.final_norm.bias);
            state.position += 1;
        }
    }

    /// Type logits for the next word, into `out` (3 values).
    pub fn type_logits(&self, state: &RnnState, out: &mut [f32]) {
        self.type_head.forward(&state.hidden, out);
    }

    /// Logits of the six other families for the next word given its type, into `out` (family
    /// order; the type entry is left as it is).
    pub fn family_logits(&self, state: &mut RnnState, word_type: u16, out: &mut [Vec<f32>; FAMILIES]) {
        let mut rows = std::mem::take(&mut state.rows);
        self.family_logits_many(&mut [(&*state, word_type, out)], &mut rows);
        state.rows = rows;
    }

    /// `family_logits` for several songs at once, each weight read once for all of them; each
    /// result is exactly what `family_logits` gives alone.
    pub fn family_logits_many(&self, songs: &mut [(&RnnState, u16, &mut [Vec<f32>; FAMILIES])], rows: &mut Rows) {
        let c = &self.config;
        let n = songs.len();
        assert!(n <= rows.n);
        if n == 0 {
            return;
        }
        let d = c.d_model;
        let e = c.emb_sizes[Family::Type.index()];
        for (j, (state, word_type, _)) in songs.iter().enumerate() {
            let t = (*word_type as usize).min(c.vocab_sizes[Family::Type.index()] - 1);
            let row = &mut rows.concat[j * (d + e)..(j + 1) * (d + e)];
            row[..d].copy_from_slice(&state.hidden);
            row[d..].copy_from_slice(&self.embeddings[Family::Type.index()][t * e..(t + 1) * e]);
        }
        self.type_concat.forward_many(&rows.concat[..n * (d + e)], &mut rows.conditioned[..n * d], n);
        for (head, f) in self.heads.iter().zip(AFTER_TYPE) {
            let vocab = c.vocab_sizes[f.index()];
            head.forward_many(&rows.conditioned[..n * d], &mut rows.logits[..n * vocab], n);
            for (j, (_, _, out)) in songs.iter_mut().enumerate() {
                out[f.index()].copy_from_slice(&rows.logits[j * vocab..(j + 1) * vocab]);
            }
        }
    }

    /// Buffers for `family_logits` (one per family, sized to its vocabulary).
    pub fn logit_buffers(&self) -> [Vec<f32>; FAMILIES] {
        std::array::from_fn(|f| vec![0.0; self.config.vocab_sizes[f]])
    }
}
