//! Generation: a stream of CP words sampled from the recurrent model, decoded on the fly into
//! notes in beats. Type first, then the other families conditioned on it; stops at the EOS
//! word, at a word cap or at a bar cap. Same model, seed and settings give the same song.
//!
//! Sampling keeps words well formed (a grammar mask, documented here): a Metrical word gets a
//! bar-beat value (never "ignore"); a Bar word has no tempo or chord; a beat word gets a tempo
//! and a chord value or CONTI; a Note word gets a pitch, a duration and a velocity. With a key
//! lock, out-of-key pitches are masked; EOS is masked until `min_bars` bars are complete. This is the library API the CLI and the plugin's worker
//! drive; it allocates nothing per word once built.

use crate::cp::{self, Event, Family, Word, BAR, FAMILIES, IGNORE, TYPE_EOS, TYPE_METRICAL, TYPE_NOTE};
use crate::grid::{Grid, PITCH_MIN};
use crate::key::Key;
use crate::model::cp_rnn::{CpRnn, RnnState};
use crate::model::init::Rng;
use crate::sampling::{sample, SamplingSettings, Scratch};

/// What to generate.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerationSettings {
    pub seed: u64,
    pub sampling: SamplingSettings,
    /// Stop after this many words (the song so far is kept).
    pub max_words: usize,
    /// Stop when this many bars are complete.
    pub max_bars: Option<u32>,
    /// EOS is not sampled before this many bars are complete (default 32: the shipped model
    /// sometimes ends after a few bars; POP909 songs run ~40-130 bars).
    pub min_bars: u32,
    pub key: Option<Key>,
}

impl Default for GenerationSettings {
    fn default() -> Self {
        GenerationSettings { seed: 0, sampling: SamplingSettings::default(), max_words: 8192, max_bars: None, min_bars: 32, key: None }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Finish {
    /// The model wrote the EOS word.
    Eos,
    WordCap,
    BarCap,
}

/// A note in beats from the song's start (quarter notes).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NoteEvent {
    pub start: f64,
    pub duration: f64,
    pub pitch: u8,
    pub velocity: u8,
}

impl NoteEvent {
    /// The note a decoded CP note stands for.
    pub fn from_placed(n: &cp::PlacedNote) -> NoteEvent {
        NoteEvent {
            start: n.position as f64 / 4.0,
            duration: n.note.duration as f64 / 4.0,
            pitch: n.note.pitch,
            velocity: crate::grid::velocity_value(n.note.velocity),
        }
    }
}

/// A word of the song with what it did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub word: Word,
    pub event: Event,
}

/// The generator: owns the recurrent state of one song.
pub struct Generator<'m> {
    model: &'m CpRnn,
    settings: GenerationSettings,
    state: RnnState,
    rng: Rng,
    scratch: Scratch,
    type_logits: Vec<f32>,
    logits: [Vec<f32>; FAMILIES],
    pitch_allowed: [bool; 128],
    words: Vec<Word>,
    /// Words already fed to the model (all but possibly the last one).
    fed: usize,
    decoder: cp::Decoder,
    bars: u32,
    finish: Option<Finish>,
}

impl<'m> Generator<'m> {
    /// Starts a song with its opening Bar word.
    pub fn new(model: &'m CpRnn, settings: GenerationSettings) -> Generator<'m> {
        Generator::with_prime(model, settings, &[Word::BAR])
    }

    /// Starts a song that continues `prime` (e.g. a producer's clip encoded as CP words; a
    /// trailing EOS is dropped). An empty prime starts with a Bar word.
    pub fn with_prime(model: &'m CpRnn, settings: GenerationSettings, prime: &[Word]) -> Generator<'m> {
        let mut words: Vec<Word> = prime.iter().copied().take_while(|w| w.get(Family::Type) != TYPE_EOS).collect();
        if words.is_empty() {
            words.push(Word::BAR);
        }
        let mut pitch_allowed = [true; 128];
        if let Some(key) = settings.key {
            for (p, allowed) in pitch_allowed.iter_mut().enumerate() {
                *allowed = key.contains(p as u8);
            }
        }
        let mut g = Generator {
            model,
            state: model.new_state(),
            rng: Rng::new(settings.seed),
            scratch: Scratch::with_capacity(256),
            type_logits: vec![0.0; 3],
            logits: model.logit_buffers(),
            pitch_allowed,
            words: Vec::with_capacity(settings.max_words.min(1 << 16) + prime.len()),
            fed: 0,
            decoder: cp::Decoder::new(),
            bars: 0,
            finish: None,
            settings,
        };
        for w in words {
            g.record(w);
        }
        let last = g.words.len() - 1;
        for i in 0..last {
            g.model.step(&mut g.state, g.words[i]);
        }
        g.fed = last;
        g
    }

    /// Appends a word to the song and decodes it.
    fn record(&mut self, word: Word) -> Event {
        self.words.push(word);
        let event = self.decoder.push(word);
        if let Event::Bar(b) = event {
            self.bars = b;
        }
        event
    }

    /// The song's words so far.
    pub fn words(&self) -> &[Word] {
        &self.words
    }

    /// Complete bars so far.
    pub fn bars(&self) -> u32 {
        self.bars
    }

    /// Why the song ended, once it has.
    pub fn finish(&self) -> Option<Finish> {
        self.finish
    }

    /// Samples the next word; `None` once the song has ended.
    pub fn next_step(&mut self) -> Option<Step> {
        if self.finish.is_some() {
            return None;
        }
        if self.words.len() >= self.settings.max_words {
            self.finish = Some(Finish::WordCap);
            return None;
        }
        self.model.step(&mut self.state, self.words[self.fed]);
        self.fed += 1;
        let word = self.sample_word();
        let event = self.record(word);
        match event {
            Event::End => self.finish = Some(Finish::Eos),
            Event::Bar(b) if self.settings.max_bars.is_some_and(|m| b >= m) => self.finish = Some(Finish::BarCap),
            _ => {}
        }
        Some(Step { word, event })
    }

    fn sample_family(&mut self, family: Family, mask_ignore: bool) -> u16 {
        let logits = &mut self.logits[family.index()];
        if mask_ignore {
            logits[IGNORE as usize] = f32::NEG_INFINITY;
        }
        if family == Family::Pitch {
            for (id, l) in logits.iter_mut().enumerate().skip(1) {
                if !self.pitch_allowed[(PITCH_MIN as usize + id - 1).min(127)] {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        let how = self.settings.sampling.families[family.index()];
        sample(logits, how, &mut self.rng, &mut self.scratch) as u16
    }

    fn sample_word(&mut self) -> Word {
        self.model.type_logits(&self.state, &mut self.type_logits);
        if self.bars < self.settings.min_bars {
            self.type_logits[TYPE_EOS as usize] = f32::NEG_INFINITY;
        }
        let how = self.settings.sampling.families[Family::Type.index()];
        let ty = sample(&mut self.type_logits, how, &mut self.rng, &mut self.scratch) as u16;
        if ty == TYPE_EOS {
            return Word::EOS;
        }
        self.model.family_logits(&mut self.state, ty, &mut self.logits);
        let mut word = Word([IGNORE; FAMILIES]);
        word.0[Family::Type.index()] = ty;
        if ty == TYPE_METRICAL {
            let bar_beat = self.sample_family(Family::BarBeat, true);
            word.0[Family::BarBeat.index()] = bar_beat;
            if bar_beat != BAR {
                word.0[Family::Tempo.index()] = self.sample_family(Family::Tempo, true);
                word.0[Family::Chord.index()] = self.sample_family(Family::Chord, true);
            }
        } else if ty == TYPE_NOTE {
            for f in [Family::Pitch, Family::Duration, Family::Velocity] {
                word.0[f.index()] = self.sample_family(f, true);
            }
        }
        word
    }

    /// Runs to the end and returns the decoded song's grid.
    pub fn run_to_end(&mut self) -> Grid {
        while self.next_step().is_some() {}
        self.grid()
    }

    /// The grid of the song so far.
    pub fn grid(&self) -> Grid {
        cp::decode(&self.words).grid
    }
}
