//! Error against position: where the dumps hold several decode steps, each checkpoint's error
//! at the prompt's pass (x = 0) and at every decode step (x = its number), so that a cache that
//! goes wrong after a few steps, a position read past its table or a slow drift shows as a line
//! that climbs.

use std::collections::BTreeMap;

use super::charts::{self, Series};
use crate::validation::result::{Pair, Report, Role, Worst};
use crate::validation::spec::{Checkpoint, Phase};

/// One chart per checkpoint of the decode steps: each pair's worst max |diff| and RMS over the
/// checkpoint's tensors, layers and cases (chained rows), against the step. Empty with a single
/// decode step.
pub fn by_position(report: &Report) -> String {
    let steps = report.rows.iter().filter_map(|r| r.phase.step()).max().map_or(0, usize::from);
    if steps < 2 {
        return String::new();
    }
    let mut pairs: Vec<&Pair> = Vec::new();
    for row in &report.rows {
        if row.stats.is_some() && row.checkpoint.on_decode_step() && !pairs.contains(&&row.pair) {
            pairs.push(&row.pair);
        }
    }
    let truth = report.source(Role::Truth).map(|s| s.name.clone());
    let worst = report.worst_by(|r| {
        let step = match r.phase {
            Phase::Prefill => 0,
            Phase::Decode(step) => usize::from(step),
        };
        let pair = pairs.iter().position(|p| **p == r.pair)?;
        r.checkpoint.on_decode_step().then_some((r.checkpoint, pair, step))
    });
    // checkpoint -> pair -> step -> worst
    let mut data: BTreeMap<Checkpoint, BTreeMap<usize, BTreeMap<usize, Worst>>> = BTreeMap::new();
    for ((cp, pair, step), w) in worst {
        data.entry(cp).or_default().entry(pair).or_default().insert(step, w);
    }
    let charts: Vec<String> = data
        .iter()
        .map(|(cp, by_pair)| {
            let series: Vec<Series> = by_pair
                .iter()
                .map(|(&pair, by_step)| Series {
                    label: pairs[pair].to_string(),
                    against_truth: truth.as_ref().is_some_and(|t| pairs[pair].contains(t)),
                    points: by_step.iter().map(|(&s, w)| (s, w.max_abs, w.rms, w.failed)).collect(),
                })
                .collect();
            let title = format!("checkpoint {cp}: {}", cp.title());
            charts::error_growth(&title, ("decode step (0: the prompt)", "|diff|"), steps + 1, &series, None)
        })
        .collect();
    format!(
        "<h2 id=position>Error against position</h2>\n<p class=note>Per checkpoint: each pair's largest \
         |diff| (solid, dots) and RMS difference (dashed) on the prompt's pass (0) and at each decode step \
         the dumps hold (step k feeds token k of the greedy continuation, at position T + k − 1), the \
         worst over the checkpoint's tensors, layers and cases (chained rows); failing points crossed in \
         red.</p>\n<div class=grid>{}</div>\n",
        charts.join("\n")
    )
}
