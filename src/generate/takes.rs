//! Variations: K takes (K <= 8) of one request, generated together. Take i is the song the
//! same settings give alone at seed `seed + i`, word for word; the takes share each pass over
//! the weights (`CpRnn::step_many`: one int8 matrix times K vectors instead of K matrix-vector
//! products), so K takes cost well under K songs. A take that ends drops out of the batch.
//! Runs on the plain-Rust recurrent model only (on a GPU, run K `Generator`s).

use crate::generate::{GenerationSettings, Generator};
use crate::model::cp_rnn::{CpRnn, RnnState, Rows};
use crate::model::cpu::MAX_ROWS;
use crate::music::grid::Grid;
use crate::tokens::cp::{Word, FAMILIES};

/// The most takes one request can have.
pub const MAX_TAKES: usize = MAX_ROWS;

/// Why takes cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TakesError {
    #[error("{0} takes: ask for 1 to {MAX_TAKES}")]
    Count(usize),
}

/// Refuses a number of takes outside 1..=`MAX_TAKES`.
pub fn check_count(count: usize) -> Result<(), TakesError> {
    if (1..=MAX_TAKES).contains(&count) {
        Ok(())
    } else {
        Err(TakesError::Count(count))
    }
}

/// K songs of one request, advanced word by word together.
pub struct Takes<'m> {
    model: &'m CpRnn,
    takes: Vec<Generator<'m, CpRnn>>,
    rows: Rows,
}

/// What a take writes next: a word already known (copied by its form, or EOS), or a word of a
/// sampled type whose other families are still to be sampled.
enum Next {
    Known(Word),
    Sampled(u16),
}

impl<'m> Takes<'m> {
    /// `count` takes continuing `prime` (a Bar word when empty), at seeds `settings.seed`,
    /// `settings.seed + 1`, ...
    pub fn new(model: &'m CpRnn, settings: &GenerationSettings, prime: &[Word], count: usize) -> Result<Takes<'m>, TakesError> {
        check_count(count)?;
        let takes = (0..count as u64)
            .map(|i| Generator::with_prime(model, GenerationSettings { seed: settings.seed.wrapping_add(i), ..settings.clone() }, prime))
            .collect();
        Ok(Takes { model, takes, rows: Rows::new(&model.config, count) })
    }

    /// The takes (each a generator: its words, bars, finish).
    pub fn takes(&self) -> &[Generator<'m, CpRnn>] {
        &self.takes
    }

    /// One word more for every take that has not ended; false once all have.
    pub fn next_words(&mut self) -> bool {
        let mut live: Vec<&mut Generator<'m, CpRnn>> = self.takes.iter_mut().filter_map(|g| g.can_go_on().then_some(g)).collect();
        if live.is_empty() {
            return false;
        }
        // Feed each take's last word, all in one pass over the weights.
        let words: Vec<Word> = live.iter_mut().map(|g| g.before_feed()).collect();
        let mut states: Vec<&mut RnnState> = live.iter_mut().map(|g| &mut g.state).collect();
        self.model.step_many(&mut states, &words, &mut self.rows);
        for g in live.iter_mut() {
            g.fed += 1;
        }
        // A take inside a repeated section (its form) writes the copied word; each other take
        // draws EOS or a type, and those with a type get their other families' logits together,
        // then sample them.
        let next: Vec<Next> = live
            .iter_mut()
            .map(|g| match g.next_copied() {
                Some(word) => Next::Known(word),
                None => match g.sample_type().expect("the CPU model does not fail") {
                    None => Next::Known(Word::EOS),
                    Some(ty) => Next::Sampled(ty),
                },
            })
            .collect();
        let mut wanted: Vec<(&RnnState, u16, &mut [Vec<f32>; FAMILIES])> = live
            .iter_mut()
            .zip(&next)
            .filter_map(|(g, next)| match *next {
                Next::Sampled(ty) => Some((&g.state, ty, &mut g.logits)),
                Next::Known(_) => None,
            })
            .collect();
        self.model.family_logits_many(&mut wanted, &mut self.rows);
        for (g, next) in live.iter_mut().zip(next) {
            let word = match next {
                Next::Known(word) => word,
                Next::Sampled(ty) => g.sample_rest(ty),
            };
            g.accept(word);
        }
        true
    }

    /// Runs every take to its end; returns their grids in take order.
    pub fn run_to_end(&mut self) -> Vec<Grid> {
        while self.next_words() {}
        self.takes.iter().map(Generator::grid).collect()
    }
}
