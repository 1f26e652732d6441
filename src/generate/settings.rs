//! What a song request asks for (`GenerationSettings`): seed, sampling, caps, key lock, a chord
//! progression to follow and how strongly, density, form; and the logit biases those settings turn
//! into. Plain data, saved with every song.

use crate::generate::chords::Progression;
use crate::generate::form::Form;
use crate::generate::sampling::SamplingSettings;
use crate::music::key::Key;

/// What to generate.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerationSettings {
    pub seed: u64,
    pub sampling: SamplingSettings,
    /// Stop after this many words (the song so far is kept).
    pub max_words: usize,
    /// Stop when this many bars are complete.
    pub max_bars: Option<u32>,
    /// EOS is not sampled before this many bars are complete (default 8: the shipped model
    /// learnt where songs end, and 1 of 100 of its songs ends before 24 bars at this floor;
    /// POP909's songs have median 79 bars).
    pub min_bars: u32,
    pub key: Option<Key>,
    /// A chord progression to follow: a Metrical word with its chord is forced at every change
    /// point, and the chord stays CONTI elsewhere (the model samples everything else).
    #[serde(default)]
    pub chords: Option<Progression>,
    /// The progression repeats until the song ends; otherwise the song ends when it does.
    #[serde(default)]
    pub chords_loop: bool,
    /// While following a progression, the bonus (nats) on the pitch logits of the current
    /// chord's tones (0: the chord words alone steer, and the model mostly follows its own
    /// notes before them).
    #[serde(default = "default_chord_tones")]
    pub chord_tones: f32,
    /// More (up to +1) or fewer (down to -1) notes per bar: a bias on the type family's Note
    /// logit against Metrical (`density_bias`; EOS is drawn before it, unbiased).
    #[serde(default)]
    pub density: f32,
    /// Which sections repeat which (`Form`; default `Form::pop`). Ignored while following a
    /// chord progression, whose chords a copied bar would not follow. Songs saved before forms
    /// existed load with `Form::free`, which is how they were made.
    #[serde(default = "Form::free")]
    pub form: Form,
}

/// The default `chord_tones` bonus.
pub const CHORD_TONES: f32 = 3.0;

fn default_chord_tones() -> f32 {
    CHORD_TONES
}

/// The Note-logit bias of a density: 0.9 nats per unit below 0, 0.6 above. The model's odds
/// of another note are already high: at +0.9 nats an earlier model (run 11's step 17,000) ran
/// into bars of 44 notes, where 0.6 takes the shipped one from 14.5 to 21.3 notes a bar.
pub fn density_bias(density: f32) -> f32 {
    let d = density.clamp(-1.0, 1.0);
    if d < 0.0 {
        0.9 * d
    } else {
        0.6 * d
    }
}

impl GenerationSettings {
    /// The form songs of these settings get: none while following a chord progression, whose
    /// chords a copied bar would not follow.
    pub fn form_in_force(&self) -> Option<&Form> {
        self.chords.is_none().then_some(&self.form)
    }
}

impl Default for GenerationSettings {
    fn default() -> Self {
        GenerationSettings {
            seed: 0,
            sampling: SamplingSettings::default(),
            max_words: 8192,
            max_bars: None,
            min_bars: 8,
            key: None,
            chords: None,
            chords_loop: false,
            chord_tones: CHORD_TONES,
            density: 0.0,
            form: Form::pop(),
        }
    }
}
