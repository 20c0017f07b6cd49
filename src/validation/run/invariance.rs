//! The engine against itself: the same tokens through the forward pass in one pass, one token
//! at a time through the cache, and in chunks must give the same logits at every position, bit
//! for bit. The engine promises it: every product sums each output in the same order whatever
//! the number of rows (`engine/kernels`), attention sums a query's keys in the same order
//! whether the query comes alone or with others, and LayerNorm, GELU and softmax work a row at a
//! time. It is what users of other engines report broken ("tokens one at a time give other
//! logits than the whole prompt"): a prompt kernel and a decode kernel that sum differently, a
//! cache that a chunk's pass reads short, a position offset lost between chunks.

use anyhow::{Context, Result};
use ndarray::{Array2, Axis, concatenate};

use crate::engine::{KvCache, LogitsTape, NoTape};
use crate::validation::runner::Runner;

/// Every position's logits [N, V] of `tokens`, passed through the engine in `chunks` (token
/// counts, in order, adding up to N), each chunk after the ones before it in the cache.
pub fn logits_in_chunks(runner: &dyn Runner, tokens: &[u32], chunks: &[usize]) -> Result<Array2<f32>> {
    let mut cache = KvCache::new(runner.config(), tokens.len())?;
    let mut parts = Vec::with_capacity(chunks.len());
    let mut at = 0;
    for &n in chunks {
        let chunk = &tokens[at..at + n];
        let logits = if n == 1 {
            // A single token takes the decode step's path: its last-position logits.
            let last = runner.forward(chunk, &mut cache, &mut NoTape)?.context("a whole pass")?;
            last.insert_axis(Axis(0))
        } else {
            let mut tape = LogitsTape::default();
            runner.forward(chunk, &mut cache, &mut tape)?;
            tape.0.context("the pass recorded its logits")?
        };
        parts.push(logits);
        at += n;
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    Ok(concatenate(Axis(0), &views)?)
}

/// The ways to split N tokens checked against one pass: one token at a time, and a chunk of
/// the first third, one of the rest of the prompt (T tokens), then the continuation in threes.
pub fn splits(prompt: usize, total: usize) -> [(&'static str, Vec<usize>); 2] {
    let one_by_one = vec![1; total];
    let first = (prompt / 3).max(1).min(prompt);
    let mut chunks = vec![first];
    if prompt > first {
        chunks.push(prompt - first);
    }
    let mut left = total - prompt;
    while left > 0 {
        let n = left.min(3);
        chunks.push(n);
        left -= n;
    }
    [
        ("logits: one pass = token by token (ours)", one_by_one),
        ("logits: one pass = in chunks (ours)", chunks),
    ]
}

#[cfg(test)]
mod tests {
    use super::splits;

    #[test]
    fn the_splits_cover_every_token_once() {
        for (prompt, total) in [(1, 1), (1, 11), (2, 12), (27, 37), (140, 150)] {
            for (_, chunks) in splits(prompt, total) {
                assert_eq!(chunks.iter().sum::<usize>(), total, "{prompt} {total}: {chunks:?}");
                assert!(chunks.iter().all(|&n| n > 0));
            }
        }
        assert_eq!(splits(27, 37)[1].1, vec![9, 18, 3, 3, 3, 1]);
    }
}
