//! The tape of a validation run: hands each checkpoint tensor to the checks the moment the
//! forward pass records it and drops it right after (so a 48-layer run holds one layer's
//! activations at a time), keeping only the few tensors that an invariant needs later. In
//! isolated mode it also hands the pass the reference's tensor to continue with after every
//! stage.

use std::collections::{BTreeSet, HashMap};

use anyhow::Result;
use indicatif::ProgressBar;
use ndarray::{ArrayD, ArrayViewD};

use crate::engine::tape::{Site, Tape};
use crate::validation::result::Row;
use crate::validation::spec::Checkpoint;
use crate::validation::spec::Checks;

/// A checkpoint of the pass the tape records, and its layer (for checkpoints 1–7).
pub type At = (Checkpoint, Option<usize>);

/// A kept tensor: (checkpoint, layer, manifest name).
pub type Key = (Checkpoint, Option<usize>, &'static str);

/// The tensors kept for the checks after the pass.
pub type Kept = HashMap<Key, ArrayD<f32>>;

/// The checks a recorded tensor goes to: returns its rows.
pub type Check<'a> = dyn FnMut(Site, ArrayViewD<'_, f32>) -> Result<Vec<Row>> + 'a;

/// Isolated mode's source of stage inputs: the reference's tensor at a site.
pub type Feed<'a> = dyn FnMut(Site) -> Result<ArrayD<f32>> + 'a;

pub struct CheckingTape<'a> {
    /// Sites whose tensors go to the checks.
    compare: BTreeSet<At>,
    /// Sites whose tensors are kept for a check after the pass.
    keep: BTreeSet<At>,
    /// Tensors the pass will record for `compare` and `keep`: once all are in, it may stop.
    expected: usize,
    recorded: usize,
    /// Checks after the pass need all of it (the cache, the logits): never stop early.
    full_pass: bool,
    stop_at_first_failure: bool,
    failed: bool,
    check: &'a mut Check<'a>,
    feed: Option<&'a mut Feed<'a>>,
    progress: &'a ProgressBar,
    pub rows: Vec<Row>,
    pub kept: Kept,
}

impl<'a> CheckingTape<'a> {
    pub fn new(
        compare: BTreeSet<At>,
        keep: BTreeSet<At>,
        full_pass: bool,
        stop_at_first_failure: bool,
        check: &'a mut Check<'a>,
        feed: Option<&'a mut Feed<'a>>,
        progress: &'a ProgressBar,
    ) -> CheckingTape<'a> {
        let expected = compare.union(&keep).map(|(cp, _)| cp.spec().tensors.len()).sum();
        CheckingTape {
            compare,
            keep,
            expected,
            recorded: 0,
            full_pass,
            stop_at_first_failure,
            failed: false,
            check,
            feed,
            progress,
            rows: Vec::new(),
            kept: HashMap::new(),
        }
    }
}

impl Tape for CheckingTape<'_> {
    fn wants(&self, checkpoint: Checkpoint, layer: Option<usize>) -> bool {
        self.compare.contains(&(checkpoint, layer)) || self.keep.contains(&(checkpoint, layer))
    }

    fn record(&mut self, site: Site, tensor: ArrayViewD<'_, f32>) -> Result<()> {
        let at = (site.checkpoint, site.layer);
        if self.compare.contains(&at) {
            let rows = (self.check)(site, tensor.view())?;
            self.failed |= rows.iter().any(|r| !r.passed);
            self.rows.extend(rows);
        }
        if self.keep.contains(&at) {
            self.kept.insert((site.checkpoint, site.layer, site.name), tensor.to_owned());
        }
        self.recorded += 1;
        self.progress.inc(1);
        Ok(())
    }

    fn is_complete(&self) -> bool {
        (self.failed && self.stop_at_first_failure) || (!self.full_pass && self.recorded >= self.expected)
    }

    /// Isolated mode: the reference's tensor. A kept tensor is replaced too, so the invariants
    /// see what the pass went on with (the cache holds the reference's K and V).
    fn replacement(&mut self, site: Site) -> Result<Option<ArrayD<f32>>> {
        let Some(feed) = self.feed.as_mut() else { return Ok(None) };
        let tensor = feed(site)?;
        if let Some(kept) = self.kept.get_mut(&(site.checkpoint, site.layer, site.name)) {
            kept.clone_from(&tensor);
        }
        Ok(Some(tensor))
    }
}
