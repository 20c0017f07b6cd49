//! Token-by-token generation through the KV cache: the same engine, sampling code and loop that
//! checkpoints 10–12 validate (checkpoint 12 runs `generate` itself).

use anyhow::{Result, ensure};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::sampling::{self, Sampling};
use super::{Config, Gpt2, KvCache};

/// What generation asks of a model: a pass over new tokens, then the logits of the last one.
/// `&Gpt2` is the one `llorch generate` and `llorch serve` use; validation's runners (the test
/// build's planted variants among them) are others, so that checkpoint 12 runs this very loop.
pub trait Decoder {
    fn config(&self) -> &Config;

    /// Runs `tokens` at positions cache.seq_len().. (the prompt, or one chosen token).
    fn step(&mut self, tokens: &[u32], cache: &mut KvCache) -> Result<()>;

    /// The logits of the last position of the last step, [V].
    fn logits<'a>(&'a self, cache: &'a KvCache) -> &'a [f32];
}

impl Decoder for &Gpt2 {
    fn config(&self) -> &Config {
        &self.config
    }

    fn step(&mut self, tokens: &[u32], cache: &mut KvCache) -> Result<()> {
        self.forward(tokens, cache)?;
        Ok(())
    }

    fn logits<'a>(&'a self, cache: &'a KvCache) -> &'a [f32] {
        cache.logits()
    }
}

/// A generation in progress: the model and its cache, which also holds the logits for the next
/// position.
pub struct Generation<M: Decoder> {
    model: M,
    cache: KvCache,
}

impl<M: Decoder> Generation<M> {
    /// Runs the prompt through the model (prefill), with cache room for `max_new` more tokens.
    pub fn start(mut model: M, prompt: &[u32], max_new: usize) -> Result<Generation<M>> {
        ensure!(!prompt.is_empty(), "the prompt is empty: there is nothing to continue");
        fits_context(prompt.len(), max_new, model.config().n_positions).map_err(anyhow::Error::msg)?;
        let mut cache = KvCache::new(model.config(), prompt.len() + max_new)?;
        model.step(prompt, &mut cache)?;
        Ok(Generation { model, cache })
    }

    /// The logits for the next token, [V].
    pub fn logits(&self) -> &[f32] {
        self.model.logits(&self.cache)
    }

    /// Feeds one chosen token (decode step): allocates nothing.
    pub fn push(&mut self, token: u32) -> Result<()> {
        self.model.step(&[token], &mut self.cache)
    }
}

/// Whether a prompt of `prompt` tokens and `max_new` more fit a context of `context`: the
/// reason why not, in words.
pub fn fits_context(prompt: usize, max_new: usize, context: usize) -> Result<(), String> {
    match prompt.checked_add(max_new) {
        Some(n) if n <= context => Ok(()),
        _ => Err(format!(
            "the prompt ({prompt} tokens) plus {max_new} new tokens exceeds the model's context of {context} tokens"
        )),
    }
}

/// Picks next tokens: greedy, or seeded sampling from the warped distribution.
/// Picking allocates nothing once the first token has sized its buffers.
pub struct Picker {
    sampling: Sampling,
    rng: ChaCha8Rng,
    probs: Vec<f32>, // [V]
    buffers: sampling::Buffers,
}

impl Picker {
    pub fn new(sampling: Sampling, seed: u64) -> Picker {
        let rng = ChaCha8Rng::seed_from_u64(seed);
        Picker { sampling, rng, probs: Vec::new(), buffers: sampling::Buffers::default() }
    }

    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.sampling.is_greedy() {
            sampling::argmax(logits)
        } else {
            sampling::probabilities_into(logits, &self.sampling, &mut self.probs, &mut self.buffers);
            sampling::draw(&self.probs, &mut self.rng)
        }
    }
}

/// Generates up to `max_new` tokens after `prompt`, calling `on_token` with each one as it is
/// chosen and the logits it was chosen from. Stops early after `eos` (which is included, as HF's
/// `generate` includes it).
pub fn generate<M: Decoder>(
    model: M,
    prompt: &[u32],
    max_new: usize,
    picker: &mut Picker,
    eos: Option<u32>,
    mut on_token: impl FnMut(u32, &[f32]) -> Result<()>,
) -> Result<Vec<u32>> {
    ensure!(max_new > 0, "max-tokens must be at least 1");
    let mut generation = Generation::start(model, prompt, max_new)?;
    let mut out = Vec::with_capacity(max_new);
    loop {
        let logits = generation.logits();
        let token = picker.pick(logits);
        out.push(token);
        on_token(token, logits)?;
        if out.len() == max_new || Some(token) == eos {
            return Ok(out);
        }
        generation.push(token)?;
    }
}
