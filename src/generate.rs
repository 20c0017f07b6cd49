//! Token-by-token generation through the KV cache: the same engine and the same sampling code
//! that checkpoints 10–12 validate.

use anyhow::{Result, ensure};
use ndarray::Array1;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::model::{Gpt2, KvCache};
use crate::sampling::{self, Sampling};

/// A generation in progress: the cache and the logits for the next position.
pub struct Generation<'m> {
    model: &'m Gpt2,
    cache: KvCache,
    logits: Array1<f32>, // [V]
}

impl<'m> Generation<'m> {
    /// Runs the prompt through the model (prefill), with cache room for `max_new` more tokens.
    pub fn start(model: &'m Gpt2, prompt: &[u32], max_new: usize) -> Result<Generation<'m>> {
        let context = model.config.n_positions;
        ensure!(!prompt.is_empty(), "the prompt is empty: there is nothing to continue");
        ensure!(
            prompt.len() + max_new <= context,
            "the prompt ({} tokens) plus {max_new} new tokens exceeds the model's context of \
             {context} tokens",
            prompt.len()
        );
        let mut cache = KvCache::new(&model.config, prompt.len() + max_new)?;
        let logits = model.forward(prompt, &mut cache)?;
        Ok(Generation { model, cache, logits })
    }

    /// The logits for the next token, [V].
    pub fn logits(&self) -> &Array1<f32> {
        &self.logits
    }

    /// Feeds one chosen token (decode step).
    pub fn push(&mut self, token: u32) -> Result<()> {
        self.logits = self.model.forward(&[token], &mut self.cache)?;
        Ok(())
    }
}

/// Picks next tokens: greedy, or seeded sampling from the warped distribution.
pub struct Picker {
    sampling: Sampling,
    rng: ChaCha8Rng,
}

impl Picker {
    pub fn new(sampling: Sampling, seed: u64) -> Picker {
        Picker { sampling, rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.sampling.is_greedy() {
            sampling::argmax(logits)
        } else {
            let probs = sampling::probabilities(logits, &self.sampling);
            sampling::draw(&probs, &mut self.rng)
        }
    }
}

/// Generates up to `max_new` tokens after `prompt`, calling `on_token` as each one is chosen.
/// Stops early after `eos` (which is included, as HF's `generate` includes it).
pub fn generate(
    model: &Gpt2,
    prompt: &[u32],
    max_new: usize,
    picker: &mut Picker,
    eos: Option<u32>,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    ensure!(max_new > 0, "max-tokens must be at least 1");
    let mut generation = Generation::start(model, prompt, max_new)?;
    let mut out = Vec::with_capacity(max_new);
    loop {
        let token = picker.pick(generation.logits().as_slice().expect("logits are contiguous"));
        out.push(token);
        on_token(token)?;
        if out.len() == max_new || Some(token) == eos {
            return Ok(out);
        }
        generation.push(token)?;
    }
}
