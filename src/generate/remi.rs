//! Generation with the REMI Transformer-XL baseline: one token per step through the streaming
//! model (memory of the last `mem_len` tokens per layer), sampled as the seed did
//! (temperature 1.2, nucleus 0.9, the top 3 when nothing crosses p), until EOS or a cap (7,680
//! tokens by default, the seed's). Its settings are its own (`RemiSettings`): one sampling for
//! every token, a cap in tokens, minimum bars before EOS, key lock (out-of-key Note_Pitch tokens
//! masked).

use crate::generate::Finish;
use crate::music::key::Key;
use crate::music::grid::{Grid, PITCH_MIN};
use crate::model::init::Rng;
use crate::model::remi_xl_stream::{RemiXlStream, StreamState};
use crate::tokens::remi::{self, BAR, EOS, PITCH, VELOCITY};
use crate::generate::sampling::{sample, FamilySampling, Scratch};

/// The seed's REMI sampling.
pub const SEED_SAMPLING: FamilySampling = FamilySampling { temperature: 1.2, top_p: Some(0.9) };
/// The seed's token cap.
pub const SEED_MAX_TOKENS: usize = 7680;

/// What to generate with the baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct RemiSettings {
    pub seed: u64,
    /// Temperature and nucleus of every token (the seed's by default).
    pub sampling: FamilySampling,
    /// Stop after this many tokens (the song so far is kept).
    pub max_tokens: usize,
    /// Stop when this many bars are complete.
    pub max_bars: Option<u32>,
    /// EOS is not sampled before this many bars are complete.
    pub min_bars: u32,
    pub key: Option<Key>,
}

impl Default for RemiSettings {
    fn default() -> Self {
        RemiSettings { seed: 0, sampling: SEED_SAMPLING, max_tokens: SEED_MAX_TOKENS, max_bars: None, min_bars: 32, key: None }
    }
}

/// The generator: owns the memory of one song.
pub struct RemiGenerator<'m> {
    model: &'m RemiXlStream,
    settings: RemiSettings,
    state: StreamState,
    rng: Rng,
    scratch: Scratch,
    tokens: Vec<u16>,
    /// Tokens already fed to the model (all but the last one).
    fed: usize,
    bar_tokens: u32,
    pitch_allowed: [bool; 128],
    finish: Option<Finish>,
}

impl<'m> RemiGenerator<'m> {
    /// Starts a song that continues `prime` (a trailing EOS is dropped; an empty prime starts
    /// with a Bar token).
    pub fn with_prime(model: &'m RemiXlStream, settings: RemiSettings, prime: &[u16]) -> RemiGenerator<'m> {
        let mut tokens: Vec<u16> = prime.iter().copied().take_while(|&t| t != EOS).collect();
        if tokens.is_empty() {
            tokens.push(BAR);
        }
        let pitch_allowed = crate::music::key::allowed_pitches(settings.key);
        let mut state = model.new_state();
        for &t in &tokens[..tokens.len() - 1] {
            model.step(&mut state, t);
        }
        RemiGenerator {
            model,
            rng: Rng::new(settings.seed),
            settings,
            state,
            scratch: Scratch::with_capacity(remi::VOCAB_SIZE),
            fed: tokens.len() - 1,
            bar_tokens: tokens.iter().filter(|&&t| t == BAR).count() as u32,
            tokens,
            pitch_allowed,
            finish: None,
        }
    }

    /// The song's tokens so far.
    pub fn tokens(&self) -> &[u16] {
        &self.tokens
    }

    /// Why the song ended, once it has.
    pub fn finish(&self) -> Option<Finish> {
        self.finish
    }

    /// Complete bars so far.
    pub fn bars(&self) -> u32 {
        self.bar_tokens.saturating_sub(1)
    }

    /// Samples the next token; `None` once the song has ended.
    pub fn next_token(&mut self) -> Option<u16> {
        if self.finish.is_some() {
            return None;
        }
        if self.tokens.len() >= self.settings.max_tokens {
            self.finish = Some(Finish::WordCap);
            return None;
        }
        self.model.step(&mut self.state, self.tokens[self.fed]);
        self.fed += 1;
        let logits = &mut self.state.logits;
        if self.bar_tokens.saturating_sub(1) < self.settings.min_bars {
            logits[EOS as usize] = f32::NEG_INFINITY;
        }
        for (pitch, logit) in logits[PITCH as usize..VELOCITY as usize].iter_mut().enumerate() {
            if !self.pitch_allowed[PITCH_MIN as usize + pitch] {
                *logit = f32::NEG_INFINITY;
            }
        }
        let token = sample(logits, self.settings.sampling, &mut self.rng, &mut self.scratch) as u16;
        self.tokens.push(token);
        if token == EOS {
            self.finish = Some(Finish::Eos);
        } else if token == BAR {
            self.bar_tokens += 1;
            if self.settings.max_bars.is_some_and(|m| self.bars() >= m) {
                self.finish = Some(Finish::BarCap);
            }
        }
        Some(token)
    }

    /// Runs to the end and returns the decoded song's grid.
    pub fn run_to_end(&mut self) -> Grid {
        while self.next_token().is_some() {}
        remi::decode(&self.tokens).grid
    }
}
