//! The sentences every renderer shares: why a row failed (or what an exact check found), a
//! diagnosis in lines, a tensor element with all its float32 digits.

use super::sci;
use crate::validation::result::{Blame, Diagnosis, Report, Role, Row, Systematic};
use crate::validation::spec::{Checkpoint, Phase, TRUTHS_AGREE};

/// A sentence for rows that need more than numbers: exact checks, accuracy failures, masked
/// entries (once per tensor), and the worst element of every failure. Without the row's place:
/// the table puts it before, JUnit and HTML beside it.
pub fn reason(row: &Row, first_of_tensor: bool) -> Option<String> {
    if let Some(detail) = &row.detail {
        // Passing bitwise invariants need no sentence; token results are worth reading, once
        // per tensor while the sources agree.
        let informative = !row.passed
            || (first_of_tensor && matches!(row.checkpoint, Checkpoint::Argmax | Checkpoint::Generation));
        return informative.then(|| detail.clone());
    }
    let s = row.stats.as_ref()?;
    if !s.passed() {
        let mut line = format!(
            "{} of {} elements ({:.3}%) out of tolerance; worst at {:?}: {} {}, {} {}",
            s.mismatches,
            s.compared,
            s.mismatch_percent(),
            s.worst_index,
            row.pair.0,
            value(s.worst_ours),
            row.pair.1,
            value(s.worst_ref)
        );
        if s.non_finite > 0 {
            line.push_str(&format!("; {} NaN/Inf elements", s.non_finite));
        }
        if s.unmasked > 0 {
            let plural = if s.unmasked == 1 { "key" } else { "keys" };
            line.push_str(&format!("; {} future {plural} left unmasked by one side", s.unmasked));
        }
        return Some(line);
    }
    if let Some(a) = row.accuracy.as_ref().filter(|a| !a.passed) {
        let within_max_and_rms = a.err_ours <= a.allowed && a.rms_ours <= a.allowed_rms;
        if let Some(sys) = a.systematic.as_ref().filter(|s| !s.passed && within_max_and_rms) {
            return Some(systematic(sys, &a.peer, &a.truth));
        }
        let ratio = |r: Option<f64>| r.map(|r| format!(" ({r:.1}×)")).unwrap_or_default();
        return Some(format!(
            "less accurate than {peer} against {truth}, though within every fixed tolerance: \
             max error {} vs {}{} (allowed {}× + {:.0e}), rms error {} vs {}{} (allowed {}× + {:.0e})",
            sci(a.err_ours),
            sci(a.err_peer),
            ratio(a.ratio),
            a.k,
            a.floor,
            sci(a.rms_ours),
            sci(a.rms_peer),
            ratio(a.rms_ratio),
            a.k_rms,
            a.floor,
            peer = a.peer,
            truth = a.truth,
        ));
    }
    (s.masked > 0 && first_of_tensor)
        .then(|| format!("{} masked future entries excluded from the diff", s.masked))
}

/// A systematic error of ours against the peer on the same input: how large, how sure, where.
fn systematic(s: &Systematic, peer: &str, truth: &str) -> String {
    let w = &s.bias.worst;
    format!(
        "a systematic error, though within every fixed tolerance and as accurate as {peer} by max and \
         rms: ours − {peer} on the same input is biased by {:.1} float32 epsilons of the truth's rms \
         (allowed {}), χ² {:.0} over {} bins of {truth}'s value and {} rows (noise stays under {:.0}); \
         worst where {truth} is {} to {}: mean {} ({:.0} standard errors); ours's bins are {} from \
         {truth}, {peer}'s {}",
        s.epsilons,
        s.allowed_epsilons,
        s.bias.chi2,
        s.bias.bins,
        s.bias.rows,
        s.chi2_limit,
        value(w.from),
        value(w.to),
        sci(w.mean),
        w.z(),
        sci(s.bias.ours_bias_rms),
        sci(s.bias.peer_bias_rms),
    )
}

/// The lines of a diagnosis: where the error sits (when it has structure), the hypotheses that
/// fit, then the checkpoint's common failures.
pub fn diagnosis(d: &Diagnosis) -> Vec<String> {
    let mut out: Vec<String> = d.location.iter().map(|l| format!("where: {l}")).collect();
    for (i, f) in d.findings.iter().enumerate() {
        let lead = if i == 0 { "likely cause" } else { "also fits" };
        out.push(format!("{lead}: {}; {}", f.cause, f.evidence));
    }
    if let Some(note) = &d.note {
        out.push(note.clone());
    } else if d.findings.is_empty() {
        out.push("no hypothesis the data can decide fits".to_string());
    }
    if !d.common_failures.is_empty() {
        out.push(format!("common failures here: {}", d.common_failures.join("; ")));
    }
    out
}

/// A tensor element with 9 significant digits: every float32 value exactly, a float64 one to
/// well below float32 resolution (JSON carries all its digits).
pub fn value(x: f64) -> String {
    format!("{x:.8e}")
}

/// The sources that disagree with every other while those agree.
pub fn odd_ones_out(report: &Report) -> Vec<String> {
    report
        .odd_ones_out
        .iter()
        .map(|odd| {
            format!(
                "odd one out: {} disagrees with every other source while they agree, on {} tensor{}, first at {}",
                odd.source,
                odd.tensors,
                if odd.tensors == 1 { "" } else { "s" },
                odd.first
            )
        })
        .collect()
}

/// How the float64 truths agreed with each other, when there are two or more.
pub fn truths(report: &Report) -> Option<String> {
    let t = report.truths.as_ref()?;
    let names = t.sources.join(", ");
    let rule = format!("float64 against float64 at {TRUTHS_AGREE}");
    Some(match &t.first {
        None => format!(
            "truths: {names} agree on every tensor they share ({rule}; worst |diff| {:.1e})",
            t.worst_abs
        ),
        Some(first) => {
            let which = if !t.odd_ones_out.is_empty() {
                format!("the one off is {}", t.odd_ones_out.join(", "))
            } else if t.sources.len() == 2 {
                "with two truths a third float64 source would say which one is off".to_string()
            } else {
                "no one truth is the odd one out".to_string()
            };
            format!(
                "truths disagree: {names} differ beyond {rule} on {} tensor{}, first at {first}; {which}; the \
                 accuracy verdict is measured against {}",
                t.disagreements,
                if t.disagreements == 1 { "" } else { "s" },
                report.source(Role::Truth).map_or("the first", |s| s.name.as_str())
            )
        }
    })
}

/// What a dump left out, and why.
pub fn not_checked(report: &Report) -> Vec<String> {
    let omitted = report.sources.iter().flat_map(|s| s.omitted.iter().map(move |o| (s, o)));
    omitted
        .map(|(s, o)| {
            format!(
                "not checked: {} has no {} of checkpoint {} ({}): {}",
                s.name, o.name, o.checkpoint, o.phase, o.reason
            )
        })
        .collect()
}

/// With isolated rows: how many failing tensors are wrong themselves and how many fail by drift
/// from an earlier stage, with the first of each.
pub fn blame_summary(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for (blame, what) in [
        (Blame::Wrong, "wrong itself (fails on the reference's own input)"),
        (Blame::Drift, "failing by drift from an earlier stage (passes on the reference's input)"),
    ] {
        // One count per tensor: its pairs and its two modes are one stage.
        let mut places: Vec<(&str, Phase, Checkpoint, Option<usize>, &str)> = Vec::new();
        let mut first = None;
        for row in report.rows.iter().filter(|r| r.blame == Some(blame)) {
            let p = (row.case.as_str(), row.phase, row.checkpoint, row.layer, row.tensor.as_str());
            if !places.contains(&p) {
                places.push(p);
                first.get_or_insert(row);
            }
        }
        if let Some(first) = first {
            let mut at = first.location();
            at.pair = None;
            let n = places.len();
            out.push(format!("{n} tensor{} {what}, first at {at}", if n == 1 { "" } else { "s" }));
        }
    }
    out
}
