//! `llorch cost`'s table: per format, one row per stage (checkpoint and layer, its tensors and
//! the cases pooled), the error of every column against the truth, ours over the yardstick, and
//! the verdict (per tensor and pass, pooled over cases and layers: `cost::Verdict`).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::sci;
use crate::validation::cost::{ColumnKind, CostReport, CostRow, FormatCost, Measured};
use crate::validation::spec::Phase;

/// A stage of one format: its tensors and cases pooled, sqrt(mean(rel_rms²)) per column.
pub struct Stage {
    pub phase: Phase,
    pub checkpoint: u8,
    pub layer: Option<usize>,
    /// Per column (None: no comparable tensor).
    pub cells: Vec<Option<f64>>,
}

/// The rows of a format, pooled into stages in forward order.
pub fn stages(format: &FormatCost) -> Vec<Stage> {
    // Per column: (count, sum of squares).
    type Sums = Vec<(usize, f64)>;
    let mut by: BTreeMap<(Phase, u8, Option<usize>), Sums> = BTreeMap::new();
    for row in &format.rows {
        let sums = by
            .entry((row.phase, row.checkpoint, row.layer))
            .or_insert_with(|| vec![(0, 0.0); format.columns.len()]);
        for (sum, measured) in sums.iter_mut().zip(&row.cells) {
            if let Some(Measured { rel_rms, .. }) = measured {
                *sum = (sum.0 + 1, sum.1 + rel_rms * rel_rms);
            }
        }
    }
    let mut out: Vec<Stage> = by
        .into_iter()
        .map(|((phase, checkpoint, layer), sums)| Stage {
            phase,
            checkpoint,
            layer,
            cells: sums.into_iter().map(|(n, ss)| (n > 0).then(|| (ss / n as f64).sqrt())).collect(),
        })
        .collect();
    // Forward order: checkpoint 0, then layer by layer, then the head; prefill before decode.
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
    let worst = format.worst().map(|v| {
        format!(
            "worst: {:.2} of its allowance, at {} of checkpoint {} ({}): ours {}, {yardstick} {}",
            v.used(),
            v.tensor,
            v.checkpoint,
            v.phase,
            sci(v.ours),
            sci(v.yardstick)
        )
    });
    let worst = worst.unwrap_or_else(|| "no stage comparable".into());
    let share = rounding_share(format)
        .map(|s| format!("; at the logits the weights' rounding alone is {:.0}% of ours's error", 100.0 * s))
        .unwrap_or_default();
    let failed: Vec<String> = format
        .verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(|v| format!("{} of checkpoint {} ({})", v.tensor, v.checkpoint, v.phase))
        .collect();
    match format.passed {
        Some(false) => format!(
            "{}: FAIL: ours is less accurate than {yardstick} at {} (k = {}; {worst}){share}",
            format.format,
            failed.join(", "),
            format.k
        ),
        _ => format!(
            "{}: PASS: ours is as accurate as {yardstick} or more at every tensor (k = {}; {worst}){share}",
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
        "each cell: rms(x - truth) / rms(truth), the stage's tensors and cases pooled (root mean square); rounding = the \
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
        let yard = format.columns.iter().position(|c| c.kind == ColumnKind::Yardstick);
        for stage in stages(format) {
            let phase = stage.phase.name();
            let _ = write!(out, "{phase:<8} {:<22}", stage_name(stage.checkpoint, stage.layer));
            for (cell, w) in stage.cells.iter().zip(&widths) {
                let _ = write!(out, " {:>w$}", cell.map(sci).unwrap_or_else(|| "-".into()));
            }
            if let (Some(y), Some(o)) = (yard.and_then(|c| stage.cells[c]), stage.cells[format.ours()]) {
                let _ = write!(out, " {:>10}", format!("{:.2}", o / y));
            }
            out.push('\n');
        }
        let _ = writeln!(out, "{}", paint(&verdict(format), format.passed != Some(false)));
    }
    out
}
