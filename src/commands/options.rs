//! `llorch validate`'s command line resolved once into one value: directories found, layers and
//! checkpoints parsed, tolerances checked, the output opened. Everything after this works on
//! `ValidateOptions` and never looks at the raw arguments again.

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};

use super::cli::{ModeArg, PhaseArg, ReportFormat, ValidateArgs};
use super::exports::{Export, Exports};
use crate::engine::WeightFormat;
use crate::validation::report::Detail;
use crate::validation::run::{self, Layers, Overrides};
use crate::validation::search::Strategy;
use crate::validation::spec::{self, Checkpoint, Mode, Phase};

/// The bundled tiny random GPT-2 that `validate` and `generate` use without --model.
pub const DEFAULT_MODEL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tiny-gpt2");

pub struct ValidateOptions {
    pub model_dir: PathBuf,
    /// The format our engine holds its weights in; every reference must be of weights rounded
    /// the same way.
    pub weights: WeightFormat,
    pub reference_dirs: Vec<PathBuf>,
    pub checkpoints: Vec<Checkpoint>,
    pub layers: Layers,
    pub phases: Vec<Phase>,
    /// Chained, isolated, or both (in that order).
    pub modes: Vec<Mode>,
    pub case: Option<String>,
    pub overrides: Overrides,
    pub search: Option<Strategy>,
    pub format: ReportFormat,
    pub detail: Detail,
    /// The output files, created before any work (so an unwritable path fails in a second).
    pub exports: Exports,
    /// --heatmap: tensor names that get a heatmap in the HTML report even when they pass.
    pub heatmaps: Vec<String>,
    /// --corpus FILE and --max-kld: distribution metrics over a text instead of checkpoints.
    pub corpus: Option<(PathBuf, Option<f64>)>,
}

pub fn model_dir(arg: Option<PathBuf>) -> Result<PathBuf> {
    let dir = arg.unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL_DIR));
    if !dir.is_dir() {
        bail!("model directory {} does not exist", dir.display());
    }
    Ok(dir)
}

fn parse_layers(arg: &str) -> Result<Layers> {
    match arg.trim() {
        l if l.eq_ignore_ascii_case("all") => Ok(Layers::All),
        l => Ok(Layers::One(
            l.parse().with_context(|| format!("--layer takes a layer number or \"all\", not {l:?}"))?,
        )),
    }
}

impl ValidateOptions {
    pub fn resolve(args: ValidateArgs) -> Result<ValidateOptions> {
        let model_dir = model_dir(args.model)?;
        let reference_dirs = match (args.reference.is_empty(), &args.corpus) {
            (false, _) => args.reference,
            (true, None) => run::default_dirs(&model_dir, args.weights)?,
            (true, Some(_)) => run::corpus_dirs(&model_dir)?,
        };
        if let Some(x) = args.max_kld {
            ensure!(x.is_finite() && x >= 0.0, "--max-kld must be a non-negative number, not {x}");
        }
        let search = match (args.until_fail, args.bisect) {
            (true, _) => Some(Strategy::Sequential),
            (_, true) => Some(Strategy::Bisect),
            _ => None,
        };
        let layers =
            parse_layers(args.layer.as_deref().unwrap_or(if search.is_some() { "all" } else { "0" }))?;
        for (flag, value) in [("--atol", args.atol), ("--rtol", args.rtol)] {
            if let Some(v) = value {
                ensure!(v.is_finite() && v >= 0.0, "{flag} must be a non-negative number, not {v}");
            }
        }
        let scales = args.tolerance_scale.iter().map(|s| parse_scale(s)).collect::<Result<Vec<_>>>()?;
        for name in &args.heatmap {
            let floats = spec::specs()
                .iter()
                .flat_map(|s| s.tensors)
                .filter(|t| matches!(t.kind, spec::Kind::Float { .. }));
            let names: Vec<&str> = floats.map(|t| t.name).collect();
            ensure!(
                names.contains(&name.as_str()),
                "--heatmap {name:?} is no float tensor of a checkpoint; they are {}",
                names.join(", ")
            );
        }
        let checkpoints = spec::parse_selection(&args.checkpoint).context("in --checkpoint")?;
        let detail = match (args.quiet, args.verbose) {
            (true, _) => Detail::Quiet,
            (_, true) => Detail::Verbose,
            _ => Detail::Normal,
        };
        let report = args.output.map(|p| Export::create(p, "report")).transpose()?;
        let html =
            args.report.map(|dir| Export::create_in_dir(&dir, "index.html", "HTML report")).transpose()?;
        // After the report directory: the JUnit file may go inside it.
        let junit = args.junit.map(|p| Export::create(p, "JUnit XML")).transpose()?;
        let mut modes: Vec<Mode> = args
            .mode
            .iter()
            .map(|m| match m {
                ModeArg::Chained => Mode::Chained,
                ModeArg::Isolated => Mode::Isolated,
            })
            .collect();
        if args.isolated {
            modes.push(Mode::Isolated);
        }
        modes.sort();
        modes.dedup();
        if modes.is_empty() {
            modes.push(Mode::Chained);
        }
        Ok(ValidateOptions {
            model_dir,
            weights: args.weights,
            reference_dirs,
            checkpoints,
            layers,
            phases: match args.phase {
                PhaseArg::Prefill => vec![Phase::Prefill],
                PhaseArg::Decode => vec![Phase::DECODE],
                PhaseArg::Both => vec![Phase::Prefill, Phase::DECODE],
            },
            modes,
            case: args.case,
            overrides: Overrides { atol: args.atol, rtol: args.rtol, scales },
            search,
            format: args.format,
            detail,
            exports: Exports { report, junit, html },
            heatmaps: args.heatmap,
            corpus: args.corpus.map(|file| (file, args.max_kld)),
        })
    }
}

/// `--tolerance-scale SOURCE=FACTOR`: the source's name and a factor above 0.
fn parse_scale(text: &str) -> Result<(String, f64)> {
    let (source, factor) = text.rsplit_once('=').with_context(|| {
        format!("--tolerance-scale takes SOURCE=FACTOR (e.g. llama.cpp-f32=100), not {text:?}")
    })?;
    let factor: f64 = factor
        .trim()
        .parse()
        .with_context(|| format!("--tolerance-scale {text:?}: {factor:?} is not a number"))?;
    ensure!(
        factor.is_finite() && factor > 0.0,
        "--tolerance-scale {text:?}: the factor must be a positive number"
    );
    ensure!(!source.trim().is_empty(), "--tolerance-scale {text:?} names no source");
    Ok((source.trim().to_string(), factor))
}
