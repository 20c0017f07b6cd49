//! `llorch cost --report DIR`: one self-contained page: the verdict of each format, the sources,
//! and the error's growth through the layers per checkpoint and pass, one line per format (ours
//! bold; the weights' rounding and the yardstick lighter, in the format's colour order).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::charts::{self, Series};
use super::{STYLE, esc, pass_name};
use crate::validation::cost::{ColumnKind, CostReport};
use crate::validation::report::cost::{stage_name, stages, verdict};
use crate::validation::spec::Phase;

pub fn cost_html(report: &CostReport, command: &str) -> String {
    let mut page = String::new();
    let verdict_word =
        if report.passed() { "<span class=pass>PASS</span>" } else { "<span class=fail>FAIL</span>" };
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>llorch cost</title>\
         <style>{STYLE}</style></head><body>\n<h1>llorch cost: {verdict_word}</h1>\n\
         <table><tr><th>model</th><td class=mono>{}</td></tr><tr><th>truth</th><td class=mono>{} ({})</td></tr>\
         <tr><th>command</th><td class=mono>{}</td></tr></table>\n<h2>Verdicts</h2>\n<ul>",
        esc(&report.model),
        esc(&report.truth),
        esc(&report.truth_dir),
        esc(command)
    );
    for format in &report.formats {
        let _ = write!(page, "<li>{}</li>", esc(&verdict(format)));
    }
    for unused in &report.unused {
        let _ = write!(page, "<li class=note>not used: {}</li>", esc(unused));
    }
    page.push_str(
        "</ul>\n<h2>Error growth through the layers</h2>\n<p class=note>rms(x − truth) / rms(truth) at each \
         layer, the checkpoint's tensors and the cases pooled (root mean square); ours at each format bold, the weights' \
         rounding alone (the float64 truth on the rounded weights) and the yardstick thin; a failing verdict \
         crossed in red.</p>\n",
    );
    let layers =
        report.formats.iter().flat_map(|f| f.rows.iter().filter_map(|r| r.layer)).max().map_or(0, |l| l + 1);
    for phase in [Phase::Prefill, Phase::DECODE] {
        // checkpoint -> series
        let mut charts_of: BTreeMap<u8, Vec<Series>> = BTreeMap::new();
        for format in &report.formats {
            let stages: Vec<_> =
                stages(format).into_iter().filter(|s| s.phase == phase && s.layer.is_some()).collect();
            for (c, column) in format.columns.iter().enumerate() {
                let (label, bold) = match column.kind {
                    ColumnKind::Ours => (format!("ours {}", format.format), true),
                    ColumnKind::Rounding => (format!("{} rounding", format.format), false),
                    ColumnKind::Yardstick => (column.source.clone(), false),
                    ColumnKind::Arithmetic | ColumnKind::Other => continue,
                };
                let mut by_cp: BTreeMap<u8, Vec<(usize, f64, f64, bool)>> = BTreeMap::new();
                for s in &stages {
                    if let (Some(layer), Some(value)) = (s.layer, s.cells[c]) {
                        let failed = column.kind == ColumnKind::Ours
                            && format
                                .verdicts
                                .iter()
                                .any(|v| !v.passed && v.phase == phase && v.checkpoint == s.checkpoint);
                        by_cp.entry(s.checkpoint).or_default().push((layer, value, f64::NAN, failed));
                    }
                }
                for (cp, points) in by_cp {
                    charts_of.entry(cp).or_default().push(Series {
                        label: label.clone(),
                        points,
                        against_truth: bold,
                    });
                }
            }
        }
        if charts_of.is_empty() {
            continue;
        }
        let charts: Vec<String> = charts_of
            .iter()
            .map(|(&cp, series)| {
                let title = format!("checkpoint {}", stage_name(cp, None));
                charts::error_growth(&title, ("layer", "relative RMS error"), layers, series, None)
            })
            .collect();
        let _ = writeln!(page, "<h3>{}</h3>\n<div class=grid>{}</div>", pass_name(phase), charts.join("\n"));
    }
    page.push_str("</body></html>\n");
    page
}
