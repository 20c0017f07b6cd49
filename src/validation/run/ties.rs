//! Near ties at the token checks (checkpoints 10 and 12). Two correct engines may pick different
//! tokens when the two tokens' logits are closer than float32 can tell apart: that is not a bug,
//! and failing it would teach users to ignore the row. Where the pair's tokens differ, the truth
//! (the float64 dump) says how far apart the two tokens' logits really are; if that gap is within
//! what an engine passing checkpoint 9's accuracy verdict may err by on each of the two logits,
//! the row is a *tie*, passed, with that evidence. A gap beyond it fails as before; without a
//! truth and a peer, or at a step the truth has no logits for, there is no evidence and nothing
//! changes.

use anyhow::Result;
use ndarray::Array1;

use super::checks::CaseContext;
use crate::validation::reference::Tensor;
use crate::validation::result::{Row, Tie};
use crate::validation::spec::{Checkpoint, Checks, Phase};

/// The truth's logits at one step and the noise there.
pub struct Evidence {
    truth: Array1<f64>,
    threshold: f64,
    peer_error: f64,
}

impl Evidence {
    /// The truth's and the peer's last-position logits of `phase` (checkpoint 9): the step that
    /// picks the token after the prompt (prefill) or the one after that (decode). None without
    /// a truth and a peer.
    pub fn at(ctx: &CaseContext<'_>, phase: Phase) -> Result<Option<Evidence>> {
        let (Some(truth), Some(peer)) = (ctx.sources.truth, ctx.sources.peer) else { return Ok(None) };
        let logits = |i: usize| -> Result<Array1<f64>> {
            let entry = ctx.cases[i].require(phase, Checkpoint::SelectedLogits, None, "selected_logits")?;
            let values = match ctx.sources.refs[i].reference.load(entry)? {
                Tensor::F32(a) => a.mapv(f64::from),
                Tensor::F64(a) => a,
            };
            Ok(values.into_dimensionality()?)
        };
        let (truth, peer) = (logits(truth)?, logits(peer)?);
        let peer_error = (&peer - &truth).iter().fold(0.0f64, |m, d| m.max(d.abs()));
        let truth_max = truth.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let rule = Checkpoint::SelectedLogits.accuracy().expect("checkpoint 9 has an accuracy rule");
        Ok(Some(Evidence { truth, threshold: 2.0 * rule.allowed(peer_error, truth_max), peer_error }))
    }

    /// A tie between tokens a and b, if the truth's gap between them is within the threshold.
    pub fn tie(&self, a: u32, b: u32) -> Option<Tie> {
        let z = |t: u32| self.truth.get(t as usize).copied();
        let truth_gap = (z(a)? - z(b)?).abs();
        (truth_gap <= self.threshold).then_some(Tie {
            tokens: [a, b],
            truth_gap,
            threshold: self.threshold,
            peer_error: self.peer_error,
        })
    }
}

/// Marks `row` (a failing token row) a tie when `tie` is some: passed, with the evidence first
/// in its words.
pub fn mark(row: &mut Row, tie: Option<Tie>) {
    if let (false, Some(tie)) = (row.passed, tie) {
        let evidence = format!(
            "tie: the truth's logits of {} and {} are {:.2e} apart, within {:.2e} (twice what checkpoint \
             9's accuracy verdict lets a logit err by, the peer's own error there being {:.2e})",
            tie.tokens[0], tie.tokens[1], tie.truth_gap, tie.threshold, tie.peer_error
        );
        row.detail = Some(match row.detail.take() {
            Some(detail) => format!("{evidence}; {detail}"),
            None => evidence,
        });
        row.passed = true;
        row.tie = Some(tie);
    }
}
