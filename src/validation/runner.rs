//! Our engine as validation runs it: a runner in Polygraphy's sense, which produces the tensors
//! the checks compare. `Gpt2` is the runner of every normal build; the test build's planted
//! variants (`plant`) are runners too, wrapping it.

use anyhow::Result;
use ndarray::Array1;

use crate::engine::sampling::{self, Sampling};
use crate::engine::{Config, Gpt2, KvCache, Tape, WeightFormat};

pub trait Runner {
    /// The configuration the engine was loaded with.
    fn config(&self) -> &Config;

    /// The format the engine holds its weight matrices in.
    fn weights(&self) -> WeightFormat;

    /// The forward pass of `tokens` at positions cache.len().., recording on `tape`: the last
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
}
