//! Finding the first failing (checkpoint, layer) of a case: a sequential walk, or a binary
//! search. Both are built from one probe, a forward run that stops right after the last site it
//! checks, so their costs are counted in the same unit: forward runs.

use anyhow::Result;

use crate::validation::result::{Location, Row, Search};
use crate::validation::run::Validator;
use crate::validation::spec::Mode;
use crate::validation::spec::Place;

/// Which search to run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Strategy {
    /// One forward run per site, in forward order, until a site fails.
    Sequential,
    /// Binary search over the sites in forward order.
    Bisect,
}

/// Runs `strategy` over `sites` (in forward order) of each case in turn, stopping at the first
/// case with a failure. Returns the rows of the probes and what the search found.
pub fn search(
    validator: &Validator,
    cases: &[String],
    sites: &[Place],
    modes: &[Mode],
    strategy: Strategy,
) -> Result<(Vec<Row>, Search)> {
    let mut rows = Vec::new();
    let mut runs = 0;
    let mut sequential_runs = 0;
    for case in cases {
        let found = match strategy {
            Strategy::Sequential => walk(validator, case, sites, modes, &mut rows, &mut runs)?,
            Strategy::Bisect => bisect(validator, case, sites, modes, &mut rows, &mut runs)?,
        };
        sequential_runs += found.map_or(sites.len(), |i| i + 1);
        if let Some(i) = found {
            let Place { phase, checkpoint, layer } = sites[i];
            // The mode that failed first there (chained before isolated).
            let mode =
                rows.iter().find(|r| !r.passed && r.place() == sites[i]).map_or(Mode::Chained, |r| r.mode);
            let first_failure = Some(Location {
                case: case.clone(),
                phase,
                mode,
                checkpoint,
                layer,
                tensor: None,
                pair: None,
            });
            return Ok((rows, summary(strategy, runs, sequential_runs, sites.len(), first_failure)));
        }
    }
    Ok((rows, summary(strategy, runs, sequential_runs, sites.len(), None)))
}

fn summary(
    strategy: Strategy,
    forward_runs: usize,
    sequential_runs: usize,
    sites: usize,
    first_failure: Option<Location>,
) -> Search {
    let strategy = match strategy {
        Strategy::Sequential => "sequential",
        Strategy::Bisect => "bisect",
    };
    Search { strategy, forward_runs, sequential_runs, sites, first_failure }
}

/// One probe: a forward run that checks `sites` and stops after the last of them (or at the
/// first failure). Returns whether anything failed, and the rows.
fn probe(
    validator: &Validator,
    case: &str,
    sites: &[Place],
    modes: &[Mode],
    runs: &mut usize,
) -> Result<(bool, Vec<Row>)> {
    let rows = validator.check(case, sites, modes, true)?;
    *runs += 1;
    Ok((rows.iter().any(|r| !r.passed), rows))
}

/// Sequential: site after site, one forward run each. Returns the first failing index.
fn walk(
    validator: &Validator,
    case: &str,
    sites: &[Place],
    modes: &[Mode],
    rows: &mut Vec<Row>,
    runs: &mut usize,
) -> Result<Option<usize>> {
    for (i, site) in sites.iter().enumerate() {
        validator.progress.set_message(format!("case {case}: site {}/{}", i + 1, sites.len()));
        let (failed, out) = probe(validator, case, std::slice::from_ref(site), modes, runs)?;
        rows.extend(out);
        if failed {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// Binary search on "is there a failure at or before site m?", which is monotone in m whatever
/// pattern of failures the sites have. Sites before `lo` are known to pass, so a probe compares
/// only sites lo..=m (in one forward run that stops after site m); it is a yes/no answer.
fn bisect(
    validator: &Validator,
    case: &str,
    sites: &[Place],
    modes: &[Mode],
    rows: &mut Vec<Row>,
    runs: &mut usize,
) -> Result<Option<usize>> {
    let range = |lo: usize, m: usize, runs: &mut usize| {
        validator.progress.set_message(format!("case {case}: bisect, sites {lo}..={m}"));
        probe(validator, case, &sites[lo..=m], modes, runs)
    };
    if sites.is_empty() {
        return Ok(None);
    }
    let (any, out) = range(0, sites.len() - 1, runs)?;
    if !any {
        rows.extend(out);
        return Ok(None);
    }
    let (mut lo, mut hi) = (0, sites.len() - 1); // invariant: sites < lo pass; a failure is in lo..=hi
    let mut last_failing = out;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let (failed, out) = range(lo, mid, runs)?;
        if failed {
            hi = mid;
            last_failing = out;
        } else {
            rows.extend(out);
            lo = mid + 1;
        }
    }
    // Keep the rows of the failing site itself for the report.
    let Place { phase, checkpoint, layer } = sites[hi];
    rows.extend(
        last_failing
            .into_iter()
            .filter(|r| r.phase == phase && r.checkpoint == checkpoint && r.layer == layer),
    );
    Ok(Some(hi))
}
