//! `llorch cost`: open the dumps, plan who is what at each format, run our engine at each format
//! over every case, render the table (or JSON) and the HTML page.

use std::process::ExitCode;

use anyhow::Result;

use super::cli::{CostArgs, ReportFormat};
use super::exports::{Export, Exports};
use super::options::model_dir;
use super::{colors_on, print_out};
use crate::engine::{Config, Gpt2, WeightFormat};
use crate::validation::cost::CostRun;
use crate::validation::report;
use crate::validation::run::{self, model_dumps, open_dumps};
use crate::validation::runner::Runner;

pub fn run(args: CostArgs) -> Result<ExitCode> {
    let dir = model_dir(args.model)?;
    let output = args.output.map(|p| Export::create(p, "report")).transpose()?;
    let html =
        args.report.as_deref().map(|d| Export::create_in_dir(d, "index.html", "HTML report")).transpose()?;
    let written = Exports { report: output, junit: None, html };
    let paths = written.paths();
    // Our engine at a format: the model's, or in a test build one with a planted variant.
    let open_engine = |format: WeightFormat| -> Result<Box<dyn Runner>> {
        #[cfg(feature = "planted-bugs")]
        if let Some(variant) = args.plant.filter(|v| v.format().is_none_or(|f| f == format)) {
            return Ok(Box::new(crate::plant::Planted::load_dir(&dir, variant, format)?));
        }
        Ok(Box::new(Gpt2::load_dir(&dir, format)?))
    };
    let result = measure_and_report(
        &dir,
        args.reference,
        &args.weights,
        args.case.as_deref(),
        args.format,
        written,
        &open_engine,
    );
    if result.is_err() {
        Exports::discard(&paths);
    }
    result
}

fn measure_and_report(
    dir: &std::path::Path,
    reference: Vec<std::path::PathBuf>,
    weights: &[WeightFormat],
    case: Option<&str>,
    format: ReportFormat,
    exports: Exports,
    open_engine: &dyn Fn(WeightFormat) -> Result<Box<dyn Runner>>,
) -> Result<ExitCode> {
    let config = Config::from_file(&dir.join("config.json"))?;
    let dirs = match reference.is_empty() {
        true => model_dumps(dir)?.into_iter().map(|(d, _)| d).collect(),
        false => reference,
    };
    anyhow::ensure!(
        !dirs.is_empty(),
        "no dumps in {}: make the float64 truth with `python scripts/dump_reference.py --model {} \
         --dtype float64 --out {}`, and the dumps at a format beside it (CHECKPOINTS.md, \"The precision's cost\")",
        dir.display(),
        dir.display(),
        dir.join("reference-f64").display()
    );
    let cost = CostRun::new(dir, open_dumps(&dirs, &config)?, (!weights.is_empty()).then_some(weights))?;
    let cases = cost.case_names(case)?;
    let progress = run::progress_bar();
    let mut formats = Vec::new();
    for plan in &cost.plan.formats {
        progress.set_message(format!("ours in {}", plan.format));
        let engine = open_engine(plan.format)?;
        formats.push(cost.measure(plan, engine.as_ref(), &cases, &progress)?);
    }
    progress.finish_and_clear();
    let report = cost.report(formats);
    let text = match format {
        ReportFormat::Table => report::cost_table(&report, colors_on()),
        ReportFormat::Json => report::json(&report),
    };
    let Exports { report: output, html, .. } = exports;
    if let Some(html) = html {
        html.write(&report::cost_html(&report, &std::env::args().collect::<Vec<_>>().join(" ")))?;
    }
    match output {
        Some(output) => output.write(&text)?,
        None => print_out(&text)?,
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
