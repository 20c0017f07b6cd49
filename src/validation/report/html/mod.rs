//! The HTML report (`validate --report DIR`): one self-contained page (inline SVG and CSS; no
//! script, font or image from anywhere), to open offline or attach to a CI run. From the top:
//! the verdict and what was compared (model, cases, sources and their library versions, the
//! command), error growth through the layers per checkpoint and pass, |diff| heatmaps of failing
//! tensors, the failures with their diagnoses, then the errors of the whole-model checkpoints.

mod charts;
mod cost;
mod position;

pub use cost::cost_html;

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{Exporter, sci, words};
use crate::validation::compare::Tolerance;
use crate::validation::result::{Pair, Report, Role, Row, Worst};
use crate::validation::spec::{Checkpoint, Mode, Phase};
use charts::Series;

/// What the page says beside the report: the command line and the cases' prompts.
pub struct Html {
    pub command: String,
    /// (name, prompt or None for token ids, prompt tokens)
    pub cases: Vec<(String, Option<String>, usize)>,
}

pub(super) const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1500px}\
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}\
h3{font-size:15px;margin:18px 0 6px}table{border-collapse:collapse;font-size:13px}\
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}\
.pass{color:#1a7f37;font-weight:bold}.fail{color:#cf222e;font-weight:bold}\
.grid{display:flex;flex-wrap:wrap;gap:12px}.panel{display:inline-block;margin:4px 12px 4px 0}\
.mono{font-family:monospace;font-size:12px;white-space:pre-wrap}.note{color:#555;font-size:13px}\
.failure{margin:8px 0 14px}.ramp{display:inline-block;width:160px;height:10px;vertical-align:middle}";

impl Exporter for Html {
    fn render(&self, report: &Report) -> String {
        let mut page = String::new();
        let (passed, failed) = report.counts();
        let verdict =
            if failed == 0 { "<span class=pass>PASS</span>" } else { "<span class=fail>FAIL</span>" };
        let _ = write!(
            page,
            "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>llorch validate: {}</title>\
             <style>{STYLE}</style></head><body>\n<h1>llorch validate: {verdict} ({passed} passed, {failed} \
             failed)</h1>\n",
            if failed == 0 { "pass" } else { "fail" }
        );
        page.push_str(&self.summary(report));
        page.push_str(&growth(report));
        page.push_str(&position::by_position(report));
        page.push_str(&heatmaps(report));
        page.push_str(&failures(report));
        page.push_str(&whole_model(report));
        page.push_str("</body></html>\n");
        page
    }
}

impl Html {
    fn summary(&self, report: &Report) -> String {
        let mut out = String::from("<h2>What was compared</h2>\n<table>\n");
        let _ = writeln!(out, "<tr><th>model</th><td class=mono>{}</td></tr>", esc(&report.model));
        let _ = writeln!(out, "<tr><th>command</th><td class=mono>{}</td></tr>", esc(&self.command));
        let run: Vec<&str> = report.rows.iter().map(|r| r.case.as_str()).collect();
        for (name, prompt, tokens) in self.cases.iter().filter(|c| run.contains(&c.0.as_str())) {
            let prompt = prompt.as_deref().map_or("(token ids)".to_string(), |p| format!("{p:?}"));
            let _ = writeln!(
                out,
                "<tr><th>case {}</th><td>{} ({tokens} tokens)</td></tr>",
                esc(name),
                esc(&prompt)
            );
        }
        out.push_str(
            "</table>\n<h3>Sources</h3>\n<table><tr><th>name</th><th>role</th><th>directory</th>\
                      <th>made by</th></tr>\n",
        );
        for s in &report.sources {
            let made_by = s.generator.as_ref().and_then(|g| g.as_object()).map(|g| {
                g.iter()
                    .map(|(k, v)| format!("{k}: {}", v.as_str().map_or(v.to_string(), str::to_string)))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=mono>{}</td><td class=mono>{}</td></tr>",
                esc(&s.name),
                s.role,
                esc(s.dir.as_deref().unwrap_or("(this llorch)")),
                esc(made_by.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</table>\n");
        let mut notes = Vec::new();
        if let Some(first) = report.first_failure() {
            notes.push(format!("first failure: {}", first.location()));
        }
        notes.extend(words::truths(report));
        notes.extend(words::odd_ones_out(report));
        notes.extend(words::not_checked(report));
        notes.extend(words::blame_summary(report));
        if let Some(search) = &report.search {
            notes.push(format!(
                "{} search: {} forward runs over {} sites; a sequential walk needs {}",
                search.strategy, search.forward_runs, search.sites, search.sequential_runs
            ));
        }
        for note in notes {
            let _ = writeln!(out, "<p>{}</p>", esc(&note));
        }
        out
    }
}

/// Every failing row with its reason and diagnosis, as the table's sentences have them.
fn failures(report: &Report) -> String {
    let failing: Vec<&Row> = report.rows.iter().filter(|r| !r.passed).collect();
    if failing.is_empty() {
        return String::new();
    }
    let mut out = format!("<h2 id=failures>Failures ({})</h2>\n", failing.len());
    // The first ones open, the rest folded (a <details> needs no script).
    const OPEN: usize = 12;
    const SHOWN: usize = 300;
    for (i, row) in failing.iter().take(SHOWN).enumerate() {
        if i == OPEN {
            let _ = writeln!(out, "<details><summary>{} more</summary>", failing.len().min(SHOWN) - OPEN);
        }
        let reason = words::reason(row, true).unwrap_or_else(|| "failed".into());
        let _ =
            write!(out, "<div class=failure><b>{}</b>: {}", esc(&row.location().to_string()), esc(&reason));
        if let Some(blame) = row.blame {
            let _ = write!(out, " <i>({blame})</i>");
        }
        if let Some(d) = &row.diagnosis {
            let lines: Vec<String> = words::diagnosis(d).iter().map(|l| esc(l)).collect();
            let _ = write!(out, "<div class=mono>{}</div>", lines.join("\n"));
        }
        out.push_str("</div>\n");
    }
    if failing.len() > OPEN {
        out.push_str("</details>\n");
    }
    if failing.len() > SHOWN {
        let _ = writeln!(
            out,
            "<p class=note>... and {} more (the JSON report has them all)</p>",
            failing.len() - SHOWN
        );
    }
    out
}

/// One chart per per-layer checkpoint and pass: each pair's worst max |diff| and RMS over the
/// checkpoint's tensors and the cases, against layer (chained rows).
fn growth(report: &Report) -> String {
    let truth = report.source(Role::Truth).map(|s| s.name.clone());
    // The pairs in the order the rows first name them (ours first), which sets their colours.
    let mut pairs: Vec<&Pair> = Vec::new();
    let mut atol: BTreeMap<(Phase, Checkpoint), f64> = BTreeMap::new();
    // The prompt's pass and the first decode step; later steps are drawn against position.
    let drawn = |r: &Row| r.mode == Mode::Chained && r.checkpoint.per_layer() && r.phase <= Phase::DECODE;
    for row in report.rows.iter().filter(|r| drawn(r)) {
        if row.stats.is_some() && !pairs.contains(&&row.pair) {
            pairs.push(&row.pair);
        }
        if let (Tolerance::Close { atol: a, .. }, true) = (row.tolerance, row.pair.is_ours()) {
            atol.entry((row.phase, row.checkpoint)).or_insert(a);
        }
    }
    let worst = report.worst_by(|r| {
        let layer = r.layer.filter(|_| drawn(r))?;
        let pair = pairs.iter().position(|p| **p == r.pair)?;
        Some((r.phase, r.checkpoint, pair, layer))
    });
    let layers = worst.keys().map(|&(.., layer)| layer + 1).max().unwrap_or(0);
    // (phase, checkpoint) -> per pair (label, against the truth, points by layer)
    type PairSeries = (String, bool, BTreeMap<usize, Worst>);
    let mut data: BTreeMap<(Phase, Checkpoint), Vec<PairSeries>> = BTreeMap::new();
    for ((phase, cp, pair, layer), w) in worst {
        let series = data.entry((phase, cp)).or_default();
        let label = pairs[pair].to_string();
        if series.last().is_none_or(|s| s.0 != label) {
            let against_truth = truth.as_ref().is_some_and(|t| pairs[pair].contains(t));
            series.push((label, against_truth, BTreeMap::new()));
        }
        series.last_mut().expect("pushed").2.insert(layer, w);
    }
    if data.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "<h2 id=growth>Error growth through the layers</h2>\n<p class=note>Per checkpoint and pass: each pair's \
         largest |diff| (solid, dots) and RMS difference (dashed) at each layer, the worst over the \
         checkpoint's tensors and the cases; failing points crossed in red; the grey line is the \
         tolerance's atol (the rtol term adds rtol·|reference| per element). Pairs with the float64 \
         truth are drawn bold.</p>\n",
    );
    let phases: std::collections::BTreeSet<Phase> = data.keys().map(|(p, _)| *p).collect();
    for phase in phases {
        let charts: Vec<String> = data
            .iter()
            .filter(|((p, _), _)| *p == phase)
            .map(|((_, cp), pairs)| {
                let series: Vec<Series> = pairs
                    .iter()
                    .map(|(label, against_truth, by_layer)| Series {
                        label: label.clone(),
                        against_truth: *against_truth,
                        points: by_layer.iter().map(|(&l, w)| (l, w.max_abs, w.rms, w.failed)).collect(),
                    })
                    .collect();
                let title = format!("checkpoint {cp}: {}", cp.title());
                let atol = atol.get(&(phase, *cp)).copied();
                charts::error_growth(&title, ("layer", "|diff|"), layers, &series, atol)
            })
            .collect();
        if !charts.is_empty() {
            let _ =
                writeln!(out, "<h3>{}</h3>\n<div class=grid>{}</div>", pass_name(phase), charts.join("\n"));
        }
    }
    out
}

/// The heatmaps the validator drew: failing tensors' first failing pair, and those asked for.
fn heatmaps(report: &Report) -> String {
    let rows: Vec<&Row> = report.rows.iter().filter(|r| r.heatmap.is_some()).collect();
    if rows.is_empty() {
        return String::new();
    }
    let ramp: String = (0..=10)
        .map(|i| {
            let c = charts::colormap(f64::from(i) / 10.0);
            format!("rgb({},{},{}) {}%", c.0, c.1, c.2, i * 10)
        })
        .collect::<Vec<_>>()
        .join(",");
    let mut out = format!(
        "<h2 id=heatmaps>|diff| heatmaps</h2>\n<p class=note>Each cell is the largest |diff| of the elements it \
         pools; colour on a log scale from the smallest to the largest cell of the tensor \
         <span class=ramp style=\"background:linear-gradient(to right,{ramp})\"></span>; grey cells \
         are masked future keys. Attention tensors show the heads with the largest differences, \
         [query, key]; activations [position, channel].</p>\n"
    );
    for row in rows {
        let heatmap = row.heatmap.as_ref().expect("filtered");
        let finite = heatmap.panels.iter().flat_map(|p| p.values.iter().copied()).filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v.max(1e-12)), hi.max(v)));
        let lo = if lo.is_finite() { lo } else { 0.0 };
        let _ = writeln!(
            out,
            "<h3>{} ({:?}, |diff| from {} to {})</h3>",
            esc(&row.location().to_string()),
            row.shape,
            sci(lo),
            sci(hi)
        );
        for panel in &heatmap.panels {
            let pooled = (panel.extent.0.div_ceil(panel.cells.0), panel.extent.1.div_ceil(panel.cells.1));
            let _ = writeln!(
                out,
                "<div class=panel><div class=note>{} [{} × {}], a cell pools {} × {}</div>{}</div>",
                esc(&panel.label),
                panel.extent.0,
                panel.extent.1,
                pooled.0,
                pooled.1,
                charts::heatmap_panel(panel, (lo, hi))
            );
        }
    }
    out
}

/// The checkpoints that are not per layer (embeddings, logits, probabilities): each pair's
/// error per pass, the worst over the cases.
fn whole_model(report: &Report) -> String {
    let cells = report.worst_by(|r| {
        (!r.checkpoint.per_layer()).then(|| (r.phase, r.checkpoint, r.tensor.clone(), r.pair.to_string()))
    });
    if cells.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "<h2 id=whole-model>Whole-model checkpoints</h2>\n<table><tr><th>pass</th><th>checkpoint</th><th>tensor</th>\
         <th>pair</th><th>max |diff|</th><th>rms</th><th>verdict</th></tr>\n",
    );
    for ((phase, cp, tensor, pair), Worst { max_abs: max, rms, failed }) in cells {
        let verdict = if failed { "<span class=fail>FAIL</span>" } else { "<span class=pass>PASS</span>" };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{cp} ({})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{verdict}</td></tr>",
            pass_name(phase),
            cp.title(),
            esc(&tensor),
            esc(&pair),
            sci(max),
            sci(rms)
        );
    }
    out.push_str("</table>\n");
    out
}

pub(super) fn pass_name(phase: Phase) -> String {
    match phase {
        Phase::Prefill => "the prompt's pass".into(),
        Phase::Decode(1) => "the decode step".into(),
        Phase::Decode(step) => format!("decode step {step}"),
    }
}

/// Text for HTML content and attribute values.
pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
