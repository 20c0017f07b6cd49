//! The result of a validation run: rows (one per check of one pair of sources), the sources
//! themselves, and what a search found. The renderers in `report` read this and nothing else,
//! so the table and the JSON cannot disagree.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::engine::WeightFormat;
use crate::validation::compare::{Heatmap, Stats, Tolerance};
use crate::validation::reference::{Omitted, Precision};
use crate::validation::spec::{Checkpoint, Mode, Phase, Place};
use crate::validation::systematic::Bias;

/// The name our engine has in every pair.
pub const OURS: &str = "ours";

/// Two sources compared with each other: ours and a reference, two references, or ours with
/// ours for an invariant of our own. The second is the one the rtol term scales with.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pair(pub String, pub String);

impl Pair {
    pub fn new(a: &str, b: &str) -> Pair {
        Pair(a.to_string(), b.to_string())
    }

    pub fn contains(&self, source: &str) -> bool {
        self.0 == source || self.1 == source
    }

    /// An invariant of our own engine, not a comparison of two sources.
    pub fn is_self(&self) -> bool {
        self.0 == self.1
    }

    /// Ours against another source or itself (ours is always the first of its pairs).
    pub fn is_ours(&self) -> bool {
        self.0 == OURS
    }
}

impl fmt::Display for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_self() {
            write!(f, "{} (invariant)", self.0)
        } else {
            write!(f, "{} vs {}", self.0, self.1)
        }
    }
}

/// The accuracy verdict of one tensor: is ours as accurate as the float32 peer, both measured
/// against the float64 truth? Carried by the row that compares ours with the truth.
#[derive(Serialize, Clone, Debug)]
pub struct Accuracy {
    pub truth: String,
    pub peer: String,
    /// max |ours − truth|
    pub err_ours: f64,
    /// max |peer − truth|
    pub err_peer: f64,
    /// err_ours / err_peer; null when the peer is exact.
    pub ratio: Option<f64>,
    /// rms(ours − truth), rms(peer − truth) and their ratio.
    pub rms_ours: f64,
    pub rms_peer: f64,
    pub rms_ratio: Option<f64>,
    pub k: f64,
    pub k_rms: f64,
    pub floor: f64,
    /// The relative floor, in float32 epsilons of the truth's magnitude.
    pub floor_eps: f64,
    /// k·err_peer + floor + floor_eps·ε·max |truth|
    pub allowed: f64,
    /// k_rms·rms_peer + floor + floor_eps·ε·rms(truth)
    pub allowed_rms: f64,
    /// The systematic error of ours − peer, where both computed the stage from the same input
    /// (isolated mode, a tensor large enough to bin).
    pub systematic: Option<Systematic>,
    pub passed: bool,
}

/// The systematic-error verdict of one tensor: the bias of ours − peer over bins of the
/// truth's value (`systematic::Bias`), judged by significance and size.
#[derive(Serialize, Clone, Debug)]
pub struct Systematic {
    #[serde(flatten)]
    pub bias: Bias,
    /// The bias in epsilons of rms(truth).
    pub epsilons: f64,
    /// The χ² unbiased noise exceeds once in 10⁹ tensors, and the bias allowed in epsilons.
    pub chi2_limit: f64,
    pub allowed_epsilons: f64,
    pub passed: bool,
}

/// Where a failing stage's fault lies, from its two verdicts: chained (on our own inputs) and
/// isolated (on the reference's).
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Blame {
    /// Fails chained, passes isolated: the stage is right, its input came wrong from an
    /// earlier stage.
    Drift,
    /// Fails isolated: the stage is wrong on the reference's own input.
    Wrong,
}

impl fmt::Display for Blame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Blame::Drift => "drift from an earlier stage",
            Blame::Wrong => "wrong itself",
        })
    }
}

/// What the data at hand says about why a tensor failed: the hypotheses that fit, best first,
/// then the checkpoint's common failures.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Diagnosis {
    /// Where in the tensor the error sits, when it has structure (some positions, columns or
    /// heads wrong while the rest is right), with the kernel path that points to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub findings: Vec<Finding>,
    /// What usually goes wrong at this checkpoint (CHECKPOINTS.md, "Common failures").
    pub common_failures: Vec<&'static str>,
    /// Why no hypothesis could be tested, when none could.
    pub note: Option<String>,
}

/// One hypothesis that fits: ours equals the reference computed with the named mistake.
#[derive(Serialize, Clone, Debug)]
pub struct Finding {
    /// The mistake, in words: "the erf GELU instead of the tanh approximation".
    pub cause: String,
    /// How well it fits, in words.
    pub evidence: String,
    /// max |ours − the hypothesis| and max |ours − the reference| over the compared elements.
    pub residual: f64,
    pub baseline: f64,
}

/// Why a token row whose tokens differ passed: a near tie by the truth's logits
/// (`run/ties.rs`).
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Tie {
    /// The two tokens the pair picked.
    pub tokens: [u32; 2],
    /// |z_a − z_b| in the truth's logits at that step.
    pub truth_gap: f64,
    /// The largest gap an engine within checkpoint 9's accuracy verdict may flip: twice the
    /// largest logit error it allows, given the peer's.
    pub threshold: f64,
    /// The peer's largest logit error against the truth at that step (the float32 noise).
    pub peer_error: f64,
}

/// (case, place, tensor, pair): what a row checks, apart from its mode.
pub type RowKey<'a> = (&'a str, Place, &'a str, &'a Pair);

/// One checked tensor or value, for one pair of sources.
#[derive(Serialize, Clone, Debug)]
pub struct Row {
    pub case: String,
    pub phase: Phase,
    /// Chained (our stages on our own inputs) or isolated (each on the reference's input).
    pub mode: Mode,
    #[serde(serialize_with = "as_index")]
    pub checkpoint: Checkpoint,
    pub layer: Option<usize>,
    pub tensor: String,
    pub shape: Vec<usize>,
    pub pair: Pair,
    pub tolerance: Tolerance,
    /// Within tolerance (or equal) and, where an accuracy verdict applies, accurate.
    pub passed: bool,
    /// Diff statistics for float tensors.
    pub stats: Option<Stats>,
    pub accuracy: Option<Accuracy>,
    /// What an exact check found, in words (token ids, first difference, ...).
    pub detail: Option<String>,
    /// On a failing row of ours: drift or wrong, when the stage's other mode ran too (isolated
    /// rows are always the stage's own fault).
    pub blame: Option<Blame>,
    /// On the failing row of ours against the reference that feeds isolated mode.
    pub diagnosis: Option<Diagnosis>,
    /// On a token row (checkpoints 10, 12) whose tokens differ but are a near tie by the
    /// truth's logits: the evidence (the row passed).
    pub tie: Option<Tie>,
    /// |diff| of the pair, pooled to a small grid, for the HTML report (only when one is
    /// written: failing tensors and those asked for with --heatmap).
    #[serde(skip)]
    pub heatmap: Option<Heatmap>,
}

fn as_index<S: serde::Serializer>(c: &Checkpoint, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u8(c.index())
}

impl Row {
    /// Whether the two sources agree within the fixed tolerance, whatever the accuracy verdict.
    pub fn agrees(&self) -> bool {
        match &self.stats {
            Some(stats) => stats.passed(),
            None => self.passed,
        }
    }

    /// Failed the accuracy verdict only: within every fixed tolerance, but less accurate than
    /// the peer.
    pub fn failed_accuracy_only(&self) -> bool {
        self.agrees() && self.accuracy.as_ref().is_some_and(|a| !a.passed)
    }

    pub fn place(&self) -> Place {
        Place::new(self.phase, self.checkpoint, self.layer)
    }

    /// What the row checks, apart from its mode: a tensor's chained and isolated rows share it.
    pub fn key(&self) -> RowKey<'_> {
        (self.case.as_str(), self.place(), self.tensor.as_str(), &self.pair)
    }

    /// The same tensor of the same case and place (any pair, any mode).
    pub fn same_tensor(&self, other: &Row) -> bool {
        self.case == other.case && self.place() == other.place() && self.tensor == other.tensor
    }

    pub fn location(&self) -> Location {
        Location {
            case: self.case.clone(),
            phase: self.phase,
            mode: self.mode,
            checkpoint: self.checkpoint,
            layer: self.layer,
            tensor: Some(self.tensor.clone()),
            pair: Some(self.pair.clone()),
        }
    }
}

/// Where something happened: case, phase, checkpoint, layer, and (for a row) the tensor and the
/// pair.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Location {
    pub case: String,
    pub phase: Phase,
    pub mode: Mode,
    #[serde(serialize_with = "as_index")]
    pub checkpoint: Checkpoint,
    pub layer: Option<usize>,
    pub tensor: Option<String>,
    pub pair: Option<Pair>,
}

impl Location {
    /// Everything but the case: "checkpoint 5 (attention output), layer 1, attn_out, ours vs
    /// pytorch-f32", after "decode step, " on the decode step and "isolated, " in isolated
    /// mode. An invariant's pair is left out: its tensor already says "(ours)".
    pub fn site(&self) -> String {
        let cp = self.checkpoint;
        let mut out = String::new();
        if self.mode == Mode::Isolated {
            out.push_str("isolated, ");
        }
        if self.phase.is_decode() {
            out.push_str(&format!("{}, ", self.phase));
        }
        out.push_str(&format!("checkpoint {} ({})", cp.index(), cp.title()));
        if let Some(l) = self.layer {
            out.push_str(&format!(", layer {l}"));
        }
        if let Some(t) = &self.tensor {
            out.push_str(&format!(", {t}"));
        }
        if let Some(p) = self.pair.as_ref().filter(|p| !p.is_self()) {
            out.push_str(&format!(", {p}"));
        }
        out
    }
}

impl fmt::Display for Location {
    /// "case hello, checkpoint 5 (attention output), layer 1, attn_out, ours vs pytorch-f32"
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "case {}, {}", self.case, self.site())
    }
}

/// One source of a run: our engine, or a reference dump.
#[derive(Serialize, Clone, Debug)]
pub struct Source {
    pub name: String,
    /// The dump's directory; null for ours.
    pub dir: Option<String>,
    pub precision: Precision,
    /// The weights' format (ours), or the rounding of the weights a dump was made on.
    pub weights: WeightFormat,
    pub role: Role,
    /// The manifest's generator (library versions); null for ours.
    pub generator: Option<serde_json::Value>,
    /// The tensors the dump leaves out on purpose, with the reason.
    pub omitted: Vec<Omitted>,
}

/// What a source is to the run.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Our engine.
    Engine,
    /// The float64 dump the accuracy verdict measures against.
    Truth,
    /// The float32 dump whose error against the truth ours is measured by.
    Peer,
    /// Any other dump.
    Reference,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Engine => "engine",
            Role::Truth => "truth",
            Role::Peer => "peer",
            Role::Reference => "reference",
        })
    }
}

/// A source that disagrees with all the others on a tensor while they agree with each other.
#[derive(Serialize, Clone, Debug)]
pub struct OddOneOut {
    pub source: String,
    /// The first such tensor, in forward order.
    pub first: Location,
    /// How many tensors it was the odd one out on.
    pub tensors: usize,
}

/// How the float64 truths agreed with each other, when a run has two or more: every tensor they
/// share compared at `spec::TRUTHS_AGREE`, float64 against float64.
#[derive(Serialize, Clone, Debug)]
pub struct Truths {
    pub sources: Vec<String>,
    /// The largest |a − b| over every pair of truths and every tensor they share.
    pub worst_abs: f64,
    /// Tensors on which some pair of truths disagreed.
    pub disagreements: usize,
    /// The first such tensor, in forward order.
    pub first: Option<Location>,
    /// The truths that disagree with every other truth while those agree (three or more truths).
    pub odd_ones_out: Vec<String>,
}

impl Truths {
    /// From the rows of pairs of float64 sources, when there are two or more of them.
    fn of(sources: &[Source], rows: &[Row]) -> Option<Truths> {
        let names: Vec<&str> =
            sources.iter().filter(|s| s.precision == Precision::Float64).map(|s| s.name.as_str()).collect();
        if names.len() < 2 {
            return None;
        }
        let between: Vec<Row> = rows
            .iter()
            .filter(|r| {
                r.stats.is_some() && names.contains(&r.pair.0.as_str()) && names.contains(&r.pair.1.as_str())
            })
            .cloned()
            .collect();
        let worst_abs =
            between.iter().filter_map(|r| r.stats.as_ref()).map(|s| s.max_abs).fold(0.0, f64::max);
        let failing: Vec<&Row> = between.iter().filter(|r| !r.agrees()).collect();
        let mut tensors: Vec<Location> =
            failing.iter().map(|r| Location { pair: None, ..r.location() }).collect();
        let first = tensors.first().cloned();
        tensors.dedup();
        let odd_ones_out = odd_ones_out(&between).into_iter().map(|o| o.source).collect();
        Some(Truths {
            sources: names.iter().map(|n| n.to_string()).collect(),
            worst_abs,
            disagreements: tensors.len(),
            first,
            odd_ones_out,
        })
    }
}

/// The outcome of a search for the first failing (checkpoint, layer).
#[derive(Serialize, Clone, Debug)]
pub struct Search {
    pub strategy: &'static str,
    /// Forward runs this search made.
    pub forward_runs: usize,
    /// Forward runs a sequential walk (one run per site, in forward order) needs for the same
    /// answer: the first failure's position + 1, or every site when nothing fails.
    pub sequential_runs: usize,
    pub sites: usize,
    pub first_failure: Option<Location>,
}

/// The worst of a group of rows: largest max |diff|, largest RMS, and whether any failed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Worst {
    pub max_abs: f64,
    pub rms: f64,
    pub failed: bool,
}

/// (worst max |diff|, worst RMS) against the truth, per (phase, checkpoint), per source name.
pub type ErrorsAgainstTruth<'a> = BTreeMap<(Phase, Checkpoint), BTreeMap<&'a str, (f64, f64)>>;

#[derive(Serialize)]
pub struct Report {
    pub model: String,
    pub sources: Vec<Source>,
    pub rows: Vec<Row>,
    pub odd_ones_out: Vec<OddOneOut>,
    /// The float64 truths checked against each other, when there are two or more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truths: Option<Truths>,
    /// What a --until-fail or --bisect search did, when one ran.
    pub search: Option<Search>,
}

impl Report {
    pub fn new(model: String, sources: Vec<Source>, mut rows: Vec<Row>, search: Option<Search>) -> Report {
        blame(&mut rows);
        let odd_ones_out = odd_ones_out(&rows);
        let truths = Truths::of(&sources, &rows);
        Report { model, sources, rows, odd_ones_out, truths, search }
    }

    /// The source of `role` (the first, for `Role::Reference`).
    pub fn source(&self, role: Role) -> Option<&Source> {
        self.sources.iter().find(|s| s.role == role)
    }

    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.passed)
    }

    pub fn counts(&self) -> (usize, usize) {
        let passed = self.rows.iter().filter(|r| r.passed).count();
        (passed, self.rows.len() - passed)
    }

    /// The first failing row: rows are in forward order within each case (embeddings, then
    /// checkpoints 1–7 layer by layer, then the head), so this is where a source first goes
    /// wrong.
    pub fn first_failure(&self) -> Option<&Row> {
        self.rows.iter().find(|r| !r.passed)
    }

    /// The worst accuracy ratios per checkpoint, over the rows that carry them: (max-error
    /// ratio, RMS-error ratio), each the worst of its kind.
    /// Every source's error against the float64 truth, per (phase, checkpoint): the worst max
    /// |diff| and the worst RMS over the chained rows of that checkpoint (its tensors, layers
    /// and cases), keyed by source name. Empty without a truth.
    pub fn errors_against_truth<'r>(&'r self) -> ErrorsAgainstTruth<'r> {
        let mut errors = ErrorsAgainstTruth::new();
        let Some(truth) = self.source(Role::Truth) else { return errors };
        let against_truth = |r: &'r Row| {
            let source = if r.pair.0 == truth.name { &r.pair.1 } else { &r.pair.0 };
            (r.pair.contains(&truth.name) && !r.pair.is_self()).then_some((
                r.phase,
                r.checkpoint,
                source.as_str(),
            ))
        };
        for ((phase, cp, source), worst) in self.worst_by(against_truth) {
            errors.entry((phase, cp)).or_default().insert(source, (worst.max_abs, worst.rms));
        }
        errors
    }

    /// The chained rows with diff statistics, grouped by `key` (None leaves a row out): each
    /// group's worst.
    pub fn worst_by<'r, K: Ord>(&'r self, key: impl Fn(&'r Row) -> Option<K>) -> BTreeMap<K, Worst> {
        let mut groups: BTreeMap<K, Worst> = BTreeMap::new();
        for row in self.rows.iter().filter(|r| r.mode == Mode::Chained) {
            let (Some(stats), Some(k)) = (&row.stats, key(row)) else { continue };
            let worst = groups.entry(k).or_default();
            worst.max_abs = worst.max_abs.max(stats.max_abs);
            worst.rms = worst.rms.max(stats.rms);
            worst.failed |= !row.passed;
        }
        groups
    }

    pub fn worst_ratios(&self) -> BTreeMap<Checkpoint, (f64, f64)> {
        let mut worst: BTreeMap<Checkpoint, (f64, f64)> = BTreeMap::new();
        for row in &self.rows {
            let Some(a) = &row.accuracy else { continue };
            let entry = worst.entry(row.checkpoint).or_insert((0.0, 0.0));
            entry.0 = entry.0.max(a.ratio.unwrap_or(0.0));
            entry.1 = entry.1.max(a.rms_ratio.unwrap_or(0.0));
        }
        worst
    }

    /// The largest significant bias of ours − peer per checkpoint, in epsilons of the truth's
    /// rms (isolated rows; a bias the noise explains counts 0).
    pub fn worst_biases(&self) -> BTreeMap<Checkpoint, f64> {
        let mut worst: BTreeMap<Checkpoint, f64> = BTreeMap::new();
        for row in &self.rows {
            let Some(s) = row.accuracy.as_ref().and_then(|a| a.systematic.as_ref()) else { continue };
            let significant = if s.bias.chi2 > s.chi2_limit { s.epsilons } else { 0.0 };
            let entry = worst.entry(row.checkpoint).or_insert(0.0);
            *entry = entry.max(significant);
        }
        worst
    }
}

/// Labels every failing row of ours: isolated, the stage is wrong itself; chained, it is wrong
/// itself when its isolated row fails too, and drift from an earlier stage when that passes.
/// A chained row without an isolated counterpart stays unlabelled: one verdict cannot tell.
fn blame(rows: &mut [Row]) {
    let isolated: std::collections::HashMap<RowKey<'_>, bool> =
        rows.iter().filter(|r| r.mode == Mode::Isolated).map(|r| (r.key(), r.passed)).collect();
    let blames: Vec<Option<Blame>> = rows
        .iter()
        .map(|row| {
            if row.passed || !row.pair.is_ours() || row.pair.is_self() {
                return None;
            }
            match row.mode {
                Mode::Isolated => Some(Blame::Wrong),
                Mode::Chained => {
                    isolated.get(&row.key()).map(|&passed| if passed { Blame::Drift } else { Blame::Wrong })
                }
            }
        })
        .collect();
    for (row, blame) in rows.iter_mut().zip(blames) {
        row.blame = blame;
    }
}

/// For each tensor checked by three or more sources: the sources that disagree with every other
/// source are the odd ones out, provided the rest (at least two, and more than half of all)
/// agree pair by pair. With three sources that is the one that disagrees with two agreeing
/// others; among eight, a reference made from a nudged model and llama.cpp's GELU are both
/// named where both are off. Counted per source; the first tensor in forward order is kept.
fn odd_ones_out(rows: &[Row]) -> Vec<OddOneOut> {
    let mut found: Vec<OddOneOut> = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        // Rows of one tensor are adjacent: the checks emit every pair of a tensor together.
        let same = |r: &Row| r.same_tensor(&rows[i]) && r.mode == rows[i].mode;
        let end = i + rows[i..].iter().take_while(|r| same(r)).count();
        let group: Vec<&Row> = rows[i..end].iter().filter(|r| !r.pair.is_self()).collect();
        for source in odd_in_group(&group) {
            match found.iter_mut().find(|o| o.source == source) {
                Some(o) => o.tensors += 1,
                None => {
                    let mut first = group[0].location();
                    first.pair = None;
                    found.push(OddOneOut { source: source.to_string(), first, tensors: 1 });
                }
            }
        }
        i = end;
    }
    found
}

/// The odd ones out among the pairs of one tensor (see `odd_ones_out`).
fn odd_in_group<'r>(group: &[&'r Row]) -> Vec<&'r str> {
    let mut sources: Vec<&str> = group.iter().flat_map(|r| [r.pair.0.as_str(), r.pair.1.as_str()]).collect();
    sources.sort_unstable();
    sources.dedup();
    if sources.len() < 3 {
        return Vec::new();
    }
    let isolated: Vec<&str> = sources
        .iter()
        .copied()
        .filter(|s| {
            let with: Vec<&&Row> = group.iter().filter(|r| r.pair.contains(s)).collect();
            !with.is_empty() && with.iter().all(|r| !r.agrees())
        })
        .collect();
    let rest = sources.len() - isolated.len();
    let rest_agree =
        group.iter().filter(|r| !isolated.iter().any(|s| r.pair.contains(s))).all(|r| r.agrees());
    if isolated.is_empty() || rest < 2 || 2 * rest <= sources.len() || !rest_agree {
        return Vec::new();
    }
    isolated
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pair: (&str, &str), passed: bool) -> Row {
        Row {
            heatmap: None,
            case: "c".into(),
            phase: Phase::Prefill,
            mode: Mode::Chained,
            checkpoint: Checkpoint::Qkv,
            layer: Some(0),
            tensor: "k".into(),
            shape: vec![],
            pair: Pair::new(pair.0, pair.1),
            tolerance: Tolerance::Exact,
            passed,
            stats: None,
            accuracy: None,
            detail: None,
            blame: None,
            diagnosis: None,
            tie: None,
        }
    }

    #[test]
    fn the_source_that_disagrees_with_two_agreeing_others_is_named() {
        let rows = vec![row(("ours", "a"), true), row(("ours", "b"), false), row(("a", "b"), false)];
        let odd = odd_ones_out(&rows);
        assert_eq!(odd.len(), 1);
        assert_eq!(odd[0].source, "b");
        assert_eq!(odd[0].first.tensor.as_deref(), Some("k"));
    }

    /// A row of `pair` comparing [1.0] with [1.0 + off] at the truths' tolerance.
    fn compared(pair: (&str, &str), off: f64) -> Row {
        let a = ndarray::ArrayD::from_elem(ndarray::IxDyn(&[1]), 1.0f64);
        let b = ndarray::ArrayD::from_elem(ndarray::IxDyn(&[1]), 1.0 + off);
        let tolerance = crate::validation::spec::TRUTHS_AGREE;
        let stats = crate::validation::compare::compare(
            a.view(),
            b.view(),
            tolerance,
            crate::validation::compare::Mask::All,
        )
        .expect("same shapes");
        Row { passed: stats.passed(), stats: Some(stats), tolerance, ..row(pair, true) }
    }

    fn truth(name: &str) -> Source {
        Source {
            name: name.into(),
            dir: None,
            precision: Precision::Float64,
            weights: WeightFormat::F32,
            role: Role::Reference,
            generator: None,
            omitted: Vec::new(),
        }
    }

    #[test]
    fn truths_that_agree_say_so_and_one_off_among_three_is_named() {
        let sources: Vec<Source> = ["t1", "t2", "t3"].iter().map(|n| truth(n)).collect();
        let agree =
            vec![compared(("t1", "t2"), 1e-15), compared(("t1", "t3"), 0.0), compared(("t2", "t3"), 1e-15)];
        let t = Truths::of(&sources, &agree).expect("three truths");
        assert_eq!((t.disagreements, t.first.is_none()), (0, true));
        assert!(t.worst_abs > 0.0 && t.worst_abs < 1e-14);
        // t3 off by 1e-9: far below float32's noise, far above float64's.
        let off =
            vec![compared(("t1", "t2"), 1e-15), compared(("t1", "t3"), 1e-9), compared(("t2", "t3"), 1e-9)];
        let t = Truths::of(&sources, &off).expect("three truths");
        assert_eq!(t.disagreements, 1);
        assert_eq!(t.odd_ones_out, ["t3"]);
        // Fewer than two float64 sources: no truths to compare.
        assert!(Truths::of(&sources[..1], &agree).is_none());
    }

    #[test]
    fn two_sources_off_among_many_are_both_named_when_the_rest_agree() {
        let names = ["ours", "a", "b", "c", "gelu", "nudged"];
        let off = |s: &str| s == "gelu" || s == "nudged";
        let mut rows = Vec::new();
        for (i, x) in names.iter().enumerate() {
            for y in &names[i + 1..] {
                rows.push(row((x, y), !off(x) && !off(y)));
            }
        }
        let odd = odd_ones_out(&rows);
        let named: Vec<&str> = odd.iter().map(|o| o.source.as_str()).collect();
        assert_eq!(named, ["gelu", "nudged"]);
        // Three off among five: the agreeing rest is no majority, so nobody is blamed.
        let names = ["ours", "a", "x", "y", "z"];
        let off = |s: &str| ["x", "y", "z"].contains(&s);
        let mut rows = Vec::new();
        for (i, p) in names.iter().enumerate() {
            for q in &names[i + 1..] {
                rows.push(row((p, q), !off(p) && !off(q)));
            }
        }
        assert!(odd_ones_out(&rows).is_empty());
    }

    #[test]
    fn no_odd_one_out_when_all_agree_or_all_disagree_or_only_two_sources() {
        let all = vec![row(("ours", "a"), true), row(("ours", "b"), true), row(("a", "b"), true)];
        assert!(odd_ones_out(&all).is_empty());
        let none = vec![row(("ours", "a"), false), row(("ours", "b"), false), row(("a", "b"), false)];
        assert!(odd_ones_out(&none).is_empty());
        let two = vec![row(("ours", "a"), false)];
        assert!(odd_ones_out(&two).is_empty());
    }
}
