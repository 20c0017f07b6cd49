//! The checks: small functions that turn (ours, the references) into rows, one family each.
//! Float tensors are compared for every pair of sources and, with a float64 truth and a
//! float32 peer, judged by the accuracy rule; tokens and text are compared for equality;
//! invariants of our own engine are compared bit for bit.

use anyhow::{Context, Result};
use ndarray::{ArrayD, ArrayViewD};
use rayon::prelude::*;

use super::sources::Sources;
use crate::validation::spec::{Checkpoint, Checks, Kind, Mode, Phase, Place, TRUTHS_AGREE};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::engine::Config;
use crate::engine::sampling::Sampling;
use crate::engine::weights::Weights;
use crate::validation::compare::{self, Heatmap, Mask, Stats, Tolerance};
use crate::validation::diagnose::{self, Evidence};
use crate::validation::reference::{Case, Precision, Tensor, TensorEntry};
use crate::validation::result::{Accuracy, OURS, Pair, Row, Systematic};
use crate::validation::spec::chi2_limit;
use crate::validation::systematic::{self, Bias};

/// What one check of a pair found, from which its row is made.
enum Outcome {
    /// Float tensors compared element by element within a tolerance.
    Compared { tolerance: Tolerance, stats: Box<Stats> },
    /// Values that must be equal (token ids, text, an invariant's bits), and the comparison in
    /// words.
    Equal { equal: bool, detail: String },
    /// The check could not be made: a failure, with the reason.
    NotChecked { why: String },
}

/// What every check of one case needs: the references' entries for the case and the tolerance
/// overrides.
pub struct CaseContext<'a> {
    pub name: &'a str,
    pub sources: &'a Sources,
    /// The case as each reference dump has it, in the order of `sources.refs`.
    pub cases: Vec<&'a Case>,
    pub atol: Option<f64>,
    pub rtol: Option<f64>,
    /// --tolerance-scale: (source, factor).
    pub scales: &'a [(String, f64)],
    /// Which tensors get a |diff| heatmap, when an HTML report is written.
    pub heatmaps: Option<&'a HeatmapRequest>,
    pub mode: Mode,
    /// Whether the references' rows among themselves are emitted: they do not depend on the
    /// mode, so a run of both modes emits them once.
    pub ref_pairs: bool,
    /// The model, for the diagnosis's hypotheses.
    pub weights: &'a Weights,
    pub config: &'a Config,
}

/// Where a checked tensor is, and what our pass ran on: what a diagnosis needs beside it.
pub struct Checked<'a> {
    pub phase: Phase,
    pub checkpoint: Checkpoint,
    pub layer: Option<usize>,
    pub name: &'a str,
    pub tokens: &'a [u32],
    /// Positions cached before the pass.
    pub past: usize,
}

/// A float tensor of either precision, viewed.
enum View<'a> {
    F32(ArrayViewD<'a, f32>),
    F64(ArrayViewD<'a, f64>),
}

fn view(tensor: &Tensor) -> View<'_> {
    match tensor {
        Tensor::F32(a) => View::F32(a.view()),
        Tensor::F64(a) => View::F64(a.view()),
    }
}

/// The heatmaps an HTML report draws: every failing tensor's (its first failing pair), and the
/// first pair of every tensor named by --heatmap, up to a budget that keeps the page light.
pub struct HeatmapRequest {
    pub names: Vec<String>,
    budget: AtomicUsize,
}

impl HeatmapRequest {
    /// Heatmaps drawn at most in one report.
    pub const BUDGET: usize = 16;

    pub fn new(names: Vec<String>) -> HeatmapRequest {
        HeatmapRequest { names, budget: AtomicUsize::new(Self::BUDGET) }
    }

    /// Takes one heatmap from the budget; false when it is spent.
    fn take(&self) -> bool {
        self.budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
    }
}

/// Panels and cells of a heatmap: 4 heads, 48 rows of 96 cells at most.
const HEATMAP_PANELS: usize = 4;
const HEATMAP_CELLS: (usize, usize) = (48, 96);

fn heatmap_views(a: &View<'_>, b: &View<'_>, mask: Mask) -> Heatmap {
    let (p, c) = (HEATMAP_PANELS, HEATMAP_CELLS);
    match (a, b) {
        (View::F32(a), View::F32(b)) => compare::heatmap(a.view(), b.view(), mask, p, c),
        (View::F32(a), View::F64(b)) => compare::heatmap(a.view(), b.view(), mask, p, c),
        (View::F64(a), View::F32(b)) => compare::heatmap(a.view(), b.view(), mask, p, c),
        (View::F64(a), View::F64(b)) => compare::heatmap(a.view(), b.view(), mask, p, c),
    }
}

fn compare_views(a: &View<'_>, b: &View<'_>, tolerance: Tolerance, mask: Mask) -> Result<Stats> {
    match (a, b) {
        (View::F32(a), View::F32(b)) => compare::compare(a.view(), b.view(), tolerance, mask),
        (View::F32(a), View::F64(b)) => compare::compare(a.view(), b.view(), tolerance, mask),
        (View::F64(a), View::F32(b)) => compare::compare(a.view(), b.view(), tolerance, mask),
        (View::F64(a), View::F64(b)) => compare::compare(a.view(), b.view(), tolerance, mask),
    }
}

impl CaseContext<'_> {
    /// The tolerance of a float tensor, after --atol / --rtol.
    pub fn tolerance(&self, checkpoint: Checkpoint, name: &str) -> Tolerance {
        match checkpoint.tensor_tolerance(name) {
            Tolerance::Close { atol, rtol } => {
                Tolerance::Close { atol: self.atol.unwrap_or(atol), rtol: self.rtol.unwrap_or(rtol) }
            }
            Tolerance::Exact => Tolerance::Exact,
        }
    }

    /// The tolerance of a float tensor for one pair: `tolerance(..)` times the largest
    /// --tolerance-scale factor of the two sources (none: 1).
    fn pair_tolerance(&self, base: Tolerance, a: &str, b: &str) -> Tolerance {
        let factor = self
            .scales
            .iter()
            .filter(|(source, _)| source == a || source == b)
            .map(|&(_, f)| f)
            .fold(1.0, f64::max);
        match base {
            Tolerance::Close { atol, rtol } if factor != 1.0 => {
                Tolerance::Close { atol: atol * factor, rtol: rtol * factor }
            }
            other => other,
        }
    }

    /// A row of this case and mode, complete with what its check found.
    fn row(
        &self,
        Place { phase, checkpoint: cp, layer }: Place,
        tensor: &str,
        shape: &[usize],
        pair: Pair,
        outcome: Outcome,
    ) -> Row {
        let (tolerance, passed, stats, detail) = match outcome {
            Outcome::Compared { tolerance, stats } => (tolerance, stats.passed(), Some(*stats), None),
            Outcome::Equal { equal, detail } => (Tolerance::Exact, equal, None, Some(detail)),
            Outcome::NotChecked { why } => (Tolerance::Exact, false, None, Some(why)),
        };
        Row {
            case: self.name.to_string(),
            phase,
            mode: self.mode,
            checkpoint: cp,
            layer,
            tensor: tensor.to_string(),
            shape: shape.to_vec(),
            pair,
            tolerance,
            passed,
            stats,
            accuracy: None,
            detail,
            blame: None,
            diagnosis: None,
            tie: None,
            heatmap: None,
        }
    }

    /// One float tensor: ours against every reference, every reference against every other,
    /// then the accuracy verdict on the row of ours against the truth. `ours[i]` is what ours
    /// computed for reference i (the same view for all, except where the references fed our
    /// engine different inputs: the decode step after a different argmax).
    pub fn float_rows(
        &self,
        phase: Phase,
        cp: Checkpoint,
        layer: Option<usize>,
        name: &str,
        ours: &[ArrayViewD<'_, f32>],
    ) -> Result<Vec<Row>> {
        let mask = match cp.tensor(name).map(|t| t.kind) {
            Some(Kind::Float { mask }) => mask,
            _ => unreachable!("checkpoint {cp} has no float tensor {name:?}"),
        };
        let tolerance = self.tolerance(cp, name);
        let refs = &self.sources.refs;
        // (index into refs, entry, tensor) of every dump that has the tensor: a dump whose
        // manifest omits it on purpose sits this check out (the report lists what it omits), and
        // so does one that holds the first decode step only (every engine's dump has that one;
        // `dump_reference.py --decode-steps` adds later ones).
        let mut theirs = Vec::with_capacity(refs.len());
        for (i, (source, case)) in refs.iter().zip(&self.cases).enumerate() {
            let later_step = phase.step().is_some_and(|s| s > 1);
            if case.tensor(phase, cp, layer, name).is_none()
                && (later_step || source.reference.omits(phase, cp, name).is_some())
            {
                continue;
            }
            let entry = case.require(phase, cp, layer, name)?;
            let tensor = source.reference.load(entry)?;
            theirs.push((i, entry, tensor));
        }
        // Every pair: ours with each reference, then the references among themselves; compared
        // on all cores (a full-size run spends most of its time here), rows kept in this order.
        // Two float64 truths are held to each other's float64 agreement, not to float32's.
        let mut pairs: Vec<(View<'_>, &str, View<'_>, &str, &TensorEntry, Tolerance)> = Vec::new();
        for (i, entry, tensor) in &theirs {
            pairs.push((View::F32(ours[*i].view()), OURS, view(tensor), &refs[*i].name, entry, tolerance));
        }
        for (a, (i, ei, ti)) in theirs.iter().enumerate() {
            for (j, _, tj) in &theirs[a + 1..] {
                let truths = [*i, *j].iter().all(|&k| refs[k].precision == Precision::Float64);
                let base = if truths { TRUTHS_AGREE } else { tolerance };
                pairs.push((view(ti), &refs[*i].name, view(tj), &refs[*j].name, ei, base));
            }
        }
        let mut rows = pairs
            .par_iter()
            .map(|(a, a_name, b, b_name, entry, base)| {
                let tolerance = self.pair_tolerance(*base, a_name, b_name);
                let stats = compare_views(a, b, tolerance, mask).with_context(|| {
                    format!("comparing {name} of checkpoint {cp}, {a_name} vs {b_name} ({})", entry.file)
                })?;
                let outcome = Outcome::Compared { tolerance, stats: Box::new(stats) };
                Ok(self.row(
                    Place::new(phase, cp, layer),
                    name,
                    &entry.shape,
                    Pair::new(a_name, b_name),
                    outcome,
                ))
            })
            .collect::<Result<Vec<Row>>>()?;
        let bias = self.bias_of_ours(&theirs, ours, mask)?;
        self.judge_accuracy(cp, &mut rows, bias);
        if let Some(request) = self.heatmaps {
            // rows[i] is pairs[i]'s: one heatmap per tensor, of its first failing pair (or its
            // first pair when asked for by name).
            let asked = request.names.iter().any(|n| n == name);
            let kept = |r: &Row| self.ref_pairs || r.pair.is_ours();
            if let Some(i) = rows.iter().position(|r| kept(r) && (asked || !r.passed))
                && request.take()
            {
                let (a, _, b, _, _, _) = &pairs[i];
                rows[i].heatmap = Some(heatmap_views(a, b, mask));
            }
        }
        if !self.ref_pairs {
            rows.retain(|r| r.pair.is_ours());
        }
        Ok(rows)
    }

    /// Attaches the accuracy verdict to the row of ours against the truth: err_ours is that
    /// row's max |diff|, err_peer the max |diff| of the peer against the truth (and the same for
    /// the RMS). A peer that disagrees with the truth beyond tolerance is no yardstick: its own
    /// row fails, and no verdict is given.
    fn judge_accuracy(&self, cp: Checkpoint, rows: &mut [Row], bias: Option<Bias>) {
        let (Some(t), Some(p), Some(rule)) = (self.sources.truth, self.sources.peer, cp.accuracy()) else {
            return;
        };
        let (truth, peer) = (&self.sources.refs[t].name, &self.sources.refs[p].name);
        let stats = |rows: &'_ [Row], a: &str, b: &str| {
            rows.iter()
                .find(|r| (r.pair.0 == a && r.pair.1 == b) || (r.pair.0 == b && r.pair.1 == a))
                .and_then(|r| r.stats.clone())
        };
        let (Some(ours_stats), Some(peer_stats)) = (stats(rows, OURS, truth), stats(rows, peer, truth))
        else {
            return;
        };
        if !peer_stats.passed() {
            return;
        }
        let (err_ours, rms_ours) = (ours_stats.max_abs, ours_stats.rms);
        let (err_peer, rms_peer) = (peer_stats.max_abs, peer_stats.rms);
        // The truth's magnitude: the second source of the ours-vs-truth row.
        let (truth_max, truth_rms) = (ours_stats.ref_max_abs, ours_stats.ref_rms);
        let (allowed, allowed_rms) =
            (rule.allowed(err_peer, truth_max), rule.allowed_rms(rms_peer, truth_rms));
        let systematic = bias.map(|bias| Systematic {
            epsilons: bias.in_epsilons(),
            chi2_limit: chi2_limit(bias.bins),
            allowed_epsilons: rule.bias_eps,
            passed: !rule.bias_fails(&bias),
            bias,
        });
        let passed =
            err_ours <= allowed && rms_ours <= allowed_rms && systematic.as_ref().is_none_or(|s| s.passed);
        let ratio_of = |ours: f64, peer: f64| (peer > 0.0).then(|| ours / peer);
        let row = rows.iter_mut().find(|r| r.pair.is_ours() && &r.pair.1 == truth).expect("found above");
        row.passed &= passed;
        row.accuracy = Some(Accuracy {
            truth: truth.clone(),
            peer: peer.clone(),
            err_ours,
            err_peer,
            ratio: ratio_of(err_ours, err_peer),
            rms_ours,
            rms_peer,
            rms_ratio: ratio_of(rms_ours, rms_peer),
            k: rule.k,
            k_rms: rule.k_rms,
            floor: rule.floor,
            floor_eps: rule.floor_eps,
            allowed,
            allowed_rms,
            systematic,
            passed,
        });
    }

    /// The bias of ours − peer over bins of the truth's value, in isolated mode only: there ours
    /// and the peer computed the stage from the same input (the peer's), so the error both
    /// inherit cancels in their difference. In chained mode it does not, and what each inherits
    /// is correlated across the tensor (a row of logits is lm_head's image of a few LayerNorm
    /// errors): no bias test has an honest null there.
    fn bias_of_ours(
        &self,
        theirs: &[(usize, &TensorEntry, Tensor)],
        ours: &[ArrayViewD<'_, f32>],
        mask: Mask,
    ) -> Result<Option<Bias>> {
        let (Some(t), Some(p)) = (self.sources.truth, self.sources.peer) else { return Ok(None) };
        if self.mode != Mode::Isolated || p != self.sources.feed() {
            return Ok(None);
        }
        let tensor = |i: usize| theirs.iter().find(|(j, _, _)| *j == i).map(|(_, _, tensor)| tensor);
        let (Some(Tensor::F32(peer)), Some(Tensor::F64(truth))) = (tensor(p), tensor(t)) else {
            return Ok(None);
        };
        systematic::bias(ours[p].view(), peer.view(), truth.view(), mask)
    }

    /// The feeding reference's tensor (see `Sources::feed`).
    fn fed(&self, phase: Phase, cp: Checkpoint, layer: Option<usize>, name: &str) -> Result<Tensor> {
        let feed = self.sources.feed();
        let source = &self.sources.refs[feed];
        let entry = self.cases[feed].require(phase, cp, layer, name)?;
        source.reference.load(entry)
    }

    /// Isolated mode's input to the stage after `site`: the feeding reference's tensor there, in
    /// float32 (the precision our engine runs in).
    pub fn stage_input(
        &self,
        phase: Phase,
        cp: Checkpoint,
        layer: Option<usize>,
        name: &str,
    ) -> Result<ArrayD<f32>> {
        let tensor = self.fed(phase, cp, layer, name).with_context(|| {
            let name = &self.sources.refs[self.sources.feed()].name;
            format!("isolated mode feeds every stage {name}'s own input, and this dump lacks one")
        })?;
        Ok(match tensor {
            Tensor::F32(a) => a,
            Tensor::F64(a) => a.mapv(|x| x as f32),
        })
    }

    /// Attaches a diagnosis to the first failing row of ours among `rows` (one tensor's), if
    /// `wanted`: hypotheses tested on the feeding reference's stage inputs.
    pub fn diagnose(&self, rows: &mut [Row], at: &Checked<'_>, ours: ArrayViewD<'_, f32>, wanted: bool) {
        // Ours within tolerance of the feeding reference but not of another float32 reference
        // (a peer engine that is off itself): nothing in ours to diagnose against that one.
        let feed = &self.sources.refs[self.sources.feed()].name;
        let truth = self.sources.truth.map(|t| &self.sources.refs[t].name);
        let ours_passes_feed = rows.iter().any(|r| r.pair.is_ours() && &r.pair.1 == feed && r.passed);
        let suspect = |r: &Row| {
            let only_another_reference_disagrees = ours_passes_feed && Some(&r.pair.1) != truth;
            !r.passed && r.pair.is_ours() && !r.pair.is_self() && !only_another_reference_disagrees
        };
        let Some(row) = rows.iter_mut().find(|r| suspect(r)) else {
            return;
        };
        if wanted {
            let fetch = |cp: Checkpoint, layer: Option<usize>, name: &str| -> Result<ArrayD<f64>> {
                Ok(match self.fed(at.phase, cp, layer, name)? {
                    Tensor::F32(a) => a.mapv(f64::from),
                    Tensor::F64(a) => a,
                })
            };
            let s = &self.cases[0].sampling;
            let evidence = Evidence {
                checkpoint: at.checkpoint,
                layer: at.layer,
                name: at.name,
                ours,
                tolerance: self.tolerance(at.checkpoint, at.name),
                reference_name: &self.sources.refs[self.sources.feed()].name,
                reference: &fetch,
                weights: self.weights,
                config: self.config,
                tokens: at.tokens,
                past: at.past,
                sampling: Sampling::new(s.temperature as f32, s.top_k, s.top_p.map(|p| p as f32)).ok(),
            };
            row.diagnosis = Some(diagnose::diagnose(&evidence));
        }
    }

    /// A failing row that says why a check could not be made at all.
    pub fn cannot_check(&self, phase: Phase, cp: Checkpoint, tensor: &str, pair: Pair, why: String) -> Row {
        self.row(Place::new(phase, cp, None), tensor, &[], pair, Outcome::NotChecked { why })
    }

    /// Values that must be equal (token ids, text): ours against every reference, and the
    /// references among themselves. `theirs[i]` is reference i's value; `describe` words a
    /// comparison for the row's detail.
    pub fn equal_rows<T: PartialEq>(
        &self,
        cp: Checkpoint,
        tensor: &str,
        shape: &[usize],
        ours: &T,
        theirs: &[T],
        describe: impl Fn(&str, &T, &str, &T) -> String,
    ) -> Vec<Row> {
        let names: Vec<&str> = self.sources.refs.iter().map(|r| r.name.as_str()).collect();
        let mut rows = Vec::new();
        let mut emit = |a_name: &str, a: &T, b_name: &str, b: &T| {
            // Token checks (10, 12) belong to the prompt's pass.
            let outcome = Outcome::Equal { equal: a == b, detail: describe(a_name, a, b_name, b) };
            rows.push(self.row(
                Place::new(Phase::Prefill, cp, None),
                tensor,
                shape,
                Pair::new(a_name, b_name),
                outcome,
            ));
        };
        for (name, value) in names.iter().zip(theirs) {
            emit(OURS, ours, name, value);
        }
        for i in 0..theirs.len() {
            for j in i + 1..theirs.len() {
                if self.ref_pairs {
                    emit(names[i], &theirs[i], names[j], &theirs[j]);
                }
            }
        }
        rows
    }

    /// An invariant of our own engine: two of our tensors must be equal bit for bit.
    pub fn bitwise_row(
        &self,
        phase: Phase,
        cp: Checkpoint,
        layer: Option<usize>,
        what: &str,
        a: ArrayViewD<'_, f32>,
        b: ArrayViewD<'_, f32>,
    ) -> Result<Row> {
        let diff = compare::first_bitwise_difference(a.view(), b.view())?;
        let outcome = Outcome::Equal {
            equal: diff.is_none(),
            detail: match &diff {
                None => "bit-identical".to_string(),
                Some(i) => format!("differ first at {i:?}"),
            },
        };
        Ok(self.row(Place::new(phase, cp, layer), what, a.shape(), Pair::new(OURS, OURS), outcome))
    }
}
