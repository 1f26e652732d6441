//! REMI + Transformer-XL, the paper's baseline (Huang & Yang's Pop Music Transformer), in
//! candle (training form and segment-wise forward with memory).
//!
//! Read top to bottom: token embedding scaled by sqrt(d_model) -> dropout -> pre-LN layers of
//! relative multi-head attention over [memory, segment] (Dai et al. 2019: content term with the
//! learned bias r_w_bias, position term with r_r_bias against sinusoidal relative positions
//! through `r_net`, aligned by the relative shift) and a ReLU FFN -> Linear(d_model -> 332).
//! Each layer's memory holds the inputs of that layer for the previous `mem_len` tokens; in
//! training it is detached between segments of `seq_len` tokens. Pre-LN with no final
//! LayerNorm and an untied output layer: the `paper` preset has exactly 41,291,084 parameters.
//!
//! This module knows tensors and the REMI vocabulary only; `remi_xl_stream` is the same model
//! token by token in plain Rust for generation.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Embedding, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::data::batches::Batch;
use crate::model::layers::{Dropout, Linear, Norm};
use crate::model::config::ConfigError;
use crate::model::cpu::relative_encoding;
use crate::tokens::remi;

/// Sizes of a REMI Transformer-XL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct XlConfig {
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub d_head: usize,
    pub d_ff: usize,
    /// The REMI vocabulary size (stored so weights can be checked).
    pub vocab_size: usize,
    /// Tokens per training segment.
    pub seq_len: usize,
    /// Tokens of memory per layer.
    pub mem_len: usize,
    pub dropout: f32,
}

impl XlConfig {
    /// The seed's model: 12 layers, d 512, 8 heads of 64, FFN 2048, segments and memory of 512.
    pub fn paper() -> XlConfig {
        XlConfig {
            n_layers: 12,
            d_model: 512,
            n_heads: 8,
            d_head: 64,
            d_ff: 2048,
            vocab_size: remi::VOCAB_SIZE,
            seq_len: 512,
            mem_len: 512,
            dropout: 0.1,
        }
    }

    /// The CP `small` preset's shape (6 layers, d 256, 4 heads, FFN 1024): 5,296,460
    /// parameters against CP's 5,111,606, so the comparison is at the same budget.
    pub fn small() -> XlConfig {
        XlConfig { n_layers: 6, d_model: 256, n_heads: 4, d_head: 64, d_ff: 1024, ..XlConfig::paper() }
    }

    /// A preset by name (`paper`, `small`, or `tiny` for tests).
    pub fn preset(name: &str) -> Option<XlConfig> {
        match name {
            "paper" => Some(XlConfig::paper()),
            "small" => Some(XlConfig::small()),
            "tiny" => Some(XlConfig { n_layers: 2, d_model: 64, n_heads: 2, d_head: 32, d_ff: 128, seq_len: 32, mem_len: 32, ..XlConfig::paper() }),
            _ => None,
        }
    }

    /// Width of the attention's heads together.
    pub fn attention_width(&self) -> usize {
        self.n_heads * self.d_head
    }

    /// Checks the sizes fit together.
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        if self.vocab_size != remi::VOCAB_SIZE {
            return Err(ConfigError::Vocabulary { found: self.vocab_size.to_string(), expected: format!("REMI {}", remi::VOCAB_SIZE) });
        }
        if [self.n_layers, self.d_model, self.n_heads, self.d_head, self.d_ff, self.seq_len].contains(&0) {
            return Err(ConfigError::ZeroSize);
        }
        if !self.d_model.is_multiple_of(2) {
            return Err(ConfigError::OddWidth(self.d_model));
        }
        if self.d_head > 256 {
            return Err(ConfigError::HeadTooWide(self.d_head));
        }
        Ok(())
    }

    /// Parameters of a model of this size, counted without building it.
    pub fn parameter_count(&self) -> usize {
        let (d, a, v) = (self.d_model, self.attention_width(), self.vocab_size);
        let layer = 2 * d + d * 3 * a + d * a + a * d + 2 * d + (d * self.d_ff + self.d_ff) + (self.d_ff * d + d);
        v * d + self.n_layers * layer + 2 * a + (d * v + v)
    }
}

/// One pre-LN layer: x = x + Drop(RelAttn(LN(mem ++ x))); x = x + Drop(FFN(LN(x))).
#[derive(Debug, Clone)]
pub struct XlLayer {
    pub norm1: Norm,
    /// Queries, keys and values in one projection (no bias).
    pub qkv: Linear,
    /// Projects relative position encodings to per-head keys (no bias).
    pub r_net: Linear,
    /// Output projection (no bias).
    pub o_net: Linear,
    pub norm2: Norm,
    pub ffn_in: Linear,
    pub ffn_out: Linear,
}

/// The relative shift: scores against distances `klen-1 .. 0` per column become scores against
/// distance `i + mlen - j` for query i and key j (entries above the causal diagonal are junk
/// that the mask removes). x: (batch, heads, qlen, klen).
pub fn relative_shift(x: &Tensor) -> Result<Tensor> {
    let (b, h, q, k) = x.dims4()?;
    let zeros = Tensor::zeros((b, h, q, 1), x.dtype(), x.device())?;
    Tensor::cat(&[&zeros, x], 3)?.reshape((b, h, k + 1, q))?.narrow(2, 1, k)?.reshape((b, h, q, k))
}

/// Added to masked attention scores (finite, so gradients stay finite).
const MASKED: f32 = -1e30;

impl XlLayer {
    fn new(vb: VarBuilder, c: &XlConfig) -> Result<XlLayer> {
        let (d, a) = (c.d_model, c.attention_width());
        Ok(XlLayer {
            norm1: Norm::new(vb.pp("norm1"), d)?,
            qkv: Linear::no_bias(vb.pp("qkv"), d, 3 * a)?,
            r_net: Linear::no_bias(vb.pp("r_net"), d, a)?,
            o_net: Linear::no_bias(vb.pp("o_net"), a, d)?,
            norm2: Norm::new(vb.pp("norm2"), d)?,
            ffn_in: Linear::new(vb.pp("ffn_in"), d, c.d_ff)?,
            ffn_out: Linear::new(vb.pp("ffn_out"), c.d_ff, d)?,
        })
    }

    /// x: (b, q, d) this layer's input for the segment; context: (b, m + q, d) the memory
    /// followed by x; positions: (klen, d) encodings of distances klen-1 .. 0; biases:
    /// (heads, d_head) each.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        positions: &Tensor,
        r_w_bias: &Tensor,
        r_r_bias: &Tensor,
        c: &XlConfig,
        dropout: &mut Option<&mut Dropout>,
    ) -> Result<Tensor> {
        let (b, q, _) = x.dims3()?;
        let (h, dh, a) = (c.n_heads, c.d_head, c.attention_width());
        let k = context.dim(1)?;
        let m = k - q;
        let heads = self.qkv.forward(&self.norm1.forward(context)?)?;
        let split = |t: Tensor, len: usize| t.reshape((b, len, h, dh))?.transpose(1, 2)?.contiguous();
        let query = split(heads.narrow(1, m, q)?.narrow(2, 0, a)?, q)?;
        let key = split(heads.narrow(2, a, a)?, k)?;
        let value = split(heads.narrow(2, 2 * a, a)?, k)?;
        let r = self.r_net.forward(positions)?.reshape((k, h, dh))?.transpose(0, 1)?.contiguous()?;
        let content = query.broadcast_add(&r_w_bias.reshape((1, h, 1, dh))?)?.matmul(&key.t()?)?;
        let position = query.broadcast_add(&r_r_bias.reshape((1, h, 1, dh))?)?.broadcast_matmul(&r.t()?.unsqueeze(0)?)?;
        let position = relative_shift(&position)?;
        // Key j is visible to query i when j <= i + m.
        let mask: Vec<f32> = (0..q).flat_map(|i| (0..k).map(move |j| if j <= i + m { 0.0 } else { MASKED })).collect();
        let mask = Tensor::from_vec(mask, (1, 1, q, k), x.device())?;
        let scores = ((content + position)? * (1.0 / (dh as f64).sqrt()))?.broadcast_add(&mask)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let attended = probs.matmul(&value)?.transpose(1, 2)?.reshape((b, q, a))?;
        let mut attended = self.o_net.forward(&attended)?;
        if let Some(drop) = dropout.as_deref_mut() {
            attended = drop.apply(&attended)?;
        }
        let x = (x + attended)?;
        let mut ffn = self.ffn_out.forward(&self.ffn_in.forward(&self.norm2.forward(&x)?)?.relu()?)?;
        if let Some(drop) = dropout.as_deref_mut() {
            ffn = drop.apply(&ffn)?;
        }
        x + ffn
    }
}

/// The REMI Transformer-XL.
#[derive(Debug, Clone)]
pub struct RemiXl {
    pub config: XlConfig,
    pub embedding: Embedding,
    pub layers: Vec<XlLayer>,
    /// Content bias (heads, d_head), shared by all layers.
    pub r_w_bias: Tensor,
    /// Position bias (heads, d_head), shared by all layers.
    pub r_r_bias: Tensor,
    pub out: Linear,
}

impl RemiXl {
    pub fn new(config: &XlConfig, vb: VarBuilder) -> Result<RemiXl> {
        config.validate().map_err(candle_core::Error::msg)?;
        let c = config;
        let layers = (0..c.n_layers).map(|i| XlLayer::new(vb.pp("layers").pp(i), c)).collect::<Result<Vec<_>>>()?;
        Ok(RemiXl {
            config: c.clone(),
            embedding: candle_nn::embedding(c.vocab_size, c.d_model, vb.pp("word_embedding"))?,
            layers,
            r_w_bias: vb.get((c.n_heads, c.d_head), "r_w_bias")?,
            r_r_bias: vb.get((c.n_heads, c.d_head), "r_r_bias")?,
            out: Linear::new(vb.pp("out"), c.d_model, c.vocab_size)?,
        })
    }

    /// Logits (b, q, vocab) for a segment of tokens (b, q) u32 after `mems` (one (b, m, d)
    /// tensor per layer, or empty for none), and the memories for the next segment: per layer
    /// the last `mem_len` of its inputs over [memory, segment].
    pub fn forward(&self, tokens: &Tensor, mems: &[Tensor], mut dropout: Option<&mut Dropout>) -> Result<(Tensor, Vec<Tensor>)> {
        let c = &self.config;
        let q = tokens.dim(1)?;
        let m = mems.first().map_or(Ok(0), |t| t.dim(1))?;
        let k = m + q;
        let distances: Vec<f32> = (0..k).rev().map(|p| p as f32).collect();
        let positions = Tensor::from_vec(relative_encoding(&distances, c.d_model), (k, c.d_model), tokens.device())?;
        let mut x = (self.embedding.forward(tokens)? * (c.d_model as f64).sqrt())?;
        if let Some(drop) = dropout.as_deref_mut() {
            x = drop.apply(&x)?;
        }
        let mut new_mems = Vec::with_capacity(c.n_layers);
        for (i, layer) in self.layers.iter().enumerate() {
            let context = match mems.get(i) {
                Some(mem) => Tensor::cat(&[mem, &x], 1)?,
                None => x.clone(),
            };
            let keep = context.dim(1)?.min(c.mem_len);
            new_mems.push(context.narrow(1, context.dim(1)? - keep, keep)?);
            x = layer.forward(&x, &context, &positions, &self.r_w_bias, &self.r_r_bias, c, &mut dropout)?;
        }
        Ok((self.out.forward(&x)?, new_mems))
    }

    /// Teacher-forced loss over a batch of windows (inputs and targets (b, t, 1)), processed as
    /// segments of `seq_len` with the memory carried (and detached) between them: the mean
    /// cross-entropy over real tokens. Returns (loss, the same as a (1,) tensor).
    pub fn loss(&self, batch: &Batch, mut dropout: Option<&mut Dropout>) -> Result<(Tensor, Tensor)> {
        let inputs = batch.inputs.squeeze(D::Minus1)?;
        let targets = batch.targets.squeeze(D::Minus1)?;
        let t = inputs.dim(1)?;
        let mut mems: Vec<Tensor> = Vec::new();
        let mut total = Tensor::zeros((), DType::F32, inputs.device())?;
        let mut start = 0;
        while start < t {
            let len = self.config.seq_len.min(t - start);
            let (logits, next) = self.forward(&inputs.narrow(1, start, len)?, &mems, dropout.as_deref_mut())?;
            mems = next.into_iter().map(|m| m.detach()).collect();
            let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let target = targets.narrow(1, start, len)?.unsqueeze(D::Minus1)?.contiguous()?;
            let picked = log_probs.gather(&target, D::Minus1)?.squeeze(D::Minus1)?;
            total = (total + picked.mul(&batch.mask.narrow(1, start, len)?)?.sum_all()?)?;
            start += len;
        }
        let loss = (total.neg()? / batch.mask.sum_all()?.maximum(1.0)?)?;
        Ok((loss.clone(), loss.reshape(1)?))
    }
}
