//! `llorch cost`: what a weight format costs, stage by stage. `validate --weights bf16` asks
//! whether our bf16 arithmetic is correct (against a truth made on the same rounded weights);
//! this asks what the format loses against the float64 truth on the checkpoint's *own* weights,
//! and whether that loss is no worse than an engine users trust at that precision (PyTorch
//! computing in bfloat16, say). Per checkpoint tensor and format it measures the relative RMS
//! error, rms(x − truth) / rms(truth), of
//!
//! - the weights' rounding alone: the float64 truth on the rounded weights, which every correct
//!   engine on them inherits;
//! - ours, and ours against that rounded truth (our arithmetic's share);
//! - every dump made at the format: the yardstick, and the others beside it.
//!
//! Checkpoint 3 (the cache) is left out: it holds checkpoint 2's k and v again.

mod plan;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use ndarray::ArrayViewD;
use serde::Serialize;

pub use plan::{Column, ColumnKind, FormatPlan, Plan};

use super::compare::{self, Tolerance};
use super::reference::{Case, Tensor};
use super::run::RefSource;
use super::runner::Runner;
use super::spec::{Checkpoint, Checks, Kind, Phase};
use crate::engine::{KvCache, Site, Tape, WeightFormat};

/// How much larger than the yardstick's relative RMS error against the truth ours's may be at a
/// reduced format (pooled over cases and layers, plus the accuracy rule's relative floor): ours
/// must be no less accurate than the yardstick.
/// Measured on every model CI runs (CHECKPOINTS.md, "The precision's cost"). At f32 the
/// yardstick is PyTorch's float32 run and the float32 rule's k_rms applies instead.
pub const K_COST: f64 = 1.0;

/// One error against the truth.
#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
pub struct Measured {
    /// rms(x − truth) / rms(truth); infinite when x holds NaN or ±Inf.
    pub rel_rms: f64,
    pub rms: f64,
    pub max_abs: f64,
}

impl Measured {
    fn of<A: compare::Element, B: compare::Element>(
        x: ArrayViewD<'_, A>,
        truth: ArrayViewD<'_, B>,
        mask: compare::Mask,
    ) -> Result<Measured> {
        let s = compare::compare(x, truth, Tolerance::Exact, mask)?;
        if s.non_finite > 0 {
            return Ok(Measured { rel_rms: f64::INFINITY, rms: f64::INFINITY, max_abs: f64::INFINITY });
        }
        let rel_rms = if s.ref_rms > 0.0 { s.rms / s.ref_rms } else { s.rms };
        Ok(Measured { rel_rms, rms: s.rms, max_abs: s.max_abs })
    }
}

/// One tensor of one case at one format: every column's error (None where a column is not
/// comparable: its decode step followed another token than the truth's, or its dump omits the
/// tensor).
#[derive(Serialize, Clone, Debug)]
pub struct CostRow {
    pub case: String,
    pub phase: Phase,
    pub checkpoint: u8,
    pub layer: Option<usize>,
    pub tensor: String,
    pub truth_rms: f64,
    /// Aligned with the format's columns.
    pub cells: Vec<Option<Measured>>,
    /// Ours's RMS error over the yardstick's.
    pub ratio: Option<f64>,
}

/// The verdict on one tensor of one pass (ln_2 of the decode step, say), pooled over the cases
/// and layers: one tensor's error has few degrees of freedom where it is dominated by a few
/// elements (a decode step's attention row), and there an engine that adds its own rounding to
/// the weights' is now and then closer to the truth by luck; pooled, that luck averages out.
#[derive(Serialize, Clone, Debug)]
pub struct Verdict {
    pub phase: Phase,
    pub checkpoint: u8,
    pub tensor: String,
    /// How many (case, layer) tensors were pooled.
    pub pooled: usize,
    /// sqrt(mean(rel_rms²)) of ours and of the yardstick.
    pub ours: f64,
    pub yardstick: f64,
    /// k · yardstick + the accuracy rule's relative floor (floor_eps · ε).
    pub allowed: f64,
    pub passed: bool,
}

impl Verdict {
    /// The share of its allowance ours uses.
    pub fn used(&self) -> f64 {
        if self.allowed > 0.0 { self.ours / self.allowed } else { f64::INFINITY }
    }
}

/// What one format costs, and the verdict.
#[derive(Serialize, Clone, Debug)]
pub struct FormatCost {
    pub format: WeightFormat,
    pub columns: Vec<Column>,
    pub yardstick: Option<String>,
    /// The k of the verdict at this format.
    pub k: f64,
    pub rows: Vec<CostRow>,
    /// Per tensor and pass, pooled over cases and layers; empty without a yardstick.
    pub verdicts: Vec<Verdict>,
    /// None without a yardstick: no verdict.
    pub passed: Option<bool>,
}

impl FormatCost {
    /// The verdict where ours comes closest to (or furthest past) its allowance.
    pub fn worst(&self) -> Option<&Verdict> {
        self.verdicts.iter().max_by(|a, b| a.used().total_cmp(&b.used()))
    }

    /// The index of ours among the columns.
    pub fn ours(&self) -> usize {
        self.columns.iter().position(|c| c.kind == ColumnKind::Ours).expect("every format has ours")
    }

    /// The index of the rounding column, if the format has one.
    pub fn rounding(&self) -> Option<usize> {
        self.columns.iter().position(|c| c.kind == ColumnKind::Rounding)
    }
}

/// The whole run.
#[derive(Serialize, Clone, Debug)]
pub struct CostReport {
    pub model: String,
    /// The float64 truth on the checkpoint's own weights.
    pub truth: String,
    pub truth_dir: String,
    pub formats: Vec<FormatCost>,
    /// Dumps of the run that no format used (made for a format not run), with why.
    pub unused: Vec<String>,
}

impl CostReport {
    /// False when a format's verdict failed.
    pub fn passed(&self) -> bool {
        self.formats.iter().all(|f| f.passed != Some(false))
    }
}

/// The dumps of a cost run, opened, and which play what part at which format.
pub struct CostRun {
    pub model_dir: PathBuf,
    pub dumps: Vec<RefSource>,
    pub plan: Plan,
}

impl CostRun {
    pub fn new(model_dir: &Path, dumps: Vec<RefSource>, formats: Option<&[WeightFormat]>) -> Result<CostRun> {
        let plan = Plan::new(&dumps, formats)?;
        Ok(CostRun { model_dir: model_dir.to_owned(), dumps, plan })
    }

    /// The case names (every dump has the same: checked at open).
    pub fn case_names(&self, only: Option<&str>) -> Result<Vec<String>> {
        let names: Vec<String> =
            self.dumps[0].reference.manifest.cases.iter().map(|c| c.name.clone()).collect();
        match only {
            None => Ok(names),
            Some(n) if names.iter().any(|c| c == n) => Ok(vec![n.to_string()]),
            Some(n) => anyhow::bail!("no case {n:?} in the dumps; they have {names:?}"),
        }
    }

    /// Measures one format with `engine` (holding its weights in that format) over `cases`.
    pub fn measure(
        &self,
        format: &FormatPlan,
        engine: &dyn Runner,
        cases: &[String],
        progress: &indicatif::ProgressBar,
    ) -> Result<FormatCost> {
        ensure!(engine.weights() == format.format, "the engine holds {} weights", engine.weights());
        let mut rows = Vec::new();
        for name in cases {
            let case = |i: usize| -> &Case {
                let cases = &self.dumps[i].reference.manifest.cases;
                cases.iter().find(|c| &c.name == name).expect("same cases in every dump")
            };
            let truth_case = case(self.plan.truth);
            let tokens = &truth_case.token_ids;
            let mut cache = KvCache::new(engine.config(), tokens.len() + 1)?;
            for (phase, input) in
                [(Phase::Prefill, tokens.clone()), (Phase::DECODE, vec![truth_case.next_token])]
            {
                let mut tape =
                    CostTape { run: self, format, case: &case, phase, name, rows: Vec::new(), progress };
                engine.forward(&input, &mut cache, &mut tape)?;
                rows.append(&mut tape.rows);
            }
        }
        let verdicts = verdicts(format, &rows);
        let passed = format.yardstick.map(|_| verdicts.iter().all(|v| v.passed));
        Ok(FormatCost {
            format: format.format,
            columns: format.columns(&self.dumps),
            yardstick: format.yardstick.map(|i| self.dumps[i].name.clone()),
            k: format.k(),
            rows,
            verdicts,
            passed,
        })
    }

    pub fn report(&self, formats: Vec<FormatCost>) -> CostReport {
        let truth = &self.dumps[self.plan.truth];
        CostReport {
            model: self.model_dir.display().to_string(),
            truth: truth.name.clone(),
            truth_dir: truth.reference.dir.display().to_string(),
            formats,
            unused: self.plan.unused(&self.dumps),
        }
    }
}

/// Every (pass, checkpoint, tensor)'s verdict: ours's and the yardstick's relative RMS errors
/// pooled over the rows where both are comparable.
fn verdicts(format: &FormatPlan, rows: &[CostRow]) -> Vec<Verdict> {
    let Some(yard) = format.yardstick_column() else { return Vec::new() };
    let ours = format.ours_column();
    let mut pooled: std::collections::BTreeMap<(Phase, u8, &str), (usize, f64, f64)> = Default::default();
    for row in rows {
        if let (Some(o), Some(y)) = (row.cells[ours], row.cells[yard]) {
            let p = pooled.entry((row.phase, row.checkpoint, row.tensor.as_str())).or_default();
            *p = (p.0 + 1, p.1 + o.rel_rms * o.rel_rms, p.2 + y.rel_rms * y.rel_rms);
        }
    }
    pooled
        .into_iter()
        .map(|((phase, checkpoint, tensor), (n, o, y))| {
            let (ours, yardstick) = ((o / n as f64).sqrt(), (y / n as f64).sqrt());
            let rule =
                Checkpoint::ALL[checkpoint as usize].accuracy().expect("float checkpoints have a rule");
            let allowed = format.k() * yardstick + rule.floor_eps * super::spec::F32_EPSILON;
            Verdict {
                phase,
                checkpoint,
                tensor: tensor.to_string(),
                pooled: n,
                ours,
                yardstick,
                allowed,
                passed: ours <= allowed,
            }
        })
        .collect()
}

/// The tape of one pass: every float tensor of checkpoints 0–9 but the cache, measured against
/// the truth the moment the pass records it.
struct CostTape<'a, F: Fn(usize) -> &'a Case> {
    run: &'a CostRun,
    format: &'a FormatPlan,
    case: &'a F,
    phase: Phase,
    name: &'a str,
    rows: Vec<CostRow>,
    progress: &'a indicatif::ProgressBar,
}

impl<'a, F: Fn(usize) -> &'a Case> CostTape<'a, F> {
    fn load(&self, i: usize, site: Site) -> Result<Option<Tensor>> {
        let case = (self.case)(i);
        let source = &self.run.dumps[i];
        match case.tensor(self.phase, site.checkpoint, site.layer, site.name) {
            Some(entry) => Ok(Some(source.reference.load(entry)?)),
            None if source.reference.omits(self.phase, site.checkpoint, site.name).is_some() => Ok(None),
            None => case.require(self.phase, site.checkpoint, site.layer, site.name).map(|_| None),
        }
    }

    /// Whether dump i's pass at this phase ran on the truth's tokens: a decode step after
    /// another argmax is another question.
    fn comparable(&self, i: usize) -> bool {
        self.phase == Phase::Prefill
            || (self.case)(i).next_token == (self.case)(self.run.plan.truth).next_token
    }
}

fn measure(x: &Tensor, truth: &Tensor, mask: compare::Mask) -> Result<Measured> {
    match (x, truth) {
        (Tensor::F32(a), Tensor::F64(b)) => Measured::of(a.view(), b.view(), mask),
        (Tensor::F64(a), Tensor::F64(b)) => Measured::of(a.view(), b.view(), mask),
        (Tensor::F32(a), Tensor::F32(b)) => Measured::of(a.view(), b.view(), mask),
        (Tensor::F64(a), Tensor::F32(b)) => Measured::of(a.view(), b.view(), mask),
    }
}

impl<'a, F: Fn(usize) -> &'a Case> Tape for CostTape<'a, F> {
    fn wants(&self, checkpoint: Checkpoint, _: Option<usize>) -> bool {
        checkpoint.on_decode_step() && checkpoint != Checkpoint::KvCache
    }

    fn record(&mut self, site: Site, ours: ArrayViewD<'_, f32>) -> Result<()> {
        let cp = site.checkpoint;
        let Some(Kind::Float { mask }) = cp.tensor(site.name).map(|t| t.kind) else { return Ok(()) };
        let plan = &self.run.plan;
        let at = || format!("{} of checkpoint {cp} ({}), case {}", site.name, self.phase, self.name);
        let truth = self.load(plan.truth, site)?.with_context(|| format!("the truth omits {}", at()))?;
        let truth_rms = {
            let zero = ndarray::ArrayD::<f32>::zeros(truth.shape());
            measure(&Tensor::F32(zero), &truth, mask)?.rms
        };
        let ours = Tensor::F32(ours.to_owned());
        let mut cells = Vec::new();
        for column in self.format.sources() {
            let cell = match column {
                plan::Measure::Ours => Some(measure(&ours, &truth, mask)?),
                plan::Measure::OursAgainst(i) => match (self.comparable(i), self.load(i, site)?) {
                    (true, Some(rounded)) => Some(measure(&ours, &rounded, mask)?),
                    _ => None,
                },
                plan::Measure::Dump(i) => match (self.comparable(i), self.load(i, site)?) {
                    (true, Some(theirs)) => Some(measure(&theirs, &truth, mask)?),
                    _ => None,
                },
            };
            cells.push(cell);
        }
        let ours_cell = cells[self.format.ours_column()];
        let yard_cell = self.format.yardstick_column().and_then(|c| cells[c]);
        let ratio = match (ours_cell, yard_cell) {
            (Some(o), Some(y)) if y.rms > 0.0 => Some(o.rms / y.rms),
            _ => None,
        };
        self.rows.push(CostRow {
            case: self.name.to_string(),
            phase: self.phase,
            checkpoint: cp.index(),
            layer: site.layer,
            tensor: site.name.to_string(),
            truth_rms,
            cells,
            ratio,
        });
        self.progress.inc(1);
        Ok(())
    }
}
