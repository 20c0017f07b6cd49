//! Renderers of a validation result, behind one trait: a table for people, JSON for scripts,
//! an HTML page of plots, JUnit XML for CI systems. All read the same `result::Report`, so they
//! cannot disagree.

mod checkpoints;
pub(crate) mod corpus;
pub(crate) mod cost;
mod html;
mod junit;
mod table;
mod words;

use crate::validation::result::Report;

pub use checkpoints::{checkpoints_json, checkpoints_table};
pub use corpus::corpus_table;
pub use cost::cost_table;
pub use html::{Html, cost_html};
pub use junit::Junit;
pub use table::Table;

/// How much the table shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Detail {
    /// Failing rows and the summary only.
    Quiet,
    Normal,
    /// Also the first mismatching elements and a |diff| histogram of failing tensors.
    Verbose,
}

/// Turns a report into the text of one output format.
pub trait Exporter {
    fn render(&self, report: &Report) -> String;
}

/// One JSON document; the fields are documented in CHECKPOINTS.md.
pub struct Json;

impl Exporter for Json {
    fn render(&self, report: &Report) -> String {
        json(report)
    }
}

/// One pretty-printed JSON document of any report (validate's, cost's, the corpus run's).
pub fn json(report: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(report).expect("a report always serialises") + "\n"
}

/// 3 significant digits in scientific notation.
fn sci(x: f64) -> String {
    if x == 0.0 { "0".into() } else { format!("{x:.2e}") }
}
