//! `llorch validate`: resolve the options, open the engine and the references, check every
//! case (or search for the first failure), render the report in every format asked for.

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::cli::{ReportFormat, ValidateArgs};
use super::exports::Exports;
use super::options::ValidateOptions;
use super::{colors_on, print_out};
use crate::engine::Gpt2;
use crate::engine::tokenizer::Gpt2Tokenizer;
use crate::validation::corpus::CorpusRun;
use crate::validation::report::{self, Exporter};
use crate::validation::run::{self, Validator};
use crate::validation::runner::Runner;
use crate::validation::search;

pub fn run(args: ValidateArgs) -> Result<ExitCode> {
    #[cfg(feature = "planted-bugs")]
    let plant = args.plant;
    #[cfg(feature = "path-counters")]
    let path_counts = args.path_counts.clone();
    let options = ValidateOptions::resolve(args)?;
    // Our engine: the model's, or in a test build one with a planted variant.
    let open_engine = || -> Result<Box<dyn Runner>> {
        #[cfg(feature = "planted-bugs")]
        if let Some(variant) = plant {
            return Ok(Box::new(crate::plant::Planted::load_dir(
                &options.model_dir,
                variant,
                options.weights,
            )?));
        }
        Ok(Box::new(Gpt2::load_dir(&options.model_dir, options.weights)?))
    };
    let written = options.exports.paths();
    let result = match (open_engine(), options.corpus.clone()) {
        (Ok(engine), None) => validate_and_report(options, engine),
        (Ok(engine), Some((file, max_kld))) => corpus_and_report(options, engine, &file, max_kld),
        (Err(e), _) => Err(e),
    };
    if result.is_err() {
        // No empty or partial file may pose as a report.
        Exports::discard(&written);
    }
    #[cfg(feature = "path-counters")]
    if let (Ok(_), Some(file)) = (&result, path_counts) {
        write_path_counts(&file)?;
    }
    result
}

/// The counts of the engine's remainder paths this run took, as JSON: every path with its
/// count and whether a validation must reach it on this machine's kernel set.
#[cfg(feature = "path-counters")]
fn write_path_counts(file: &std::path::Path) -> Result<()> {
    use crate::engine::paths;
    let paths: Vec<_> = paths::counts()
        .into_iter()
        .map(|(path, count)| {
            serde_json::json!({"path": path.to_string(), "count": count, "required": path.required()})
        })
        .collect();
    let doc = serde_json::json!({"paths": paths});
    std::fs::write(file, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("cannot write the path counts to {}", file.display()))
}

/// `--corpus FILE`: our engine over the text's windows, every source's distributions against
/// the truth's.
fn corpus_and_report(
    options: ValidateOptions,
    engine: Box<dyn Runner>,
    file: &std::path::Path,
    max_kld: Option<f64>,
) -> Result<ExitCode> {
    let tokenizer = Gpt2Tokenizer::from_model_dir(&options.model_dir)?.with_context(|| {
        format!("{} has no tokenizer to cut the corpus with", options.model_dir.display())
    })?;
    let dumps = run::open_dumps(&options.reference_dirs, engine.config())?;
    let corpus = CorpusRun::open(file, dumps, &tokenizer, engine.config())?;
    let progress = run::progress_bar();
    let report =
        corpus.measure(&options.model_dir.display().to_string(), engine.as_ref(), max_kld, &progress)?;
    progress.finish_and_clear();
    let text = match options.format {
        ReportFormat::Table => report::corpus_table(&report),
        ReportFormat::Json => report::json(&report),
    };
    match options.exports.report {
        Some(output) => output.write(&text)?,
        None => print_out(&text)?,
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn validate_and_report(options: ValidateOptions, engine: Box<dyn Runner>) -> Result<ExitCode> {
    let validator = Validator::open(
        engine,
        &options.model_dir,
        &options.reference_dirs,
        options.overrides.clone(),
        run::progress_bar(),
    )?;
    let validator = match &options.exports.html {
        Some(_) => validator.with_heatmaps(options.heatmaps.clone()),
        None => validator,
    };
    let phases = validator.phases(&options.phases);
    let layers = validator.layers(options.layers)?;
    let sites = run::plan(&options.checkpoints, &layers, &phases);
    anyhow::ensure!(
        !sites.is_empty(),
        "nothing to check: the decode step has checkpoints 0 to 9 only (--phase decode with --checkpoint {})",
        options.checkpoints.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")
    );
    let cases = validator.cases(options.case.as_deref())?;
    let report = match options.search {
        None => {
            let mut rows = Vec::new();
            for case in &cases {
                rows.extend(validator.check(case, &sites, &options.modes, false)?);
            }
            let asked = run::Asked {
                checkpoints: &options.checkpoints,
                layers: &layers,
                phases: &phases,
                modes: &options.modes,
            };
            let unchecked = validator.unchecked(&rows, &cases, &asked);
            // A failing run exits 1 anyway (and a chained failure can end a case's later steps).
            anyhow::ensure!(
                unchecked.is_empty() || rows.iter().any(|r| !r.passed),
                "the validation passed without comparing {} tensors the references hold (a bug of the validation, \
                 not of the engine), among them:\n  {}",
                unchecked.len(),
                unchecked.iter().take(5).cloned().collect::<Vec<_>>().join("\n  ")
            );
            validator.report(rows, None)
        }
        Some(strategy) => {
            let (rows, outcome) = search::search(&validator, &cases, &sites, &options.modes, strategy)?;
            validator.report(rows, Some(outcome))
        }
    };
    validator.progress.finish_and_clear();
    let text = match options.format {
        ReportFormat::Table => report::Table { color: colors_on(), detail: options.detail }.render(&report),
        ReportFormat::Json => report::Json.render(&report),
    };
    let Exports { report: output, junit, html } = options.exports;
    if let Some(junit) = junit {
        junit.write(&report::Junit.render(&report))?;
    }
    if let Some(html) = html {
        let page = report::Html {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            cases: validator.case_prompts(),
        };
        html.write(&page.render(&report))?;
    }
    match output {
        Some(output) => output.write(&text)?,
        None => print_out(&text)?,
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
