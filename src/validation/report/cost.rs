//! `llorch cost`'s table: per format, one row per stage (checkpoint and layer, the worst tensor
//! of the stage over the cases), the error of every column against the truth, ours over the
//! yardstick, and the verdict.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::sci;
use crate::validation::cost::{ColumnKind, CostReport, CostRow, FormatCost, Measured};
use crate::validation::spec::Phase;

/// A stage of one format: the worst over its tensors and cases.
pub struct Stage {
    pub phase: Phase,
    pub checkpoint: u8,
    pub layer: Option<usize>,
    /// Per column, the largest relative RMS error (None: no comparable tensor).
    pub cells: Vec<Option<f64>>,
    pub ratio: Option<f64>,
    pub passed: Option<bool>,
}

/// The rows of a format, folded into stages in forward order.
pub fn stages(format: &FormatCost) -> Vec<Stage> {
    let mut by: BTreeMap<(Phase, u8, Option<usize>), Stage> = BTreeMap::new();
    for row in &format.rows {
        let stage = by.entry((row.phase, row.checkpoint, row.layer)).or_insert_with(|| Stage {
            phase: row.phase,
            checkpoint: row.checkpoint,
            layer: row.layer,
            cells: vec![None; format.columns.len()],
            ratio: None,
            passed: None,
        });
        for (cell, measured) in stage.cells.iter_mut().zip(&row.cells) {
            if let Some(Measured { rel_rms, .. }) = measured {
                *cell = Some(cell.map_or(*rel_rms, |c: f64| c.max(*rel_rms)));
            }
        }
        if let Some(r) = row.ratio {
            stage.ratio = Some(stage.ratio.map_or(r, |s: f64| s.max(r)));
        }
        if let Some(p) = row.passed {
            stage.passed = Some(stage.passed.unwrap_or(true) && p);
        }
    }
    // Forward order: checkpoint 0, then layer by layer, then the head; prefill before decode.
    let mut out: Vec<Stage> = by.into_values().collect();
    out.sort_by_key(|s| (s.phase, s.checkpoint >= 8, s.layer, s.checkpoint));
    out
}

/// "0 embeddings", "6 mlp L1".
pub fn stage_name(checkpoint: u8, layer: Option<usize>) -> String {
    let cp = crate::engine::Checkpoint::ALL[checkpoint as usize];
    match layer {
        Some(l) => format!("{checkpoint} {} L{l}", cp.title()),
        None => format!("{checkpoint} {}", cp.title()),
    }
}

/// The weights' rounding's share of ours's error at the prompt's logits: rounding / ours, the
/// largest over the cases.
pub fn rounding_share(format: &FormatCost) -> Option<f64> {
    let (r, o) = (format.rounding()?, format.ours());
    let logits = |row: &&CostRow| row.phase == Phase::Prefill && row.tensor == "logits";
    format
        .rows
        .iter()
        .filter(logits)
        .filter_map(|row| Some(row.cells[r]?.rms / row.cells[o]?.rms))
        .filter(|s| s.is_finite())
        .reduce(f64::max)
}

/// The verdict of a format in words.
pub fn verdict(format: &FormatCost) -> String {
    let Some(yardstick) = &format.yardstick else {
        return format!(
            "{}: no verdict: no yardstick at this format (PyTorch at its precision, `dump_reference.py \
             --dtype`, or another engine on its weights, `dump_llamacpp.py --outtype {}`)",
            format.format, format.format
        );
    };
    let worst = format.worst().map(|row| {
        let used =
            row.cells[format.ours()].map(|m| m.rms).unwrap_or(f64::NAN) / row.allowed.unwrap_or(f64::NAN);
        let layer = row.layer.map(|l| format!(" layer {l}")).unwrap_or_default();
        format!(
            "worst: {used:.2} of its allowance, at {} of checkpoint {}{layer} ({}), case {}",
            row.tensor, row.checkpoint, row.phase, row.case
        )
    });
    let worst = worst.unwrap_or_else(|| "no stage comparable".into());
    let share = rounding_share(format)
        .map(|s| format!("; at the logits the weights' rounding alone is {:.0}% of ours's error", 100.0 * s))
        .unwrap_or_default();
    let failed = format.rows.iter().filter(|r| r.passed == Some(false)).count();
    match format.passed {
        Some(false) => format!(
            "{}: FAIL: ours is less accurate than {yardstick} in {failed} tensors (k = {}; {worst}){share}",
            format.format, format.k
        ),
        _ => format!(
            "{}: PASS: ours is as accurate as {yardstick} or more at every stage (k = {}; {worst}){share}",
            format.format, format.k
        ),
    }
}

fn header(kind: ColumnKind, source: &str) -> String {
    match kind {
        ColumnKind::Rounding => "rounding".into(),
        ColumnKind::Ours => "ours".into(),
        ColumnKind::Arithmetic => "arith.".into(),
        ColumnKind::Yardstick => format!("{source}*"),
        ColumnKind::Other => source.into(),
    }
}

pub fn cost_table(report: &CostReport, color: bool) -> String {
    let paint = |text: &str, pass: bool| match (color, pass) {
        (false, _) => text.to_string(),
        (true, true) => format!("\x1b[32m{text}\x1b[0m"),
        (true, false) => format!("\x1b[31m{text}\x1b[0m"),
    };
    let mut out = String::new();
    let _ = writeln!(out, "llorch cost: {}", report.model);
    let _ = writeln!(
        out,
        "truth: {} ({}), float64 on the checkpoint's own weights",
        report.truth, report.truth_dir
    );
    let _ = writeln!(
        out,
        "each cell: rms(x - truth) / rms(truth), the worst tensor of the stage over the cases; rounding = the \
         float64 truth on the rounded weights (what every correct engine on them inherits), arith. = ours \
         against it; * = the yardstick; - = not comparable (a decode step after another token)"
    );
    for unused in &report.unused {
        let _ = writeln!(out, "not used: {unused}");
    }
    for format in &report.formats {
        let _ = writeln!(out);
        let heads: Vec<String> = format.columns.iter().map(|c| header(c.kind, &c.source)).collect();
        let widths: Vec<usize> = heads.iter().map(|h| h.len().max(9)).collect();
        let _ = write!(out, "{:<8} {:<22}", format!("{}", format.format), "stage");
        for (h, w) in heads.iter().zip(&widths) {
            let _ = write!(out, " {h:>w$}");
        }
        let _ = writeln!(out, " {:>10}", if format.yardstick.is_some() { "ours/yard" } else { "" });
        for stage in stages(format) {
            let phase = match stage.phase {
                Phase::Prefill => "prefill",
                Phase::Decode => "decode",
            };
            let _ = write!(out, "{phase:<8} {:<22}", stage_name(stage.checkpoint, stage.layer));
            for (cell, w) in stage.cells.iter().zip(&widths) {
                let _ = write!(out, " {:>w$}", cell.map(sci).unwrap_or_else(|| "-".into()));
            }
            match (stage.ratio, stage.passed) {
                (Some(r), Some(p)) => {
                    let _ = write!(out, " {:>10}", paint(&format!("{r:.2}"), p));
                }
                (None, Some(p)) => {
                    let _ = write!(out, " {:>10}", paint(if p { "pass" } else { "fail" }, p));
                }
                _ => {}
            }
            out.push('\n');
        }
        let _ = writeln!(out, "{}", paint(&verdict(format), format.passed != Some(false)));
    }
    out
}
