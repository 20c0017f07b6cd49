//! The result of a validation run, and its two renderings: comfy-table for people, JSON for
//! scripts. Both render the same `Report` value, so they cannot disagree.

use comfy_table::{Cell, Color, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::checkpoint::{Checkpoint, Tolerance};
use crate::compare::{DECADE_LABELS, Stats};

#[derive(Serialize)]
pub struct Report {
    pub model: String,
    pub reference: String,
    pub generator: serde_json::Value,
    pub rows: Vec<Row>,
    /// What a --until-fail or --bisect search did, when one ran.
    pub search: Option<Search>,
}

/// The outcome of a search for the first failing (checkpoint, layer).
#[derive(Serialize)]
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

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Location {
    pub case: String,
    pub checkpoint: u8,
    pub layer: Option<usize>,
}

/// One checked tensor or value.
#[derive(Serialize)]
pub struct Row {
    pub case: String,
    #[serde(serialize_with = "as_index")]
    pub checkpoint: Checkpoint,
    pub layer: Option<usize>,
    pub tensor: String,
    pub shape: Vec<usize>,
    #[serde(serialize_with = "tolerance_json")]
    pub tolerance: Tolerance,
    pub passed: bool,
    /// Diff statistics for float tensors compared within a tolerance.
    pub stats: Option<Stats>,
    /// What an exact check found, in words (token ids, first difference, ...).
    pub detail: Option<String>,
}

fn as_index<S: serde::Serializer>(c: &Checkpoint, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u8(c.index())
}

fn tolerance_json<S: serde::Serializer>(t: &Tolerance, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(None)?;
    match *t {
        Tolerance::Close { atol, rtol } => {
            m.serialize_entry("atol", &atol)?;
            m.serialize_entry("rtol", &rtol)?;
        }
        Tolerance::Exact => m.serialize_entry("exact", &true)?,
    }
    m.end()
}

/// How much the table shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Detail {
    /// Failing rows and the summary only.
    Quiet,
    Normal,
    /// Also the first mismatching elements and a |diff| histogram of failing tensors.
    Verbose,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.passed)
    }

    pub fn counts(&self) -> (usize, usize) {
        let passed = self.rows.iter().filter(|r| r.passed).count();
        (passed, self.rows.len() - passed)
    }

    /// The first failing row: rows are in forward order within each case (embeddings, then
    /// checkpoints 1–7 layer by layer, then the head), so this is where the engine first goes
    /// wrong.
    pub fn first_failure(&self) -> Option<&Row> {
        self.rows.iter().find(|r| !r.passed)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// One table per case, then the summary; the last line names the first failure when a
    /// search ran, so scripts can read it.
    pub fn to_table(&self, color: bool, detail: Detail) -> String {
        let mut out = String::new();
        let shown = |r: &&Row| detail != Detail::Quiet || !r.passed;
        let mut cases: Vec<&str> = self.rows.iter().filter(shown).map(|r| r.case.as_str()).collect();
        cases.dedup();
        for case in cases {
            let rows: Vec<&Row> = self.rows.iter().filter(shown).filter(|r| r.case == case).collect();
            out.push_str(&format!("case {case}\n"));
            out.push_str(&table(&rows, color));
            out.push('\n');
            for row in rows {
                if let Some(line) = explain(row) {
                    out.push_str(&line);
                    out.push('\n');
                }
                if detail == Detail::Verbose && !row.passed {
                    out.push_str(&verbose(row));
                }
            }
        }
        let (passed, failed) = self.counts();
        match &self.search {
            None => {
                if let Some(first) = self.first_failure() {
                    out.push_str(&format!("first failure: case {}, {}\n", first.case, location(first)));
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
                    Some(at) => out.push_str(&format!("first failure: {}\n", crate::search::describe(at))),
                    None => out.push_str(&format!("no failure: all {} sites pass\n", search.sites)),
                }
            }
        }
        out
    }
}

fn table(rows: &[&Row], color: bool) -> String {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Disabled);
    if !color {
        table.force_no_tty();
    }
    table.set_header(["cp", "layer", "tensor", "shape", "max abs", "max rel", "tolerance", "verdict"]);
    for row in rows {
        let (abs, rel) = match &row.stats {
            Some(s) => (sci(s.max_abs), sci(s.max_rel)),
            None => ("-".into(), "-".into()),
        };
        let mut verdict = Cell::new(if row.passed { "PASS" } else { "FAIL" });
        if color {
            verdict = verdict.fg(if row.passed { Color::Green } else { Color::Red });
        }
        table.add_row(vec![
            Cell::new(row.checkpoint.index()),
            Cell::new(row.layer.map(|l| l.to_string()).unwrap_or_else(|| "-".into())),
            Cell::new(&row.tensor),
            Cell::new(format!("{:?}", row.shape)),
            Cell::new(abs),
            Cell::new(rel),
            Cell::new(row.tolerance.to_string()),
            verdict,
        ]);
    }
    table.to_string()
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
        out.push_str(&format!("    at {:?}: ours {:e}, reference {:e}\n", m.index, m.ours, m.reference));
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

/// `llorch checkpoints`: the checkpoint definitions of src/checkpoint.rs as a table.
pub fn checkpoint_table() -> String {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Disabled);
    table.force_no_tty();
    table.set_header(["cp", "name", "per layer", "tensors", "tolerance"]);
    for cp in Checkpoint::ALL {
        let tensors = match cp {
            Checkpoint::Argmax => "next_token (token id)".to_string(),
            Checkpoint::Generation => "generated_ids, generated_text".to_string(),
            _ => cp.tensors().join(", "),
        };
        table.add_row(vec![
            cp.index().to_string(),
            cp.title().to_string(),
            if cp.per_layer() { "yes" } else { "no" }.to_string(),
            tensors,
            cp.tolerance().to_string(),
        ]);
    }
    format!("{table}\nDefinitions and the HF source of each reference: CHECKPOINTS.md\n")
}

/// A sentence under the table for rows that need more than numbers: exact checks, masked
/// entries, and the worst element of every failure.
fn explain(row: &Row) -> Option<String> {
    let at = location(row);
    if let Some(detail) = &row.detail {
        // Passing bitwise invariants need no sentence; token results are worth reading.
        let informative =
            !row.passed || matches!(row.checkpoint, Checkpoint::Argmax | Checkpoint::Generation);
        return informative.then(|| format!("  {at}: {detail}"));
    }
    let s = row.stats.as_ref()?;
    if !row.passed {
        let mut line = format!(
            "  {at}: {} of {} elements ({:.3}%) out of tolerance; worst at {:?}: ours {:e}, \
             reference {:e}",
            s.mismatches,
            s.compared,
            s.mismatch_percent(),
            s.worst_index,
            s.worst_ours,
            s.worst_ref
        );
        if s.non_finite > 0 {
            line.push_str(&format!("; {} NaN/Inf elements", s.non_finite));
        }
        return Some(line);
    }
    (s.masked > 0).then(|| format!("  {at}: {} masked future entries excluded from the diff", s.masked))
}

/// "checkpoint 5 (attention output), layer 1, attn_out"
pub fn location(row: &Row) -> String {
    let layer = row.layer.map(|l| format!(", layer {l}")).unwrap_or_default();
    format!("checkpoint {} ({}){layer}, {}", row.checkpoint.index(), row.checkpoint.title(), row.tensor)
}

/// 3 significant digits in scientific notation.
fn sci(x: f64) -> String {
    if x == 0.0 { "0".into() } else { format!("{x:.2e}") }
}
