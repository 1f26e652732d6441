//! Generation: a stream of CP words sampled from the recurrent model, decoded on the fly into
//! notes in beats. Type first, then the other families conditioned on it; stops at the EOS
//! word, at a word cap or at a bar cap. Same model, seed and settings give the same song.
//!
//! Sampling keeps words well formed (a grammar mask, documented here): a Metrical word gets a
//! bar-beat value (never "ignore"); a Bar word has no tempo or chord; a beat word gets a tempo
//! and a chord value or CONTI; a Note word gets a pitch, a duration and a velocity. With a key
//! lock, out-of-key pitches are masked; EOS is masked until `min_bars` bars are complete, and
//! after that drawn at its own probability outside the type nucleus (see `sample_word`). This
//! is the library API the CLI and the plugin's worker drive. It runs any `WordModel`: the plain
//! Rust recurrent model on the CPU (the fast path, which allocates nothing per word once built),
//! or the candle model on a CUDA device (`Inference` picks).

pub mod chords;
pub mod form;
pub mod prime;
pub mod remi;
pub mod sampling;
pub mod takes;
mod settings;

pub use settings::{density_bias, GenerationSettings, CHORD_TONES};

use crate::music::song::POSITIONS_PER_BAR;
use crate::tokens::cp::{self, Event, Family, Word, BAR, CONTI, FAMILIES, IGNORE, TYPE_EOS, TYPE_METRICAL, TYPE_NOTE};
use crate::music::grid::{Grid, PITCH_MIN};
use crate::model::cp_rnn::{CpRnn, RnnState};
use crate::model::cpu::Precision;
use crate::model::cp_transformer::{CpTransformer, DeviceState};
use crate::model::init::Rng;
use crate::generate::sampling::{sample, Scratch};

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Finish {
    /// The model wrote the EOS word.
    Eos,
    WordCap,
    BarCap,
    /// The model failed (a device error); `Generator::error` says why. The song so far is kept.
    Failed,
}

/// Why a model could not give the next word.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The device (a CUDA GPU) failed.
    #[error("{0}")]
    Device(#[from] candle_core::Error),
    /// A state made by another model was passed in.
    #[error("a state of another model")]
    ForeignState,
}

/// A CP model generation can drive word by word.
pub trait WordModel {
    /// The recurrent state of one song (cloned to remember a song at its bar lines).
    type State: Clone;
    fn new_state(&self) -> Result<Self::State, ModelError>;
    /// Feeds one word; afterwards the state predicts the next word.
    fn step(&self, state: &mut Self::State, word: Word) -> Result<(), ModelError>;
    /// Type logits of the next word into `out` (3 values).
    fn type_logits(&self, state: &Self::State, out: &mut [f32]) -> Result<(), ModelError>;
    /// Logits of the other six families given the next word's type (family order).
    fn family_logits(&self, state: &mut Self::State, word_type: u16, out: &mut [Vec<f32>; FAMILIES]) -> Result<(), ModelError>;
    /// Bytes a copy of `state` holds (what remembering it at a bar line costs).
    fn state_bytes(&self, state: &Self::State) -> usize;
}

impl WordModel for CpRnn {
    type State = RnnState;
    fn new_state(&self) -> Result<RnnState, ModelError> {
        Ok(CpRnn::new_state(self))
    }
    fn step(&self, state: &mut RnnState, word: Word) -> Result<(), ModelError> {
        CpRnn::step(self, state, word);
        Ok(())
    }
    fn type_logits(&self, state: &RnnState, out: &mut [f32]) -> Result<(), ModelError> {
        CpRnn::type_logits(self, state, out);
        Ok(())
    }
    fn family_logits(&self, state: &mut RnnState, word_type: u16, out: &mut [Vec<f32>; FAMILIES]) -> Result<(), ModelError> {
        CpRnn::family_logits(self, state, word_type, out);
        Ok(())
    }
    fn state_bytes(&self, state: &RnnState) -> usize {
        state.bytes()
    }
}

impl WordModel for CpTransformer {
    type State = DeviceState;
    fn new_state(&self) -> Result<DeviceState, ModelError> {
        Ok(CpTransformer::new_state(self)?)
    }
    fn step(&self, state: &mut DeviceState, word: Word) -> Result<(), ModelError> {
        Ok(CpTransformer::step(self, state, word)?)
    }
    fn type_logits(&self, state: &DeviceState, out: &mut [f32]) -> Result<(), ModelError> {
        Ok(self.step_type_logits(state, out)?)
    }
    fn family_logits(&self, state: &mut DeviceState, word_type: u16, out: &mut [Vec<f32>; FAMILIES]) -> Result<(), ModelError> {
        Ok(self.step_family_logits(state, word_type, out)?)
    }
    fn state_bytes(&self, state: &DeviceState) -> usize {
        state.bytes()
    }
}

/// The model generation runs: the int8 recurrent model on the CPU, or the candle model on a
/// CUDA GPU (`cuda` feature and a GPU present).
pub enum Inference {
    Cpu(Box<CpRnn>),
    Device(Box<CpTransformer>),
}

/// The state of an `Inference` model.
#[derive(Clone)]
pub enum InferenceState {
    Cpu(Box<RnnState>),
    Device(DeviceState),
}

impl Inference {
    /// Loads CP weights (`dir`, or the shipped ones) on a CUDA GPU when `cuda` is asked for,
    /// this build has the feature and a GPU answers; otherwise on the CPU at `precision`.
    /// Returns the model and where it runs.
    pub fn load(dir: Option<&std::path::Path>, cuda: bool, precision: Precision) -> Result<(Inference, String), crate::model::weights::WeightsError> {
        let weights = crate::model::weights::load_weights(dir)?;
        let config = weights.cp_config()?;
        if cuda {
            match candle_core::Device::new_cuda(0) {
                Ok(device) => {
                    let tensors = weights.tensors.iter().map(|(n, t)| Ok((n.clone(), t.to_device(&device)?))).collect::<candle_core::Result<_>>()?;
                    let vb = candle_nn::VarBuilder::from_tensors(tensors, candle_core::DType::F32, &device);
                    return Ok((Inference::Device(Box::new(CpTransformer::new(&config, vb)?)), "CUDA GPU 0".into()));
                }
                Err(e) => eprintln!("note: no CUDA device ({e}); generating on the CPU"),
            }
        }
        Ok((Inference::Cpu(Box::new(CpRnn::from_tensors(&config, &weights.tensors, precision)?)), format!("CPU, {precision:?}")))
    }
}

impl WordModel for Inference {
    type State = InferenceState;
    fn new_state(&self) -> Result<InferenceState, ModelError> {
        match self {
            Inference::Cpu(m) => WordModel::new_state(m.as_ref()).map(|s| InferenceState::Cpu(Box::new(s))),
            Inference::Device(m) => WordModel::new_state(m.as_ref()).map(InferenceState::Device),
        }
    }
    fn step(&self, state: &mut InferenceState, word: Word) -> Result<(), ModelError> {
        match (self, state) {
            (Inference::Cpu(m), InferenceState::Cpu(s)) => WordModel::step(m.as_ref(), s.as_mut(), word),
            (Inference::Device(m), InferenceState::Device(s)) => WordModel::step(m.as_ref(), s, word),
            _ => Err(ModelError::ForeignState),
        }
    }
    fn type_logits(&self, state: &InferenceState, out: &mut [f32]) -> Result<(), ModelError> {
        match (self, state) {
            (Inference::Cpu(m), InferenceState::Cpu(s)) => WordModel::type_logits(m.as_ref(), s.as_ref(), out),
            (Inference::Device(m), InferenceState::Device(s)) => WordModel::type_logits(m.as_ref(), s, out),
            _ => Err(ModelError::ForeignState),
        }
    }
    fn family_logits(&self, state: &mut InferenceState, word_type: u16, out: &mut [Vec<f32>; FAMILIES]) -> Result<(), ModelError> {
        match (self, state) {
            (Inference::Cpu(m), InferenceState::Cpu(s)) => WordModel::family_logits(m.as_ref(), s.as_mut(), word_type, out),
            (Inference::Device(m), InferenceState::Device(s)) => WordModel::family_logits(m.as_ref(), s, word_type, out),
            _ => Err(ModelError::ForeignState),
        }
    }
    fn state_bytes(&self, state: &InferenceState) -> usize {
        match state {
            InferenceState::Cpu(s) => s.bytes(),
            InferenceState::Device(s) => s.bytes(),
        }
    }
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
            velocity: crate::music::grid::velocity_value(n.note.velocity),
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
pub struct Generator<'m, M: WordModel = CpRnn> {
    model: &'m M,
    settings: GenerationSettings,
    state: M::State,
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
    /// The last Metrical position written in the current bar (16ths from the start).
    position: Option<u32>,
    finish: Option<Finish>,
    error: Option<ModelError>,
    /// With `remember_bars`: the state before every `bars_per_state`-th Bar word (its index,
    /// the state having fed the words before it), so `regenerate_from_bar` replays fewer bars
    /// than that.
    bar_states: Option<Vec<BarState<M::State>>>,
    /// Bars between remembered states: `BARS_PER_STATE`, doubled each time the states would
    /// pass `STATE_BUDGET`.
    bars_per_state: u32,
    /// The most bytes `bar_states` may hold.
    state_budget: usize,
    /// Bar words among the fed words.
    fed_bars: u32,
    /// Words the song began with (its prime, or the kept bars of a regeneration).
    primed: usize,
    /// The first bar (0-based) with sampled words: the form copies no bar before it.
    first_sampled_bar: u32,
    /// The words of an earlier bar still to be written again, by index into `words` (empty
    /// when the next word is sampled). See `generate::form`.
    copy: std::ops::Range<usize>,
    /// Words written as copies of earlier bars (since the prime).
    copied: usize,
}

/// The model state just before a Bar word.
struct BarState<S> {
    /// The Bar word's index in the song.
    index: usize,
    /// Bar words before it.
    bars_before: u32,
    state: S,
}

/// Bars between the states `remember_bars` keeps at first (a state of `small` is ~400 KB).
const BARS_PER_STATE: u32 = 2;
/// The most bytes of remembered states a song keeps by default: past it every other state is
/// dropped and the spacing doubles (a `small-hybrid` state, with its softmax layers' keys and
/// values, is ~4.5 MB; `small` never reaches it below ~300 bars).
pub const STATE_BUDGET: usize = 128 << 20;

/// Why a song cannot be regenerated from a bar.
#[derive(Debug, thiserror::Error)]
pub enum RegenerateError {
    #[error("bar {bar} is not in the song (it has {bars} bars; bars count from 1)")]
    NoSuchBar { bar: u32, bars: u32 },
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl<'m> Generator<'m, CpRnn> {
    /// Starts a song with its opening Bar word.
    pub fn new(model: &'m CpRnn, settings: GenerationSettings) -> Generator<'m, CpRnn> {
        Generator::with_prime(model, settings, &[Word::BAR])
    }

    /// Starts a song that continues `prime` (e.g. a producer's clip encoded as CP words; a
    /// trailing EOS is dropped). An empty prime starts with a Bar word.
    pub fn with_prime(model: &'m CpRnn, settings: GenerationSettings, prime: &[Word]) -> Generator<'m, CpRnn> {
        Generator::try_with_prime(model, settings, prime).expect("the CPU model does not fail")
    }
}

impl<'m, M: WordModel> Generator<'m, M> {
    /// Starts a song that continues `prime` on any model; fails if the model cannot make a state.
    pub fn try_with_prime(model: &'m M, settings: GenerationSettings, prime: &[Word]) -> Result<Generator<'m, M>, ModelError> {
        let mut words: Vec<Word> = prime.iter().copied().take_while(|w| w.get(Family::Type) != TYPE_EOS).collect();
        if words.is_empty() {
            words.push(Word::BAR);
        }
        let pitch_allowed = crate::music::key::allowed_pitches(settings.key);
        let mut g = Generator {
            model,
            state: model.new_state()?,
            rng: Rng::new(settings.seed),
            scratch: Scratch::with_capacity(256),
            type_logits: vec![0.0; 3],
            logits: std::array::from_fn(|f| vec![0.0; crate::tokens::cp::FAMILY_SIZES[f]]),
            pitch_allowed,
            words: Vec::with_capacity(settings.max_words.min(1 << 16) + prime.len()),
            fed: 0,
            decoder: cp::Decoder::new(),
            bars: 0,
            position: None,
            finish: None,
            error: None,
            bar_states: None,
            bars_per_state: BARS_PER_STATE,
            state_budget: STATE_BUDGET,
            fed_bars: 0,
            primed: words.len(),
            first_sampled_bar: 0,
            copy: 0..0,
            copied: 0,
            settings,
        };
        for w in words {
            g.record(w);
        }
        g.first_sampled_bar = g.first_sampled_bar();
        g.feed_to(g.words.len() - 1)?;
        Ok(g)
    }

    /// Keeps the model state at every other bar line from here on (the prime's bars included
    /// when called first), so that `regenerate_from_bar` costs at most one bar of replay;
    /// within `STATE_BUDGET` bytes of states (see `remember_bars_within`).
    pub fn remember_bars(self) -> Result<Self, ModelError> {
        self.remember_bars_within(STATE_BUDGET)
    }

    /// `remember_bars` within `budget` bytes of states: past it every other state is dropped
    /// and the spacing doubles, so a regeneration replays more bars but memory stays bounded.
    pub fn remember_bars_within(mut self, budget: usize) -> Result<Self, ModelError> {
        let upto = self.fed;
        self.bar_states = Some(Vec::new());
        self.state_budget = budget;
        self.bars_per_state = BARS_PER_STATE;
        self.state = self.model.new_state()?;
        (self.fed, self.fed_bars) = (0, 0);
        self.feed_to(upto)?;
        Ok(self)
    }

    /// Bytes of the states `remember_bars` keeps now.
    pub fn remembered_bytes(&self) -> usize {
        self.bar_states.iter().flatten().map(|s| self.model.state_bytes(&s.state)).sum()
    }

    /// Feeds the words from `fed` up to (not including) `upto`, keeping bar states on the way.
    fn feed_to(&mut self, upto: usize) -> Result<(), ModelError> {
        while self.fed < upto {
            let word = self.before_feed();
            self.model.step(&mut self.state, word)?;
            self.fed += 1;
        }
        Ok(())
    }

    /// The next word to feed, after keeping the state before it when it opens a remembered bar.
    fn before_feed(&mut self) -> Word {
        let word = self.words[self.fed];
        if word.is_bar() {
            if let Some(states) = &mut self.bar_states {
                if self.fed_bars.is_multiple_of(self.bars_per_state) && states.last().is_none_or(|s| s.index < self.fed) {
                    states.push(BarState { index: self.fed, bars_before: self.fed_bars, state: self.state.clone() });
                    while states.iter().map(|s| self.model.state_bytes(&s.state)).sum::<usize>() > self.state_budget && states.len() > 1 {
                        self.bars_per_state *= 2;
                        let spacing = self.bars_per_state;
                        states.retain(|s| s.bars_before % spacing == 0);
                    }
                }
            }
            self.fed_bars += 1;
        }
        word
    }

    /// Keeps bars 1..`bar` - 1 (and the Bar word that opens `bar`) and samples the rest anew
    /// with `seed` and the same settings: the song then equals `with_prime` of those words at
    /// that seed. Bars count from 1. Cheap after `remember_bars`; otherwise the kept words are
    /// replayed from the start.
    pub fn regenerate_from_bar(&mut self, bar: u32, seed: u64) -> Result<(), RegenerateError> {
        let bars = self.decoder_bars();
        if bar == 0 || bar > bars {
            return Err(RegenerateError::NoSuchBar { bar, bars });
        }
        let kept = cp::first_bars(&self.words, bar - 1).to_vec();
        let cut = kept.len() - 1;
        self.primed = kept.len();
        let states = self.bar_states.as_mut().map(|states| {
            states.retain(|s| s.index <= cut);
            states.last()
        });
        match states.flatten() {
            Some(s) => (self.fed, self.fed_bars, self.state) = (s.index, s.bars_before, s.state.clone()),
            None => (self.fed, self.fed_bars, self.state) = (0, 0, self.model.new_state()?),
        }
        self.words.clear();
        self.decoder = cp::Decoder::new();
        self.bars = 0;
        self.position = None;
        for w in kept {
            self.record(w);
        }
        self.first_sampled_bar = self.first_sampled_bar();
        self.copy = 0..0;
        self.copied = 0;
        self.finish = None;
        self.error = None;
        self.settings.seed = seed;
        self.rng = Rng::new(seed);
        self.feed_to(cut)?;
        Ok(())
    }

    /// Bars the song has begun (its Bar words).
    fn decoder_bars(&self) -> u32 {
        self.words.iter().filter(|w| w.is_bar()).count() as u32
    }

    /// The first bar whose words will be sampled, for the words recorded so far (all primed):
    /// the bar their last Bar word opens, or the one after the bar they end inside.
    fn first_sampled_bar(&self) -> u32 {
        let bars = self.decoder_bars();
        if self.words.last().is_some_and(|w| w.is_bar()) {
            bars.saturating_sub(1)
        } else {
            bars
        }
    }

    /// At a Bar word opening bar `bar`: when the form repeats an earlier bar here, queues that
    /// bar's words (after its Bar word, up to and including the Bar word that closes it).
    fn plan_copy(&mut self, bar: u32) {
        let Some(source) = self.settings.form_in_force().and_then(|form| form.source_bar(bar, self.first_sampled_bar)) else { return };
        let mut bar_words = self.words.iter().enumerate().filter(|(_, w)| w.is_bar()).map(|(i, _)| i);
        if let (Some(start), Some(end)) = (bar_words.nth(source as usize), bar_words.next()) {
            self.copy = start + 1..end + 1;
        }
    }

    /// The next word, when it is a copy of an earlier bar's (see `plan_copy`).
    fn next_copied(&mut self) -> Option<Word> {
        let word = self.copy.next().map(|i| self.words[i]);
        self.copied += word.is_some() as usize;
        word
    }

    /// Words the form copied from earlier bars, among those written after the prime.
    pub fn copied(&self) -> usize {
        self.copied
    }

    /// Words the song began with rather than sampled (the prime, or the bars a regeneration kept).
    pub fn primed(&self) -> usize {
        self.primed
    }

    /// The settings in force (the seed changes with `regenerate_from_bar`).
    pub fn settings(&self) -> &GenerationSettings {
        &self.settings
    }

    /// Why the model failed, when `finish` is `Failed`.
    pub fn error(&self) -> Option<&ModelError> {
        self.error.as_ref()
    }

    /// Appends a word to the song and decodes it.
    fn record(&mut self, word: Word) -> Event {
        self.words.push(word);
        let event = self.decoder.push(word);
        match event {
            Event::Bar(b) => {
                self.bars = b;
                self.position = None;
            }
            Event::Position { position, .. } => self.position = Some(position),
            _ => {}
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
        if !self.can_go_on() {
            return None;
        }
        let word = self.feed_to(self.fed + 1).and_then(|()| match self.next_copied() {
            Some(word) => Ok(word),
            None => self.sample_word(),
        });
        match word {
            Ok(word) => Some(self.accept(word)),
            Err(e) => {
                self.error = Some(e);
                self.finish = Some(Finish::Failed);
                None
            }
        }
    }

    /// Samples the next word from the model (fed up to it).
    fn sample_word(&mut self) -> Result<Word, ModelError> {
        match self.sample_type()? {
            None => Ok(Word::EOS),
            Some(ty) => {
                self.model.family_logits(&mut self.state, ty, &mut self.logits)?;
                Ok(self.sample_rest(ty))
            }
        }
    }

    /// False once the song has ended (here at the word cap, if it has reached it).
    fn can_go_on(&mut self) -> bool {
        if self.finish.is_none() && self.words.len() >= self.settings.max_words {
            self.finish = Some(Finish::WordCap);
        }
        self.finish.is_none()
    }

    /// Records a sampled word and ends the song where it says so.
    fn accept(&mut self, word: Word) -> Step {
        let event = self.record(word);
        match event {
            Event::End => self.finish = Some(Finish::Eos),
            Event::Bar(b) if self.settings.max_bars.is_some_and(|m| b >= m) => self.finish = Some(Finish::BarCap),
            Event::Bar(b) if !self.settings.chords_loop && self.settings.chords.as_ref().is_some_and(|p| b >= p.bars) => {
                self.finish = Some(Finish::BarCap)
            }
            _ => {}
        }
        if let (Event::Bar(bar), None) = (event, self.finish) {
            if self.copy.is_empty() {
                self.plan_copy(bar);
            }
        }
        Step { word, event }
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

    /// The first half of sampling a word: EOS (`None`) or the next word's type.
    fn sample_type(&mut self) -> Result<Option<u16>, ModelError> {
        self.model.type_logits(&self.state, &mut self.type_logits)?;
        let how = self.settings.sampling.families[Family::Type.index()];
        // EOS is drawn at the model's own probability (at the type temperature), outside the
        // type nucleus: a nucleus of 0.9 drops EOS whenever the model gives it under 10 %, which
        // a model unsure of where a song ends always does, and songs would never end.
        if self.bars >= self.settings.min_bars {
            self.type_logits[TYPE_EOS as usize] += self.settings.sampling.eos_bias;
            let t = how.temperature.max(1e-6);
            let max = self.type_logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let total: f32 = self.type_logits.iter().map(|l| ((l - max) / t).exp()).sum();
            let p_eos = ((self.type_logits[TYPE_EOS as usize] - max) / t).exp() / total;
            if (self.rng.uniform() as f32) < p_eos {
                return Ok(None);
            }
        }
        self.type_logits[TYPE_EOS as usize] = f32::NEG_INFINITY;
        self.type_logits[TYPE_NOTE as usize] += density_bias(self.settings.density);
        let ty = sample(&mut self.type_logits, how, &mut self.rng, &mut self.scratch) as u16;
        Ok(Some(ty))
    }

    /// The second half: the other families given the type, from `self.logits` (which
    /// `family_logits` filled).
    fn sample_rest(&mut self, ty: u16) -> Word {
        let mut word = Word([IGNORE; FAMILIES]);
        word.0[Family::Type.index()] = ty;
        if ty == TYPE_METRICAL {
            let change = self.next_chord_change();
            let bar_start = self.bars * POSITIONS_PER_BAR;
            if let Some((at, _)) = change.filter(|&(at, _)| at < bar_start + POSITIONS_PER_BAR) {
                // The chord changes in this bar: no Bar word, and no beat past the change, until
                // the change is written.
                let logits = &mut self.logits[Family::BarBeat.index()];
                logits[BAR as usize] = f32::NEG_INFINITY;
                for k in 0..POSITIONS_PER_BAR {
                    if bar_start + k > at {
                        logits[2 + k as usize] = f32::NEG_INFINITY;
                    }
                }
            }
            let bar_beat = self.sample_family(Family::BarBeat, true);
            word.0[Family::BarBeat.index()] = bar_beat;
            if bar_beat != BAR {
                word.0[Family::Tempo.index()] = self.sample_family(Family::Tempo, true);
                word.0[Family::Chord.index()] = match (&self.settings.chords, change) {
                    (None, _) => self.sample_family(Family::Chord, true),
                    (Some(_), Some((at, chord))) if bar_start + (bar_beat - 2) as u32 == at => 2 + chord.index() as u16,
                    (Some(_), _) => CONTI,
                };
            }
        } else if ty == TYPE_NOTE {
            if let (Some(progression), Some(position)) = (&self.settings.chords, self.position) {
                let tones = progression.chord_at(position).pitch_class_mask();
                let logits = &mut self.logits[Family::Pitch.index()];
                for (id, logit) in logits.iter_mut().enumerate().skip(1) {
                    let pitch = crate::music::grid::PITCH_MIN as usize + id - 1;
                    if tones & (1 << (pitch % 12)) != 0 {
                        *logit += self.settings.chord_tones;
                    }
                }
            }
            for f in [Family::Pitch, Family::Duration, Family::Velocity] {
                word.0[f.index()] = self.sample_family(f, true);
            }
        }
        word
    }

    /// The next chord change to write (position in 16ths, chord), when following a progression.
    fn next_chord_change(&self) -> Option<(u32, crate::music::chord::Chord)> {
        let progression = self.settings.chords.as_ref()?;
        let from = self.position.map_or(self.bars * POSITIONS_PER_BAR, |p| p + 1);
        progression.next_change(from, self.settings.chords_loop)
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
