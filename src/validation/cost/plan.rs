//! Who plays what part in a cost run, at each format: the truth (float64 on the checkpoint's own
//! weights), the rounded truth (float64 on the weights rounded to the format), the yardstick
//! (the engine ours must be no less accurate than) and the other dumps made at the format.

use anyhow::{Result, bail};
use serde::Serialize;

use crate::engine::WeightFormat;
use crate::validation::reference::Precision;
use crate::validation::run::RefSource;
use crate::validation::spec::{Checkpoint, Checks};

/// A column of a format's table.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Column {
    /// The source's name ("ours" for ours and ours's arithmetic).
    pub source: String,
    pub kind: ColumnKind,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// The float64 truth on the rounded weights: what the rounding alone costs.
    Rounding,
    /// Ours against the truth.
    Ours,
    /// Ours against the rounded truth: our arithmetic's share.
    Arithmetic,
    /// The dump whose error ours is judged by.
    Yardstick,
    /// Another dump at the format, shown beside.
    Other,
}

/// What a column measures against the truth.
#[derive(Clone, Copy, Debug)]
pub enum Measure {
    Ours,
    /// Ours against dump i instead of the truth.
    OursAgainst(usize),
    /// Dump i.
    Dump(usize),
}

/// One format's parts (indices into the run's dumps).
#[derive(Clone, Debug)]
pub struct FormatPlan {
    pub format: WeightFormat,
    pub rounded_truth: Option<usize>,
    pub yardstick: Option<usize>,
    pub others: Vec<usize>,
}

pub struct Plan {
    pub truth: usize,
    pub formats: Vec<FormatPlan>,
}

/// The precision an engine computes in when users run it at a format: PyTorch in bfloat16 holds
/// bf16 weights. Q8_0 has no such precision.
fn precision_of(format: WeightFormat) -> Option<Precision> {
    match format {
        WeightFormat::F32 => Some(Precision::Float32),
        WeightFormat::Bf16 => Some(Precision::Bfloat16),
        WeightFormat::F16 => Some(Precision::Float16),
        WeightFormat::Q8_0 => None,
    }
}

/// The format a dump stands for: its weights' rounding, else the precision it computed in. None
/// for a float64 dump (a truth).
fn format_of(dump: &RefSource) -> Option<WeightFormat> {
    match (dump.precision, dump.weights) {
        (Precision::Float64, _) => None,
        (_, rounded) if rounded != WeightFormat::F32 => Some(rounded),
        (Precision::Bfloat16, _) => Some(WeightFormat::Bf16),
        (Precision::Float16, _) => Some(WeightFormat::F16),
        (Precision::Float32, _) => Some(WeightFormat::F32),
    }
}

fn script(dump: &RefSource) -> Option<&str> {
    dump.reference.manifest.generator.get("script").and_then(|s| s.as_str())
}

impl Plan {
    /// The parts at every format of `formats`, or, when None, at f32 and every format some dump
    /// was made at.
    pub fn new(dumps: &[RefSource], formats: Option<&[WeightFormat]>) -> Result<Plan> {
        if let Some(d) = dumps.iter().find(|d| d.reference.manifest.corpus.is_some()) {
            bail!("{} is a corpus dump: `llorch validate --corpus FILE` reads it", d.reference.dir.display());
        }
        let is_truth = |d: &RefSource| d.precision == Precision::Float64 && d.weights == WeightFormat::F32;
        let Some(truth) = dumps.iter().position(is_truth) else {
            bail!(
                "llorch cost measures every source against the float64 truth on the checkpoint's own \
                 weights, and no dump of the run is one: make it with `python scripts/dump_reference.py \
                 --model MODEL --dtype float64 --out MODEL/reference-f64`"
            )
        };
        let formats: Vec<WeightFormat> = match formats {
            // Each once, in the order given.
            Some(list) => {
                list.iter().enumerate().filter(|(i, f)| !list[..*i].contains(f)).map(|(_, &f)| f).collect()
            }
            None => WeightFormat::ALL
                .into_iter()
                .filter(|&f| {
                    f == WeightFormat::F32
                        || dumps.iter().any(|d| format_of(d) == Some(f) || (d.weights == f && !is_truth(d)))
                })
                .collect(),
        };
        let plans = formats
            .into_iter()
            .map(|format| {
                let rounded_truth = (format != WeightFormat::F32).then(|| {
                    dumps.iter().position(|d| d.precision == Precision::Float64 && d.weights == format)
                });
                let at_format: Vec<usize> =
                    (0..dumps.len()).filter(|&i| format_of(&dumps[i]) == Some(format)).collect();
                // PyTorch at the format's precision; else another engine than the truth's on the
                // rounded weights (llama.cpp at Q8_0): the truth's own library in float32 on them is
                // an arithmetic reference, which validate already judges.
                let own = |i: &usize| {
                    dumps[*i].weights == WeightFormat::F32
                        && Some(dumps[*i].precision) == precision_of(format)
                };
                let other_engine = |i: &usize| {
                    dumps[*i].precision == Precision::Float32 && script(&dumps[*i]) != script(&dumps[truth])
                };
                let yardstick = at_format
                    .iter()
                    .copied()
                    .find(own)
                    .or_else(|| at_format.iter().copied().find(other_engine));
                let others = at_format.into_iter().filter(|&i| Some(i) != yardstick).collect();
                FormatPlan { format, rounded_truth: rounded_truth.flatten(), yardstick, others }
            })
            .collect();
        Ok(Plan { truth, formats: plans })
    }

    /// The dumps no format uses, each with why.
    pub fn unused(&self, dumps: &[RefSource]) -> Vec<String> {
        let used = |i: usize| {
            i == self.truth
                || self
                    .formats
                    .iter()
                    .any(|f| f.rounded_truth == Some(i) || f.yardstick == Some(i) || f.others.contains(&i))
        };
        (0..dumps.len())
            .filter(|&i| !used(i))
            .map(|i| {
                let d = &dumps[i];
                format!(
                    "{} ({}, weights {}): its format is not among those run",
                    d.name,
                    d.precision.name(),
                    d.weights
                )
            })
            .collect()
    }
}

impl FormatPlan {
    /// What each column measures, in column order: rounding, ours, arithmetic, yardstick, others.
    pub fn sources(&self) -> Vec<Measure> {
        let mut out = Vec::new();
        out.extend(self.rounded_truth.map(Measure::Dump));
        out.push(Measure::Ours);
        out.extend(self.rounded_truth.map(Measure::OursAgainst));
        out.extend(self.yardstick.map(Measure::Dump));
        out.extend(self.others.iter().map(|&i| Measure::Dump(i)));
        out
    }

    pub fn columns(&self, dumps: &[RefSource]) -> Vec<Column> {
        let named = |i: usize, kind| Column { source: dumps[i].name.clone(), kind };
        let ours = |kind| Column { source: crate::validation::result::OURS.into(), kind };
        let mut out = Vec::new();
        out.extend(self.rounded_truth.map(|i| named(i, ColumnKind::Rounding)));
        out.push(ours(ColumnKind::Ours));
        out.extend(self.rounded_truth.map(|_| ours(ColumnKind::Arithmetic)));
        out.extend(self.yardstick.map(|i| named(i, ColumnKind::Yardstick)));
        out.extend(self.others.iter().map(|&i| named(i, ColumnKind::Other)));
        out
    }

    pub fn ours_column(&self) -> usize {
        self.sources().iter().position(|m| matches!(m, Measure::Ours)).expect("every format has ours")
    }

    pub fn yardstick_column(&self) -> Option<usize> {
        let yardstick = self.yardstick?;
        self.sources().iter().position(|m| matches!(m, Measure::Dump(i) if *i == yardstick))
    }

    /// The verdict's k: the float32 rule's k_rms at f32 (the yardstick is PyTorch's float32 run,
    /// as the accuracy verdict's peer), K_COST at a reduced format.
    pub fn k(&self) -> f64 {
        match self.format {
            WeightFormat::F32 => Checkpoint::Logits.accuracy().expect("a float checkpoint").k_rms,
            _ => super::K_COST,
        }
    }
}
