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
use crate::validation::spec::{Checkpoint, Checks, Phase, Place};

/// The tensors kept for the checks after the pass, by the site the pass recorded them at.
pub type Kept = HashMap<Site, ArrayD<f32>>;

/// The checks a recorded tensor goes to: returns its rows.
pub type Check<'a> = dyn FnMut(Site, ArrayViewD<'_, f32>) -> Result<Vec<Row>> + 'a;

/// Isolated mode's source of stage inputs: the reference's tensor at a site.
pub type Feed<'a> = dyn FnMut(Site) -> Result<ArrayD<f32>> + 'a;

/// What a pass's tape records: the places (all of one phase, the pass's) whose tensors go to
/// the checks, and those kept for a check after the pass.
#[derive(Default)]
pub struct Wanted {
    pub phase: Phase,
    pub compare: BTreeSet<Place>,
    pub keep: BTreeSet<Place>,
}

impl Wanted {
    fn contains(&self, place: &Place) -> bool {
        self.compare.contains(place) || self.keep.contains(place)
    }
}

pub struct CheckingTape<'a> {
    wanted: Wanted,
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
        wanted: Wanted,
        full_pass: bool,
        stop_at_first_failure: bool,
        check: &'a mut Check<'a>,
        feed: Option<&'a mut Feed<'a>>,
        progress: &'a ProgressBar,
    ) -> CheckingTape<'a> {
        let places = wanted.compare.union(&wanted.keep);
        let expected = places.map(|place| place.checkpoint.spec().tensors.len()).sum();
        CheckingTape {
            wanted,
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
        self.wanted.contains(&Place::new(self.wanted.phase, checkpoint, layer))
    }

    fn record(&mut self, site: Site, tensor: ArrayViewD<'_, f32>) -> Result<()> {
        let at = Place::new(self.wanted.phase, site.checkpoint, site.layer);
        if self.wanted.compare.contains(&at) {
            let rows = (self.check)(site, tensor.view())?;
            self.failed |= rows.iter().any(|r| !r.passed);
            self.rows.extend(rows);
        }
        if self.wanted.keep.contains(&at) {
            self.kept.insert(site, tensor.to_owned());
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
        if let Some(kept) = self.kept.get_mut(&site) {
            kept.clone_from(&tensor);
        }
        Ok(Some(tensor))
    }
}
