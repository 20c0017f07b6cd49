//! The table for people: one table per case and phase, a row per (tensor, pair of sources), the
//! pairs of one tensor side by side; with both modes, a row's isolated verdict beside its
//! chained one. Under it the sentences that numbers cannot say, then the summary.

use std::collections::HashMap;

use comfy_table::{Cell, Color, ContentArrangement, presets::UTF8_FULL_CONDENSED};

use super::{Detail, Exporter, sci, words};
use crate::validation::compare::DECADE_LABELS;
use crate::validation::result::{Blame, Report, Role, Row, RowKey};
use crate::validation::spec::{Checkpoint, Mode, Phase};

pub struct Table {
    pub color: bool,
    pub detail: Detail,
}

impl Exporter for Table {
    /// One table per case and phase (the prompt's pass, then the decode step), then the
    /// summary; the last line names the first failure when a search ran, so scripts can read it.
    fn render(&self, report: &Report) -> String {
        let mut out = String::new();
        // With both modes, the isolated rows are shown beside their chained ones.
        let isolated: HashMap<RowKey<'_>, &Row> =
            report.rows.iter().filter(|r| r.mode == Mode::Isolated).map(|r| (r.key(), r)).collect();
        let beside = |r: &Row| (r.mode == Mode::Chained).then(|| isolated.get(&r.key()).copied()).flatten();
        let any_chained = report.rows.iter().any(|c| c.mode == Mode::Chained);
        let main = |r: &&Row| r.mode == Mode::Chained || !any_chained;
        let shown =
            |r: &&Row| self.detail != Detail::Quiet || !r.passed || beside(r).is_some_and(|i| !i.passed);
        let mut tables: Vec<(&str, Phase)> = Vec::new();
        for row in report.rows.iter().filter(main).filter(shown) {
            if !tables.contains(&(row.case.as_str(), row.phase)) {
                tables.push((row.case.as_str(), row.phase));
            }
        }
        for (case, phase) in tables {
            let rows: Vec<&Row> = report
                .rows
                .iter()
                .filter(main)
                .filter(shown)
                .filter(|r| r.case == case && r.phase == phase)
                .collect();
            let mode = match rows.iter().find(|r| r.checkpoint != Checkpoint::Generation).map(|r| r.mode) {
                Some(Mode::Isolated) => format!(" (isolated: every stage on {}'s input)", feeder(report)),
                _ if !isolated.is_empty() => " (chained, and isolated beside it)".to_string(),
                _ => String::new(),
            };
            match phase {
                Phase::Prefill => out.push_str(&format!("case {case}{mode}\n")),
                Phase::Decode(1) => {
                    out.push_str(&format!("case {case}, decode step (the token after the prompt){mode}\n"))
                }
                Phase::Decode(step) => out.push_str(&format!(
                    "case {case}, decode step {step} (token {step} of the greedy continuation){mode}\n"
                )),
            }
            out.push_str(&self.table(&rows, &beside));
            out.push('\n');
            let mut previous: Option<&Row> = None;
            for row in rows {
                let first_of_tensor = previous.is_none_or(|p| !p.same_tensor(row));
                // The isolated row beside it needs words only when it fails.
                for row in std::iter::once(row).chain(beside(row).filter(|b| !b.passed)) {
                    if let Some(reason) = words::reason(row, first_of_tensor) {
                        out.push_str(&format!("  {}: {reason}\n", row.location().site()));
                    }
                    if let Some(d) = &row.diagnosis {
                        for line in words::diagnosis(d) {
                            out.push_str(&format!("    {line}\n"));
                        }
                    }
                    if self.detail == Detail::Verbose && !row.passed {
                        out.push_str(&verbose(row));
                    }
                }
                previous = Some(row);
            }
        }
        out.push_str(&summary(report, self.detail));
        out
    }
}

/// The reference whose tensors fed isolated mode.
fn feeder(report: &Report) -> &str {
    report
        .source(Role::Peer)
        .or_else(|| report.sources.iter().find(|s| s.dir.is_some()))
        .map_or("the reference", |s| &s.name)
}

/// PASS, FAIL, or FAIL acc (the accuracy verdict only); with a blame, what it is.
fn verdict(row: &Row) -> String {
    let text = match (row.passed, row.failed_accuracy_only()) {
        (true, _) => "PASS",
        (false, true) => "FAIL acc",
        (false, false) => "FAIL",
    };
    match row.blame {
        Some(Blame::Drift) => format!("{text} drift"),
        Some(Blame::Wrong) if row.mode == Mode::Chained => format!("{text} wrong"),
        _ => text.to_string(),
    }
}

impl Table {
    fn table<'a>(&self, rows: &[&'a Row], beside: &dyn Fn(&'a Row) -> Option<&'a Row>) -> String {
        let with_accuracy = rows.iter().any(|r| r.accuracy.is_some());
        let with_isolated = rows.iter().any(|r| beside(r).is_some());
        let mut table = comfy_table::Table::new();
        table.load_style(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Disabled);
        if !self.color {
            table.force_no_tty();
        }
        let mut header = vec!["cp", "layer", "tensor", "shape", "pair", "max abs", "max rel", "tolerance"];
        if with_accuracy {
            header.push("err/peer max rms");
        }
        header.push("verdict");
        if with_isolated {
            header.push("isolated");
        }
        table.set_header(header);
        let mut previous: Option<&Row> = None;
        for &row in rows {
            // The pairs of one tensor sit under each other; its name is written once.
            let repeat = previous.is_some_and(|p| p.same_tensor(row));
            let (abs, rel) = match &row.stats {
                // The statistics are of the finite elements: a 0 beside NaNs would read as equal.
                Some(s) if s.non_finite > 0 => ("NaN/Inf".into(), "NaN/Inf".into()),
                Some(s) => (sci(s.max_abs), sci(s.max_rel)),
                None => ("-".into(), "-".into()),
            };
            let colored = |row: &Row| {
                let cell = Cell::new(verdict(row));
                if !self.color { cell } else { cell.fg(if row.passed { Color::Green } else { Color::Red }) }
            };
            let blank_if = |text: String| if repeat { String::new() } else { text };
            let mut cells = vec![
                Cell::new(blank_if(row.checkpoint.index().to_string())),
                Cell::new(blank_if(row.layer.map(|l| l.to_string()).unwrap_or_else(|| "-".into()))),
                Cell::new(blank_if(row.tensor.clone())),
                Cell::new(blank_if(format!("{:?}", row.shape))),
                Cell::new(row.pair.to_string()),
                Cell::new(abs),
                Cell::new(rel),
                // A --tolerance-scale pair has its own tolerance: shown where it changes.
                Cell::new(if repeat && previous.is_some_and(|p| p.tolerance == row.tolerance) {
                    String::new()
                } else {
                    row.tolerance.to_string()
                }),
            ];
            if with_accuracy {
                let ratio = match &row.accuracy {
                    Some(a) => {
                        let x = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}"));
                        // Isolated rows also carry the bias of ours − peer, in epsilons.
                        let bias =
                            a.systematic.as_ref().map_or(String::new(), |s| format!(" b{:.2}", s.epsilons));
                        format!("{} {}{bias}", x(a.ratio), x(a.rms_ratio))
                    }
                    None => String::new(),
                };
                cells.push(Cell::new(ratio));
            }
            cells.push(colored(row));
            if with_isolated {
                cells.push(beside(row).map_or_else(|| Cell::new(""), colored));
            }
            table.add_row(cells);
            previous = Some(row);
        }
        table.to_string()
    }
}

/// The lines under the tables: odd ones out, the worst accuracy ratios, the first failure and
/// the counts (or the search's outcome).
fn summary(report: &Report, detail: Detail) -> String {
    let mut out = String::new();
    let notes = words::truths(report)
        .into_iter()
        .chain(words::odd_ones_out(report))
        .chain(words::not_checked(report));
    for line in notes {
        out.push_str(&line);
        out.push('\n');
    }
    let worst = report.worst_ratios();
    if detail != Detail::Quiet && report.source(Role::Truth).is_some() && report.source(Role::Peer).is_none()
    {
        out.push_str("no accuracy verdict: a float64 truth needs a float32 reference beside it to measure ours against\n");
    }
    if detail != Detail::Quiet && !worst.is_empty() {
        let truth = report.source(Role::Truth).map_or("the truth", |s| s.name.as_str());
        let peer = report.source(Role::Peer).map_or("the peer", |s| s.name.as_str());
        let per_cp: Vec<String> =
            worst.iter().map(|(cp, (max, rms))| format!("{cp}: {max:.2}/{rms:.2}")).collect();
        out.push_str(&format!(
            "accuracy against {truth}: worst ours/{peer} error ratio per checkpoint (max/rms): {}\n",
            per_cp.join(", ")
        ));
    }
    let biases = report.worst_biases();
    if detail != Detail::Quiet && !biases.is_empty() {
        let peer = report.source(Role::Peer).map_or("the peer", |s| s.name.as_str());
        let per_cp: Vec<String> = biases.iter().map(|(cp, eps)| format!("{cp}: {eps:.2}")).collect();
        out.push_str(&format!(
            "systematic error (isolated): worst significant bias of ours − {peer} per checkpoint, in \
             float32 epsilons of the truth's rms: {}\n",
            per_cp.join(", ")
        ));
    }
    if detail != Detail::Quiet {
        out.push_str(&error_by_position(report));
        out.push_str(&errors_against_truth(report));
    }
    for line in words::blame_summary(report) {
        out.push_str(&line);
        out.push('\n');
    }
    if let Some(ours) = report.source(Role::Engine) {
        let settings = crate::engine::chosen_settings().map(|s| format!(", {s}")).unwrap_or_default();
        out.push_str(&format!("ours: weights in {}{settings}\n", ours.weights));
    }
    let (passed, failed) = report.counts();
    match &report.search {
        None => {
            if let Some(first) = report.first_failure() {
                out.push_str(&format!("first failure: {}\n", first.location()));
            }
            out.push_str(&format!("llorch: {passed} passed, {failed} failed\n"));
        }
        Some(search) => {
            out.push_str(&format!(
                "{} search: {} forward runs over {} sites; a sequential walk needs {}\n",
                search.strategy, search.forward_runs, search.sites, search.sequential_runs
            ));
            out.push_str(&format!("llorch: {passed} passed, {failed} failed\n"));
            match &search.first_failure {
                Some(at) => out.push_str(&format!("first failure: {at}\n")),
                None => out.push_str(&format!("no failure: all {} sites pass\n", search.sites)),
            }
        }
    }
    out
}

/// Where the dumps hold several decode steps: ours's and the peer's worst max |diff| against the
/// truth (checkpoints 0–9, chained) on the prompt's pass and at each step, a line each: the
/// HTML report draws it per checkpoint.
fn error_by_position(report: &Report) -> String {
    let (Some(truth), steps) =
        (report.source(Role::Truth), report.rows.iter().filter_map(|r| r.phase.step()).max())
    else {
        return String::new();
    };
    if steps.is_none_or(|s| s < 2) {
        return String::new();
    }
    let mut out = String::new();
    let sources = [report.source(Role::Engine), report.source(Role::Peer)];
    for source in sources.into_iter().flatten() {
        let worst = report.worst_by(|r| {
            let against = r.pair.contains(&source.name) && r.pair.contains(&truth.name);
            (against && r.checkpoint.on_decode_step()).then_some(r.phase)
        });
        let points: Vec<String> = worst
            .iter()
            .map(|(phase, w)| match phase.step() {
                None => format!("prompt {}", sci(w.max_abs)),
                Some(step) => format!("{step}: {}", sci(w.max_abs)),
            })
            .collect();
        out.push_str(&format!(
            "error against position, {} vs {} (worst max |diff|, checkpoints 0–9; decode step: value): {}\n",
            source.name,
            truth.name,
            points.join(", ")
        ));
    }
    out
}

/// With a float64 truth and more than one float32 reference (PyTorch and a peer engine, say):
/// each source's error against the truth per checkpoint, side by side, so that who drifts
/// where reads off one table.
fn errors_against_truth(report: &Report) -> String {
    let Some(truth) = report.source(Role::Truth) else { return String::new() };
    if report.sources.iter().filter(|s| s.dir.is_some() && s.role != Role::Truth).count() < 2 {
        return String::new();
    }
    let errors = report.errors_against_truth();
    if errors.is_empty() {
        return String::new();
    }
    let sources: Vec<&str> =
        report.sources.iter().filter(|s| s.role != Role::Truth).map(|s| s.name.as_str()).collect();
    let mut table = comfy_table::Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Disabled);
    let mut header = vec!["phase".to_string(), "cp".to_string()];
    header.extend(sources.iter().map(|s| format!("{s} max / rms")));
    table.set_header(header);
    for ((phase, cp), by_source) in &errors {
        let mut cells = vec![phase.to_string(), cp.index().to_string()];
        for source in &sources {
            cells.push(match by_source.get(source) {
                Some(&(max, rms)) => format!("{} / {}", sci(max), sci(rms)),
                None => "-".to_string(),
            });
        }
        table.add_row(cells);
    }
    format!(
        "error against {} per checkpoint (the worst over its tensors, layers and cases):\n{table}\n",
        truth.name
    )
}

/// The --verbose lines of a failing row: its statistics, first mismatches and |diff| by decade.
fn verbose(row: &Row) -> String {
    let Some(s) = &row.stats else { return String::new() };
    let mut out = format!(
        "    mean abs {}, rms {}, cosine {:.9}, {} of {} out of tolerance\n",
        sci(s.mean_abs),
        sci(s.rms),
        s.cosine,
        s.mismatches,
        s.compared
    );
    for m in &s.first_mismatches {
        out.push_str(&format!(
            "    at {:?}: {} {}, {} {}\n",
            m.index,
            row.pair.0,
            words::value(m.ours),
            row.pair.1,
            words::value(m.reference)
        ));
    }
    let widest = s.diff_decades.iter().copied().max().unwrap_or(0).max(1);
    out.push_str("    |diff|   count\n");
    for (label, &count) in DECADE_LABELS.iter().zip(&s.diff_decades) {
        if count > 0 {
            let bar = "#".repeat((count * 40).div_ceil(widest));
            out.push_str(&format!("    {label:>6}  {count:>7} {bar}\n"));
        }
    }
    out
}
