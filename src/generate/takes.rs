//! Variations: K takes (K <= 8) of one request, generated together. Take i is the song the
//! same settings give alone at seed `seed + i`, word for word; the takes share each pass over
//! the weights (`CpRnn::step_many`: one int8 matrix times K vectors instead of K matrix-vector
//! products), so K takes cost less than K songs. A take that ends drops out of the batch, and
//! the next take waiting joins it: at most `batch` takes go together, as many as keep the
//! weights and their states in the cache (`batch_within`). Runs on the plain-Rust recurrent
//! model only (on a GPU, run K `Generator`s).

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
    /// Most takes advanced together (the first ones not ended, in take order).
    batch: usize,
}

/// The share of the last-level cache a batch's weights and states may fill.
const CACHE_SHARE: usize = 3;

/// How many takes to advance together, given the bytes of the last-level cache (`None`: not
/// known), of the weights and of one take's state, each read once per word of a batch. All of
/// them, unless their states would crowd the weights out of the cache: then as many as keep
/// weights + states within a third of it. On this project's 2-core EPYC (32 MB L3),
/// `small-hybrid` (5.8 MB of weights, 2.4 MB of key/value windows a take) ran 2 takes at 0.76
/// of a song's time each, 4 at 0.95 and 8 at 1.15, slower than one by one. Where the weights
/// alone pass the share (the paper model), they stream from memory anyway and sharing that
/// stream wins: all go together.
pub fn batch_within(cache: Option<usize>, weights: usize, state: usize, count: usize) -> usize {
    let Some(budget) = cache.map(|c| c / CACHE_SHARE) else { return count };
    if weights + state > budget {
        return count;
    }
    ((budget - weights) / state.max(1)).clamp(1, count)
}

/// Bytes of this CPU's last-level cache, where the system says (Linux's sysfs).
fn last_level_cache_bytes() -> Option<usize> {
    let caches = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    let mut best: Option<(u32, usize)> = None;
    for entry in caches.flatten() {
        let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).ok();
        let (Some(level), Some(size), Some(kind)) = (read("level"), read("size"), read("type")) else { continue };
        if kind.trim() == "Instruction" {
            continue;
        }
        let (Ok(level), size) = (level.trim().parse::<u32>(), size.trim()) else { continue };
        let bytes = match size.strip_suffix('K') {
            Some(k) => k.parse::<usize>().ok().map(|k| k * 1024),
            None => match size.strip_suffix('M') {
                Some(m) => m.parse::<usize>().ok().map(|m| m * 1024 * 1024),
                None => size.parse().ok(),
            },
        };
        if let Some(bytes) = bytes {
            if best.is_none_or(|(l, _)| level > l) {
                best = Some((level, bytes));
            }
        }
    }
    best.map(|(_, bytes)| bytes)
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
        let batch = batch_within(last_level_cache_bytes(), model.weight_bytes(), model.new_state().bytes(), count);
        Ok(Takes { model, takes, rows: Rows::new(&model.config, count), batch })
    }

    /// At most `batch` takes advanced together (1 to the number of takes); the songs are the
    /// same whatever it is.
    pub fn with_batch(mut self, batch: usize) -> Takes<'m> {
        self.batch = batch.clamp(1, self.takes.len());
        self
    }

    /// Most takes advanced together.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The takes (each a generator: its words, bars, finish).
    pub fn takes(&self) -> &[Generator<'m, CpRnn>] {
        &self.takes
    }

    /// One word more for each of the first `batch` takes that have not ended; false once all
    /// have.
    pub fn next_words(&mut self) -> bool {
        let mut live: Vec<&mut Generator<'m, CpRnn>> = self.takes.iter_mut().filter_map(|g| g.can_go_on().then_some(g)).take(self.batch).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_weights_and_states_within_a_third_of_the_cache() {
        let mb = 1_000_000;
        // small-hybrid on a 32 MiB cache: two takes' windows fit beside the weights.
        assert_eq!(batch_within(Some(32 << 20), 5_800_000, 2_400_000, 8), 2);
        // Linear attention's small state: all eight.
        assert_eq!(batch_within(Some(32 << 20), 5 * mb, 400_000, 8), 8);
        // Weights past the share stream from memory anyway: all go together.
        assert_eq!(batch_within(Some(32 << 20), 44 * mb, 2 * mb, 4), 4);
        // A cache that holds one take beside the weights: one by one.
        assert_eq!(batch_within(Some(30 * mb), 5 * mb, 4 * mb, 4), 1);
        // Unknown cache: all together; never more than asked for.
        assert_eq!(batch_within(None, 5 * mb, 2 * mb, 3), 3);
        assert_eq!(batch_within(Some(480 << 20), 5_800_000, 2_400_000, 4), 4);
    }
}
