//! The diagnosis of a failing tensor: cheap hypotheses the data at hand can decide. Each
//! hypothesis is a classic mistake, computed in float64 from the reference's own input to the
//! stage (and the model's weights); it fits when our tensor equals it far more closely than it
//! equals the reference. In isolated mode our stage ran on exactly that input, so a fit is an
//! exact test; in chained mode (diagnosed at the first failure only) the input differs by the
//! float32 noise of the stages before, which passed.
//!
//! The hypotheses are classes, not a list of known bugs: any epsilon, any constant offset or
//! factor, any misplaced cache row, any layout of q/k/v or of the merged heads, every bias and
//! weight of every linear layer.

mod hypotheses;
mod location;
mod stages;

use anyhow::Result;
use ndarray::{ArrayD, ArrayViewD};

use crate::engine::Config;
use crate::engine::sampling::Sampling;
use crate::engine::weights::Weights;
use crate::validation::compare::{MASK_THRESHOLD, Tolerance};
use crate::validation::result::{Diagnosis, Finding};
use crate::validation::spec::{Checkpoint, Checks};

/// A hypothesis fits when ours is at least this many times closer to it than to the reference.
const CLOSER: f64 = 5.0;
/// ... and within this many times the checkpoint's tolerance of it.
const WITHIN_TOLERANCES: f64 = 10.0;
/// Findings shown at most, best first ...
const SHOWN: usize = 3;
/// ... and only those within this factor of the best (plus a float32-sized slack): a near miss
/// (epsilon 1e-8 when the best fit is 1e-6) is not a second explanation.
const NEAR_BEST: f64 = 10.0;

/// A reference's tensor of one phase at (checkpoint, layer, name), in float64.
pub type Fetch<'a> = dyn Fn(Checkpoint, Option<usize>, &str) -> Result<ArrayD<f64>> + 'a;

/// Everything a diagnosis may look at.
pub struct Evidence<'a> {
    pub checkpoint: Checkpoint,
    pub layer: Option<usize>,
    pub name: &'a str,
    pub ours: ArrayViewD<'a, f32>,
    pub tolerance: Tolerance,
    /// The name of the reference whose tensors are the stage inputs.
    pub reference_name: &'a str,
    /// That reference's tensor of this phase at (checkpoint, layer, name), in float64.
    pub reference: &'a Fetch<'a>,
    pub weights: &'a Weights,
    pub config: &'a Config,
    /// The pass's tokens and the positions cached before it.
    pub tokens: &'a [u32],
    pub past: usize,
    /// The case's sampling settings (checkpoint 11).
    pub sampling: Option<Sampling>,
}

/// A hypothesis: the mistake in words, and what the stage computes with it.
struct Candidate {
    cause: String,
    tensor: ArrayD<f64>,
    /// A constant offset or factor fitted to the data, which fits wherever a specific mistake
    /// scales or shifts the whole tensor (a missing 1/√D is a factor √D).
    generic: bool,
}

fn candidate<D: ndarray::Dimension>(cause: impl Into<String>, tensor: ndarray::Array<f64, D>) -> Candidate {
    Candidate { cause: cause.into(), tensor: tensor.into_dyn(), generic: false }
}

/// The hypotheses that fit our tensor, best first, then the checkpoint's common failures. A
/// hypothesis that cannot be computed (a tensor missing from an older dump) leaves a note.
pub fn diagnose(e: &Evidence<'_>) -> Diagnosis {
    let mut diagnosis =
        Diagnosis { common_failures: e.checkpoint.spec().common_failures.to_vec(), ..Default::default() };
    let result = (|| {
        let reference = (e.reference)(e.checkpoint, e.layer, e.name)?;
        let mut candidates = generic(e, &reference);
        candidates.extend(hypotheses::specific(e)?);
        anyhow::Ok((reference, candidates))
    })();
    match result {
        Ok((reference, candidates)) => {
            diagnosis.location =
                location::locate(e.ours.view(), reference.view(), e.tolerance, e.config.n_head);
            diagnosis.findings = judge(e, &reference, candidates);
        }
        Err(err) => diagnosis.note = Some(format!("the hypotheses could not be tested: {err:#}")),
    }
    diagnosis
}

/// Keeps the candidates ours fits, best first. Closeness is judged on the RMS distance (a few
/// elements' float32 noise in a chained run must not hide a fit) and the tolerance on the max.
/// A specific mistake comes before a fitted constant: where both fit, both explain the data,
/// the specific one names the bug (which of the two fits a hair closer is float32 noise).
fn judge(e: &Evidence<'_>, reference: &ArrayD<f64>, candidates: Vec<Candidate>) -> Vec<Finding> {
    let (baseline, baseline_rms) = distance(e.ours.view(), reference.view());
    let mut findings: Vec<(bool, Finding)> = candidates
        .into_iter()
        .filter_map(|c| {
            let (residual, residual_rms) = distance(e.ours.view(), c.tensor.view());
            let scale = c.tensor.iter().filter(|x| x.is_finite()).fold(0.0f64, |m, x| m.max(x.abs()));
            let fits = residual_rms * CLOSER <= baseline_rms
                && residual <= WITHIN_TOLERANCES * e.tolerance.allowed(scale);
            if !fits {
                return None;
            }
            let evidence = format!(
                "ours equals the stage recomputed with it from {}'s tensors to {} (max |diff|; ours \
                 vs {} itself: {})",
                e.reference_name,
                sci(residual),
                e.reference_name,
                sci(baseline)
            );
            Some((c.generic, Finding { evidence, cause: c.cause, residual, baseline }))
        })
        .collect();
    // Specific mistakes first, each kind best first; near misses are judged within a kind (a
    // fitted constant can match ours to the last bit where a recomputation in float64 cannot).
    findings.sort_by(|(a_generic, a), (b_generic, b)| {
        a_generic.cmp(b_generic).then(a.residual.total_cmp(&b.residual))
    });
    let best = |generic: bool| findings.iter().find(|(g, _)| *g == generic).map(|(_, f)| f.residual);
    let (best_specific, best_generic) = (best(false), best(true));
    findings.retain(|(generic, f)| {
        let best = if *generic { best_generic } else { best_specific };
        best.is_some_and(|best| f.residual <= NEAR_BEST * best + 1e-7)
    });
    findings.into_iter().map(|(_, f)| f).take(SHOWN).collect()
}

/// (max, rms) of |ours − x| over all elements; masked scores (below −1e30) are equal to each
/// other and infinitely far from any value; a shape mismatch is infinitely far.
fn distance(ours: ArrayViewD<'_, f32>, x: ArrayViewD<'_, f64>) -> (f64, f64) {
    if ours.shape() != x.shape() || ours.is_empty() {
        return (f64::INFINITY, f64::INFINITY);
    }
    let masked = |v: f64| v <= MASK_THRESHOLD;
    let (max, sum_sq) = ours.iter().zip(x.iter()).fold((0.0f64, 0.0), |(max, sum_sq), (&a, &b)| {
        let a = a as f64;
        let d = match (masked(a), masked(b)) {
            (true, true) => 0.0,
            (false, false) if a.is_finite() && b.is_finite() => (a - b).abs(),
            _ => f64::INFINITY,
        };
        (max.max(d), sum_sq + d * d)
    });
    (max, (sum_sq / ours.len() as f64).sqrt())
}

fn sci(x: f64) -> String {
    if x.is_infinite() { "∞".into() } else { format!("{x:.1e}") }
}

/// Hypotheses for any float tensor: a constant added, or a constant factor.
fn generic(e: &Evidence<'_>, reference: &ArrayD<f64>) -> Vec<Candidate> {
    let pairs: Vec<(f64, f64)> = e
        .ours
        .iter()
        .zip(reference.iter())
        .map(|(&a, &b)| (a as f64, b))
        .filter(|(a, b)| a.is_finite() && b.is_finite() && *b > MASK_THRESHOLD)
        .collect();
    if pairs.is_empty() || reference.shape() != e.ours.shape() {
        return Vec::new();
    }
    let n = pairs.len() as f64;
    let offset = pairs.iter().map(|(a, b)| a - b).sum::<f64>() / n;
    let (dot, norm) = pairs.iter().fold((0.0, 0.0), |(d, s), (a, b)| (d + a * b, s + b * b));
    let factor = if norm > 0.0 { dot / norm } else { 1.0 };
    let fitted = |cause: String, tensor: ArrayD<f64>| Candidate { cause, tensor, generic: true };
    vec![
        fitted(format!("a constant {offset:.3e} added to every element"), reference.mapv(|x| x + offset)),
        fitted(format!("every element multiplied by {factor:.6}"), reference.mapv(|x| x * factor)),
    ]
}
