//! `llorch validate`: runs our forward pass with a tape that compares each checkpoint tensor with
//! the reference the moment it is recorded (so a 48-layer run holds one layer's activations at a
//! time), then checks the cache, the next token, the probabilities and the generated text.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array3, ArrayD, ArrayViewD, Axis, s};

use crate::checkpoint::{Checkpoint, Tolerance};
use crate::compare::{self, Mask};
use crate::generate::Generation;
use crate::model::{Gpt2, KvCache};
use crate::reference::{Case, Reference};
use crate::report::{Report, Row};
use crate::sampling::{self, Sampling};
use crate::tape::{NoTape, Site, Tape};
use crate::tokenizer::Gpt2Tokenizer;

/// Which transformer layers the per-layer checkpoints (1–7) are checked at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layers {
    One(usize),
    All,
}

/// One place a checkpoint is checked: (checkpoint, layer), the layer only for checkpoints 1–7.
pub type SiteKey = (Checkpoint, Option<usize>);

/// The sites of `checkpoints` at `layers`, in the order the forward pass reaches them:
/// embeddings, then layer by layer checkpoints 1–7, then the head (8–12).
pub fn plan(checkpoints: &[Checkpoint], layers: &[usize]) -> Vec<SiteKey> {
    let has = |cp: &Checkpoint| checkpoints.contains(cp);
    let mut sites = Vec::new();
    if has(&Checkpoint::Embeddings) {
        sites.push((Checkpoint::Embeddings, None));
    }
    for &l in layers {
        sites.extend(Checkpoint::ALL.iter().filter(|c| c.per_layer() && has(c)).map(|&c| (c, Some(l))));
    }
    sites.extend(Checkpoint::ALL.iter().filter(|c| c.index() >= 8 && has(c)).map(|&c| (c, None)));
    sites
}

/// A loaded model, tokenizer and reference dump, checked as often as a search needs without
/// loading anything twice.
pub struct Session {
    pub model: Gpt2,
    pub tokenizer: Option<Gpt2Tokenizer>,
    pub reference: Reference,
    pub model_dir: PathBuf,
    pub atol: Option<f64>,
    pub rtol: Option<f64>,
    pub progress: ProgressBar,
}

impl Session {
    pub fn open(model_dir: &Path, reference_dir: &Path, progress: ProgressBar) -> Result<Session> {
        progress.set_message("loading model");
        let model = Gpt2::load_dir(model_dir)?;
        let tokenizer = Gpt2Tokenizer::from_model_dir(model_dir)?;
        let reference = Reference::open(reference_dir)?;
        reference.check_model(&model.config)?;
        for case in &reference.manifest.cases {
            check_prompt(case, tokenizer.as_ref())?;
        }
        let model_dir = model_dir.to_owned();
        Ok(Session { model, tokenizer, reference, model_dir, atol: None, rtol: None, progress })
    }

    pub fn layers(&self, layers: Layers) -> Result<Vec<usize>> {
        let n = self.model.config.n_layer;
        match layers {
            Layers::All => Ok((0..n).collect()),
            Layers::One(l) if l < n => Ok(vec![l]),
            Layers::One(l) => bail!("--layer {l} does not exist: the model has layers 0 to {}", n - 1),
        }
    }

    /// The tolerance of a checkpoint, after --atol / --rtol.
    pub fn tolerance(&self, checkpoint: Checkpoint) -> Tolerance {
        match checkpoint.tolerance() {
            Tolerance::Close { atol, rtol } => {
                Tolerance::Close { atol: self.atol.unwrap_or(atol), rtol: self.rtol.unwrap_or(rtol) }
            }
            Tolerance::Exact => Tolerance::Exact,
        }
    }

    /// Checks `sites` of one case with one forward pass (plus the decode step and generation
    /// when they are among the sites). With `stop_at_first_failure` the work ends at the first
    /// failing tensor. Rows come back in forward order.
    pub fn check(&self, case: &Case, sites: &[SiteKey], stop_at_first_failure: bool) -> Result<Vec<Row>> {
        let mut run = CaseRun {
            session: self,
            case,
            sites: sites.iter().copied().collect(),
            stop_at_first_failure,
            rows: Vec::new(),
        };
        run.all()?;
        let order: HashMap<SiteKey, usize> = plan(&Checkpoint::ALL, &self.layers(Layers::All)?)
            .into_iter()
            .enumerate()
            .map(|(i, site)| (site, i))
            .collect();
        run.rows.sort_by_key(|r| order.get(&(r.checkpoint, r.layer)).copied());
        Ok(run.rows)
    }

    pub fn report(&self, rows: Vec<Row>) -> Report {
        Report {
            model: self.model_dir.display().to_string(),
            reference: self.reference.dir.display().to_string(),
            generator: serde_json::to_value(&self.reference.manifest.generator).unwrap_or_default(),
            rows,
            search: None,
        }
    }
}

/// The manifest's token ids must be what our tokenizer makes of its prompt: otherwise the dump
/// belongs to another prompt or another tokenizer, and every comparison would be meaningless.
fn check_prompt(case: &Case, tokenizer: Option<&Gpt2Tokenizer>) -> Result<()> {
    ensure!(!case.token_ids.is_empty(), "case {:?} has no prompt tokens", case.name);
    if let (Some(tokenizer), Some(prompt)) = (tokenizer, &case.prompt) {
        let ours = tokenizer.encode(prompt)?;
        ensure!(
            ours == case.token_ids,
            "case {:?}: the model's tokenizer encodes {prompt:?} as {ours:?}, but the reference \
             was made from token ids {:?}",
            case.name,
            case.token_ids
        );
    }
    Ok(())
}

struct CaseRun<'a> {
    session: &'a Session,
    case: &'a Case,
    sites: BTreeSet<SiteKey>,
    stop_at_first_failure: bool,
    rows: Vec<Row>,
}

impl CaseRun<'_> {
    /// The layers among the sites of a per-layer checkpoint.
    fn layers_of(&self, checkpoint: Checkpoint) -> Vec<usize> {
        self.sites.iter().filter(|(c, _)| *c == checkpoint).filter_map(|&(_, l)| l).collect()
    }

    fn wants(&self, checkpoint: Checkpoint) -> bool {
        self.sites.iter().any(|(c, _)| *c == checkpoint)
    }

    /// True once a row failed and the run is to stop there.
    fn stopped(&self) -> bool {
        self.stop_at_first_failure && self.rows.iter().any(|r| !r.passed)
    }

    fn all(&mut self) -> Result<()> {
        let tokens = &self.case.token_ids;
        let t = tokens.len();
        let model = &self.session.model;
        // The decode step of checkpoint 3 needs one more cache row than the prompt.
        let mut cache = KvCache::new(&model.config, t + 1)?;
        let mut tape = self.tape();
        self.session.progress.set_message(format!("case {}: forward pass", self.case.name));
        let logits = model.forward_recorded(tokens, &mut cache, &mut tape)?;
        let ComparingTape { rows, kept, .. } = tape;
        self.rows.extend(rows);
        if self.wants(Checkpoint::KvCache) && !self.stopped() {
            self.kv_cache(&mut cache, &kept)?;
        }
        let Some(logits) = logits else { return Ok(()) };
        let logits = logits.as_slice().expect("contiguous");
        if self.wants(Checkpoint::SelectedLogits) && !self.stopped() {
            let full = kept.get(&(Checkpoint::Logits, None, "logits")).context("full logits kept")?;
            let last_row = full.index_axis(Axis(0), t - 1);
            let ours = ndarray::ArrayView1::from(logits).into_dyn();
            let what = "selected_logits = logits[T-1] (ours)";
            self.bitwise(Checkpoint::SelectedLogits, None, what, ours, last_row)?;
        }
        if self.wants(Checkpoint::Argmax) && !self.stopped() {
            self.argmax(logits);
        }
        if self.wants(Checkpoint::Probabilities) && !self.stopped() {
            self.probabilities(logits)?;
        }
        if self.wants(Checkpoint::Generation) && !self.stopped() {
            self.generation()?;
        }
        Ok(())
    }

    /// The tape for the prefill: compares the tape checkpoints among the sites, and keeps the
    /// tensors the exact invariants of checkpoints 3 and 9 need.
    fn tape(&self) -> ComparingTape<'_> {
        let mut compare = BTreeSet::new();
        let mut keep = BTreeSet::new();
        for &(cp, layer) in &self.sites {
            match cp {
                Checkpoint::KvCache => {
                    keep.insert((Checkpoint::Qkv, layer));
                }
                Checkpoint::SelectedLogits => {
                    compare.insert((cp, None));
                    keep.insert((Checkpoint::Logits, None));
                }
                Checkpoint::Argmax | Checkpoint::Probabilities | Checkpoint::Generation => {}
                _ => {
                    compare.insert((cp, layer));
                }
            }
        }
        // Checkpoints after the pass need all of it; otherwise it may stop once the tape is full.
        let full_pass = self.sites.iter().any(|(c, _)| {
            matches!(
                c,
                Checkpoint::KvCache | Checkpoint::Argmax | Checkpoint::Probabilities | Checkpoint::Generation
            )
        });
        let expected = compare.union(&keep).map(|(cp, _)| cp.tensors().len()).sum();
        ComparingTape {
            run: self,
            compare,
            keep,
            expected,
            recorded: 0,
            full_pass,
            failed: false,
            rows: Vec::new(),
            kept: HashMap::new(),
        }
    }

    fn push(
        &mut self,
        checkpoint: Checkpoint,
        layer: Option<usize>,
        tensor: &str,
        shape: &[usize],
        passed: bool,
        detail: String,
    ) {
        self.rows.push(Row {
            case: self.case.name.clone(),
            checkpoint,
            layer,
            tensor: tensor.into(),
            shape: shape.to_vec(),
            tolerance: Tolerance::Exact,
            passed,
            stats: None,
            detail: Some(detail),
        });
    }

    /// An exact invariant between two tensors of ours.
    fn bitwise(
        &mut self,
        cp: Checkpoint,
        layer: Option<usize>,
        what: &str,
        a: ArrayViewD<'_, f32>,
        b: ArrayViewD<'_, f32>,
    ) -> Result<()> {
        let diff = compare::first_bitwise_difference(a.view(), b.view())?;
        let detail = match &diff {
            None => "bit-identical".to_string(),
            Some(i) => format!("differ first at {i:?}"),
        };
        self.push(cp, layer, what, a.shape(), diff.is_none(), detail);
        Ok(())
    }

    fn compare_with_reference(
        &mut self,
        cp: Checkpoint,
        layer: Option<usize>,
        name: &str,
        ours: ArrayViewD<'_, f32>,
    ) -> Result<()> {
        let session = self.session;
        let row = compare_row(&session.reference, self.case, cp, layer, name, ours, session.tolerance(cp))?;
        self.rows.push(row);
        Ok(())
    }

    /// Checkpoint 3: the cache after the prompt, then after one decode step with HF's argmax.
    fn kv_cache(&mut self, cache: &mut KvCache, kept: &HashMap<Key, ArrayD<f32>>) -> Result<()> {
        let cp = Checkpoint::KvCache;
        let t = cache.len();
        let mut before: Vec<(usize, Array3<f32>, Array3<f32>)> = Vec::new();
        for l in self.layers_of(cp) {
            let (k, v) = (cache.keys(l), cache.values(l));
            self.compare_with_reference(cp, Some(l), "k_cache", k.into_dyn())?;
            self.compare_with_reference(cp, Some(l), "v_cache", v.into_dyn())?;
            for (name, cached, what) in
                [("k", k, "k_cache = checkpoint 2 k (ours)"), ("v", v, "v_cache = checkpoint 2 v (ours)")]
            {
                let from_qkv = kept.get(&(Checkpoint::Qkv, Some(l), name)).context("checkpoint 2 kept")?;
                self.bitwise(cp, Some(l), what, cached.into_dyn(), from_qkv.view())?;
            }
            before.push((l, k.to_owned(), v.to_owned()));
        }
        self.session.progress.set_message(format!("case {}: decode step", self.case.name));
        self.session.model.forward_recorded(&[self.case.next_token], cache, &mut NoTape)?;
        for (l, k_before, v_before) in before {
            let (k, v) = (cache.keys(l), cache.values(l));
            self.compare_with_reference(cp, Some(l), "k_cache_decode", k.into_dyn())?;
            self.compare_with_reference(cp, Some(l), "v_cache_decode", v.into_dyn())?;
            let kept_k = k.slice(s![.., ..t, ..]).into_dyn();
            let kept_v = v.slice(s![.., ..t, ..]).into_dyn();
            self.bitwise(
                cp,
                Some(l),
                "k_cache rows 0..T unchanged by decode",
                kept_k,
                k_before.view().into_dyn(),
            )?;
            self.bitwise(
                cp,
                Some(l),
                "v_cache rows 0..T unchanged by decode",
                kept_v,
                v_before.view().into_dyn(),
            )?;
        }
        Ok(())
    }

    /// Checkpoint 10: our next token must be HF's.
    fn argmax(&mut self, logits: &[f32]) {
        let (ours, theirs) = (sampling::argmax(logits), self.case.next_token);
        let detail = if ours == theirs {
            format!("ours {ours} = HF {theirs}")
        } else {
            format!(
                "ours {ours} (logit {:.6}), HF {theirs} (our logit for it {:.6}), gap {:.3e}",
                logits[ours as usize],
                logits[theirs as usize],
                logits[ours as usize] - logits[theirs as usize]
            )
        };
        self.push(Checkpoint::Argmax, None, "next_token", &[], ours == theirs, detail);
    }

    /// Checkpoint 11: softmax(warp(logits)) with the case's sampling settings.
    fn probabilities(&mut self, logits: &[f32]) -> Result<()> {
        let s = &self.case.sampling;
        let sampling = Sampling::new(s.temperature as f32, s.top_k, s.top_p.map(|p| p as f32))
            .with_context(|| format!("case {:?} has invalid sampling settings", self.case.name))?;
        ensure!(
            !sampling.is_greedy(),
            "case {:?}: checkpoint 11 needs a temperature above 0",
            self.case.name
        );
        let probs = sampling::probabilities(logits, &sampling);
        self.compare_with_reference(
            Checkpoint::Probabilities,
            None,
            "probs",
            ndarray::ArrayView1::from(&probs).into_dyn(),
        )
    }

    /// Checkpoint 12: greedy generation through the KV cache, token for token against HF.
    fn generation(&mut self) -> Result<()> {
        let cp = Checkpoint::Generation;
        let expected = &self.case.generated_ids;
        let n = expected.len();
        ensure!(n > 0, "case {:?} has no generated tokens to compare", self.case.name);
        let mut generation = Generation::start(&self.session.model, &self.case.token_ids, n)?;
        let mut ours = Vec::with_capacity(n);
        for (i, &theirs) in expected.iter().enumerate() {
            self.session.progress.set_message(format!(
                "case {}: generating token {}/{n}",
                self.case.name,
                i + 1
            ));
            let logits = generation.logits().as_slice().expect("contiguous");
            let token = sampling::argmax(logits);
            ours.push(token);
            if token != theirs {
                let gap = logits[token as usize] - logits[theirs as usize];
                let detail = format!(
                    "first difference at new token {i}: ours {token}, HF {theirs}, our logit gap {gap:.3e}; \
                     ours so far {ours:?}, HF {expected:?}"
                );
                self.push(cp, None, "generated_ids", &[n], false, detail);
                return Ok(());
            }
            if i + 1 < n {
                generation.push(token)?;
            }
        }
        self.push(cp, None, "generated_ids", &[n], true, format!("{n} tokens equal HF: {ours:?}"));
        if let (Some(tokenizer), Some(text)) = (&self.session.tokenizer, &self.case.generated_text) {
            let all: Vec<u32> = self.case.token_ids.iter().chain(&ours).copied().collect();
            let decoded = tokenizer.decode(&all)?;
            let detail = if &decoded == text {
                format!("{decoded:?}")
            } else {
                format!("ours {decoded:?}, HF {text:?}")
            };
            self.push(cp, None, "generated_text", &[], &decoded == text, detail);
        }
        Ok(())
    }
}

/// Compares one tensor of ours with its reference entry.
fn compare_row(
    reference: &Reference,
    case: &Case,
    cp: Checkpoint,
    layer: Option<usize>,
    name: &str,
    ours: ArrayViewD<'_, f32>,
    tolerance: Tolerance,
) -> Result<Row> {
    let entry = case.require(cp, layer, name)?;
    let theirs = reference.load(entry)?;
    let mask = if name == "scores" { Mask::Causal } else { Mask::All };
    let stats = compare::compare(ours, theirs.view(), tolerance, mask)
        .with_context(|| format!("comparing {name} of checkpoint {cp} with {}", entry.file))?;
    Ok(Row {
        case: case.name.clone(),
        checkpoint: cp,
        layer,
        tensor: name.into(),
        shape: entry.shape.clone(),
        tolerance,
        passed: stats.passed(),
        stats: Some(stats),
        detail: None,
    })
}

type Key = (Checkpoint, Option<usize>, &'static str);

/// Compares tensors as the pass records them and drops them right after, except the few that
/// an exact invariant needs later.
struct ComparingTape<'a> {
    run: &'a CaseRun<'a>,
    compare: BTreeSet<(Checkpoint, Option<usize>)>,
    keep: BTreeSet<(Checkpoint, Option<usize>)>,
    expected: usize,
    recorded: usize,
    full_pass: bool,
    failed: bool,
    rows: Vec<Row>,
    kept: HashMap<Key, ArrayD<f32>>,
}

impl Tape for ComparingTape<'_> {
    fn wants(&self, checkpoint: Checkpoint, layer: Option<usize>) -> bool {
        self.compare.contains(&(checkpoint, layer)) || self.keep.contains(&(checkpoint, layer))
    }

    fn record(&mut self, site: Site, tensor: ArrayViewD<'_, f32>) -> Result<()> {
        let at = (site.checkpoint, site.layer);
        if self.compare.contains(&at) {
            let run = self.run;
            let tolerance = run.session.tolerance(site.checkpoint);
            let row = compare_row(
                &run.session.reference,
                run.case,
                site.checkpoint,
                site.layer,
                site.name,
                tensor.view(),
                tolerance,
            )?;
            self.failed |= !row.passed;
            self.rows.push(row);
        }
        if self.keep.contains(&at) {
            self.kept.insert((site.checkpoint, site.layer, site.name), tensor.to_owned());
        }
        self.recorded += 1;
        self.run.session.progress.inc(1);
        Ok(())
    }

    fn is_complete(&self) -> bool {
        (self.failed && self.run.stop_at_first_failure) || (!self.full_pass && self.recorded >= self.expected)
    }
}

/// A progress bar on stderr; indicatif draws nothing when stderr is not a terminal.
pub fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_finish(indicatif::ProgressFinish::AndClear);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({pos} tensors, {elapsed})").expect("valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}
