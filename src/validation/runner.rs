//! Our engine as validation runs it: a runner in Polygraphy's sense, which produces the tensors
//! the checks compare. `Gpt2` is the runner of every normal build; the test build's planted
//! variants (`plant`) are runners too, wrapping it.

use anyhow::{Context, Result};
use ndarray::Array1;

use crate::engine::generate::{self, Decoder, Picker};
use crate::engine::sampling::{self, Sampling};
use crate::engine::{Config, Gpt2, KvCache, NoTape, Tape, WeightFormat};

pub trait Runner {
    /// The configuration the engine was loaded with.
    fn config(&self) -> &Config;

    /// The format the engine holds its weight matrices in.
    fn weights(&self) -> WeightFormat;

    /// The forward pass of `tokens` at positions cache.seq_len().., recording on `tape`: the last
    /// position's logits [V], or None when the tape had all it wanted and the pass stopped.
    fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        tape: &mut dyn Tape,
    ) -> Result<Option<Array1<f32>>>;

    /// Checkpoint 11: softmax(warp(logits)) with the case's sampling settings.
    fn probabilities(&self, logits: &[f32], sampling: &Sampling) -> Vec<f32> {
        sampling::probabilities(logits, sampling)
    }

    /// Checkpoint 12: up to `n` greedy tokens after `prompt`, through the engine's own generation
    /// loop (`engine::generate`) on this runner's forward pass; `on_token` sees each token and
    /// the logits it was picked from.
    fn generate(
        &self,
        prompt: &[u32],
        n: usize,
        on_token: &mut dyn FnMut(u32, &[f32]) -> Result<()>,
    ) -> Result<Vec<u32>> {
        let stepper = Stepper { runner: self, logits: Array1::zeros(0) };
        greedy(stepper, prompt, n, self.config().eos_token_id, on_token)
    }
}

fn greedy<M: Decoder>(
    model: M,
    prompt: &[u32],
    n: usize,
    eos: Option<u32>,
    on_token: &mut dyn FnMut(u32, &[f32]) -> Result<()>,
) -> Result<Vec<u32>> {
    generate::generate(model, prompt, n, &mut Picker::new(Sampling::GREEDY, 0), eos, on_token)
}

/// A runner as generation's model: each step's logits are the ones its forward pass returns
/// (a planted variant's may not be those left in the cache).
struct Stepper<'r, R: Runner + ?Sized> {
    runner: &'r R,
    logits: Array1<f32>, // [V]
}

impl<R: Runner + ?Sized> Decoder for Stepper<'_, R> {
    fn config(&self) -> &Config {
        self.runner.config()
    }

    fn step(&mut self, tokens: &[u32], cache: &mut KvCache) -> Result<()> {
        self.logits = self.runner.forward(tokens, cache, &mut NoTape)?.context("a whole pass")?;
        Ok(())
    }

    fn logits<'a>(&'a self, _cache: &'a KvCache) -> &'a [f32] {
        self.logits.as_slice().expect("an owned array is contiguous")
    }
}

impl Runner for Gpt2 {
    fn config(&self) -> &Config {
        &self.config
    }

    fn weights(&self) -> WeightFormat {
        self.format()
    }

    fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        tape: &mut dyn Tape,
    ) -> Result<Option<Array1<f32>>> {
        self.forward_recorded(tokens, cache, tape)
    }

    /// Exactly what `llorch generate --temp 0` runs: the engine's loop on `Gpt2::forward`.
    fn generate(
        &self,
        prompt: &[u32],
        n: usize,
        on_token: &mut dyn FnMut(u32, &[f32]) -> Result<()>,
    ) -> Result<Vec<u32>> {
        greedy(self, prompt, n, self.config.eos_token_id, on_token)
    }
}
