//! `llorch validate`: run → checks → result. Our engine runs each case once (the prompt, then
//! the decode step after it); a checking tape hands every recorded tensor to the checks, which
//! compare it with every reference dump (and the dumps with each other) and judge its accuracy
//! against a float64 truth; the rows go to `result::Report`, which the renderers read.
//!
//! - `sources`: the reference dumps, their names, their roles (truth, peer)
//! - `tape`: the tape that feeds the checks during a forward pass
//! - `case`: one case: the prompt's pass, the decode step, then the checks that need all of it
//! - `checks`: one small function per check family, turning (ours, references) into rows

mod case;
mod checks;
mod invariance;
mod sources;
mod tape;
mod ties;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail, ensure};
use indicatif::{ProgressBar, ProgressStyle};

pub use sources::{RefSource, corpus_dirs, default_dirs, model_dumps, open_dumps};

use super::runner::Runner;
use crate::engine::tokenizer::Gpt2Tokenizer;
use crate::engine::weights::Weights;
use crate::validation::reference::Case;
use crate::validation::result::{Report, Row, Search};
use crate::validation::spec::{Checkpoint, Mode, Phase, Place};
use case::CaseRun;
use checks::{CaseContext, HeatmapRequest};
use sources::Sources;

/// Which transformer layers the per-layer checkpoints (1–7) are checked at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layers {
    One(usize),
    All,
}

/// The sites of `checkpoints` at `layers` in `phases`, in the order the work reaches them: the
/// prompt's pass (embeddings, then layer by layer checkpoints 1–7, then the head 8–11), then
/// the decode step's (0–9 the same way), then the generation (12).
pub fn plan(checkpoints: &[Checkpoint], layers: &[usize], phases: &[Phase]) -> Vec<Place> {
    let mut sites = Vec::new();
    for &phase in phases {
        let has = |cp: &Checkpoint| {
            checkpoints.contains(cp)
                && *cp != Checkpoint::Generation
                && (phase == Phase::Prefill || cp.on_decode_step())
        };
        if has(&Checkpoint::Embeddings) {
            sites.push(Place::new(phase, Checkpoint::Embeddings, None));
        }
        for &l in layers {
            let per_layer = Checkpoint::ALL.iter().filter(|c| c.per_layer() && has(c));
            sites.extend(per_layer.map(|&c| Place::new(phase, c, Some(l))));
        }
        sites.extend(
            Checkpoint::ALL.iter().filter(|c| c.index() >= 8 && has(c)).map(|&c| Place::new(phase, c, None)),
        );
    }
    if phases.contains(&Phase::Prefill) && checkpoints.contains(&Checkpoint::Generation) {
        sites.push(Place::new(Phase::Prefill, Checkpoint::Generation, None));
    }
    sites
}

/// What a validation was asked to check, as its options resolved it.
pub struct Asked<'a> {
    pub checkpoints: &'a [Checkpoint],
    pub layers: &'a [usize],
    pub phases: &'a [Phase],
    pub modes: &'a [Mode],
}

/// Overrides of the default tolerances, from --atol / --rtol and --tolerance-scale.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub atol: Option<f64>,
    pub rtol: Option<f64>,
    /// (source, factor): every comparison with the source has its tolerances multiplied.
    pub scales: Vec<(String, f64)>,
}

/// A loaded model, tokenizer and set of reference dumps, checked as often as a search needs
/// without loading anything twice.
pub struct Validator {
    /// Our engine.
    pub engine: Box<dyn Runner>,
    /// The model's weights, for the diagnosis's hypotheses.
    pub weights: Weights,
    pub tokenizer: Option<Gpt2Tokenizer>,
    sources: Sources,
    model_dir: PathBuf,
    overrides: Overrides,
    /// Set when an HTML report is written: which tensors get heatmaps.
    heatmaps: Option<HeatmapRequest>,
    pub progress: ProgressBar,
}

impl Validator {
    pub fn open(
        engine: Box<dyn Runner>,
        model_dir: &Path,
        reference_dirs: &[PathBuf],
        overrides: Overrides,
        progress: ProgressBar,
    ) -> Result<Validator> {
        progress.set_message("loading model");
        let weights = Weights::open(&model_dir.join("model.safetensors"), engine.weights())?;
        let tokenizer = Gpt2Tokenizer::from_model_dir(model_dir)?;
        let sources = Sources::open(reference_dirs, engine.config(), engine.weights())?;
        for (name, _) in &overrides.scales {
            let names: Vec<&str> = sources.refs.iter().map(|r| r.name.as_str()).collect();
            ensure!(
                names.contains(&name.as_str()),
                "--tolerance-scale names {name:?}, which is not a reference of this run; they are {names:?}"
            );
        }
        for source in &sources.refs {
            for case in &source.reference.manifest.cases {
                check_prompt(case, tokenizer.as_ref(), model_dir)?;
            }
        }
        let model_dir = model_dir.to_owned();
        Ok(Validator { engine, weights, tokenizer, sources, model_dir, overrides, heatmaps: None, progress })
    }

    /// Draw |diff| heatmaps (for an HTML report): of failing tensors, and of those named.
    pub fn with_heatmaps(mut self, names: Vec<String>) -> Validator {
        self.heatmaps = Some(HeatmapRequest::new(names));
        self
    }

    pub fn layers(&self, layers: Layers) -> Result<Vec<usize>> {
        let n = self.engine.config().n_layer;
        match layers {
            Layers::All => Ok((0..n).collect()),
            Layers::One(l) if l < n => Ok(vec![l]),
            Layers::One(l) => bail!("--layer {l} does not exist: the model has layers 0 to {}", n - 1),
        }
    }

    /// `--case NAME`, or every case of the dumps.
    pub fn cases(&self, name: Option<&str>) -> Result<Vec<String>> {
        self.sources.select_cases(name)
    }

    /// Checks `sites` of one case with one forward pass per mode (plus the decode step and
    /// generation when they are among the sites). With `stop_at_first_failure` the work ends at
    /// the first failing tensor. Rows come back in forward order, a site's chained rows before
    /// its isolated ones; the pairs of one tensor stay together.
    pub fn check(
        &self,
        case: &str,
        sites: &[Place],
        modes: &[Mode],
        stop_at_first_failure: bool,
    ) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        for (i, &mode) in modes.iter().enumerate() {
            let ctx = CaseContext {
                name: case,
                sources: &self.sources,
                cases: self.sources.case(case),
                atol: self.overrides.atol,
                rtol: self.overrides.rtol,
                scales: &self.overrides.scales,
                heatmaps: self.heatmaps.as_ref(),
                mode,
                ref_pairs: i == 0,
                weights: &self.weights,
                config: self.engine.config(),
            };
            // Generation is end to end in every mode: it runs once.
            let sites =
                sites.iter().copied().filter(|s| i == 0 || s.checkpoint != Checkpoint::Generation).collect();
            let mut run = CaseRun::new(self, ctx, sites, stop_at_first_failure);
            run.run()?;
            rows.extend(run.rows);
            if stop_at_first_failure && rows.iter().any(|r| !r.passed) {
                break;
            }
        }
        let phases: Vec<Phase> = std::iter::once(Phase::Prefill).chain(self.decode_phases()).collect();
        let order: HashMap<Place, usize> = plan(&Checkpoint::ALL, &self.layers(Layers::All)?, &phases)
            .into_iter()
            .enumerate()
            .map(|(i, site)| (site, i))
            .collect();
        // Stable: the pairs of one tensor, and the tensors of one site, keep their order.
        rows.sort_by_key(|r| order.get(&r.place()).copied());
        // Chained, a phase's first diagnosed failure in forward order keeps its diagnosis; the
        // later ones are mostly its drift.
        for phase in phases {
            let chained = |r: &&mut Row| r.phase == phase && r.mode == Mode::Chained && r.diagnosis.is_some();
            for row in rows.iter_mut().filter(chained).skip(1) {
                row.diagnosis = None;
            }
        }
        Ok(rows)
    }

    /// What the dumps hold and no row compared: each tensor of `cases` that a reference holds at
    /// a checkpoint, layer and phase asked for, in every mode, read from the manifests alone (not
    /// from the plan), against the rows. A passing validation must have compared them all, or a
    /// tensor the plan or a pass left out would pass unseen. Each named in words.
    pub fn unchecked(&self, rows: &[Row], cases: &[String], asked: &Asked<'_>) -> Vec<String> {
        let key =
            |source: &str, case: &str, mode: Mode, phase: Phase, cp: u8, layer: Option<usize>, name: &str| {
                let layer = layer.map_or(String::new(), |l| format!(" layer {l}"));
                format!("{name} of {source}, case {case:?}, {phase}, {mode}: checkpoint {cp}{layer}")
            };
        let compared: BTreeSet<String> = rows
            .iter()
            .flat_map(|r| {
                let at = |source: &str| {
                    let cp = r.checkpoint.index();
                    key(source, &r.case, r.mode, r.phase, cp, r.layer, &r.tensor)
                };
                [at(&r.pair.0), at(&r.pair.1)]
            })
            .collect();
        let mut missing = Vec::new();
        for source in &self.sources.refs {
            let held = source.reference.manifest.cases.iter().filter(|c| cases.contains(&c.name));
            for case in held {
                for t in &case.tensors {
                    let wanted = asked.phases.contains(&t.phase)
                        && asked.checkpoints.iter().any(|c| c.index() == t.checkpoint)
                        && t.layer.is_none_or(|l| asked.layers.contains(&l));
                    if !wanted {
                        continue;
                    }
                    for &mode in asked.modes {
                        let k = key(&source.name, &case.name, mode, t.phase, t.checkpoint, t.layer, &t.name);
                        if !compared.contains(&k) {
                            missing.push(k);
                        }
                    }
                }
            }
        }
        missing
    }

    /// The phases to check: the prompt's pass if asked for, and with the decode step every
    /// decode step some dump holds (`dump_reference.py --decode-steps`), first to last.
    pub fn phases(&self, asked: &[Phase]) -> Vec<Phase> {
        let mut phases: Vec<Phase> = asked.iter().copied().filter(|p| !p.is_decode()).collect();
        if asked.iter().any(|p| p.is_decode()) {
            phases.extend(self.decode_phases());
        }
        phases
    }

    /// Every decode step of every case of every dump, first to last (step 1 always).
    fn decode_phases(&self) -> BTreeSet<Phase> {
        let dumped = self.sources.refs.iter().flat_map(|r| &r.reference.manifest.cases);
        let later = dumped.flat_map(|c| &c.tensors).map(|t| t.phase).filter(|p| p.is_decode());
        std::iter::once(Phase::DECODE).chain(later).collect()
    }

    /// Every case of the dumps: (name, prompt or None when made from token ids, prompt tokens).
    pub fn case_prompts(&self) -> Vec<(String, Option<String>, usize)> {
        let first = &self.sources.refs[0].reference.manifest;
        first.cases.iter().map(|c| (c.name.clone(), c.prompt.clone(), c.token_ids.len())).collect()
    }

    pub fn report(&self, rows: Vec<Row>, search: Option<Search>) -> Report {
        Report::new(self.model_dir.display().to_string(), self.sources.describe(), rows, search)
    }
}

/// The manifest's token ids must be what our tokenizer makes of its prompt: otherwise the dump
/// belongs to another prompt or another tokenizer, and every comparison would be meaningless. A
/// case with a prompt or a generated text needs the model's tokenizer, or neither our encoding
/// nor our decoding (checkpoint 12's text) could be checked: refused, not skipped.
fn check_prompt(case: &Case, tokenizer: Option<&Gpt2Tokenizer>, model_dir: &Path) -> Result<()> {
    ensure!(!case.token_ids.is_empty(), "case {:?} has no prompt tokens", case.name);
    ensure!(
        tokenizer.is_some() || (case.prompt.is_none() && case.generated_text.is_none()),
        "case {:?} holds text (a prompt or a generated text), but {} has no tokenizer (tokenizer.json, \
         or vocab.json + merges.txt) to check that ours encodes and decodes it as the reference did",
        case.name,
        model_dir.display()
    );
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

/// A progress bar on stderr; indicatif draws nothing when stderr is not a terminal.
pub fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_finish(indicatif::ProgressFinish::AndClear);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({pos} tensors, {elapsed})").expect("valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Gpt2, WeightFormat};

    /// A plan that leaves checkpoint 4 out passes every row it has; `unchecked` names exactly
    /// what it left out, from the manifests, and nothing once the plan is whole.
    #[test]
    fn what_the_plan_leaves_out_is_unchecked() -> Result<()> {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-gpt2");
        let engine = Box::new(Gpt2::load_dir(&model, WeightFormat::F32)?);
        let dirs = [model.join("reference")];
        let validator = Validator::open(engine, &model, &dirs, Overrides::default(), ProgressBar::hidden())?;
        let (layers, phases, modes) = (validator.layers(Layers::All)?, [Phase::Prefill], [Mode::Chained]);
        let case = validator.cases(None)?.remove(0);
        let checkpoints = [Checkpoint::AttnScores, Checkpoint::AttnOutput];
        let asked = Asked { checkpoints: &checkpoints, layers: &layers, phases: &phases, modes: &modes };
        let check = |planned: &[Checkpoint]| -> Result<Vec<String>> {
            let rows = validator.check(&case, &plan(planned, &layers, &phases), &modes, false)?;
            assert!(!rows.is_empty() && rows.iter().all(|r| r.passed));
            Ok(validator.unchecked(&rows, std::slice::from_ref(&case), &asked))
        };
        assert_eq!(check(&checkpoints)?, Vec::<String>::new());
        let mut missing = check(&[Checkpoint::AttnOutput])?;
        missing.sort();
        let mut expected: Vec<String> = (layers.iter())
            .flat_map(|l| {
                let at = format!("pytorch-f32, case {case:?}, prefill, chained: checkpoint 4 layer {l}");
                [format!("attn_probs of {at}"), format!("scores of {at}")]
            })
            .collect();
        expected.sort();
        assert_eq!(missing, expected);
        Ok(())
    }
}
