//! llorch: validates an in-repo GPT-2 engine against Hugging Face reference dumps, one
//! checkpoint at a time. `main.rs` only parses the command line and calls [`run`].

pub mod checkpoint;
pub mod cli;
pub mod compare;
pub mod generate;
pub mod model;
pub mod reference;
pub mod report;
pub mod sampling;
pub mod search;
pub mod tape;
pub mod tokenizer;
pub mod validate;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use cli::{Cli, Command, GenerateArgs, ReportFormat, TextFormat, ValidateArgs};
use model::Gpt2;
use tokenizer::Gpt2Tokenizer;

/// The bundled tiny random GPT-2 that `validate` and `generate` use without --model.
pub const DEFAULT_MODEL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tiny-gpt2");

/// Runs one command. Ok(exit code) for results (0 pass, 1 a tolerance failed); errors are the
/// caller's exit code 2.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => run_validate(args),
        Command::Generate(args) => run_generate(args),
        Command::Checkpoints => {
            print_out(&report::checkpoint_table())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn model_dir(arg: Option<PathBuf>) -> Result<PathBuf> {
    let dir = arg.unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL_DIR));
    if !dir.is_dir() {
        bail!("model directory {} does not exist", dir.display());
    }
    Ok(dir)
}

/// MODEL/reference unless --reference names another directory.
fn reference_dir(arg: Option<PathBuf>, model_dir: &Path) -> Result<PathBuf> {
    if let Some(dir) = arg {
        return Ok(dir);
    }
    let dir = model_dir.join("reference");
    if !dir.is_dir() {
        bail!(
            "no reference for {}: pass --reference DIR, or make one with \
             `python scripts/dump_reference.py --model {} --out {}`",
            model_dir.display(),
            model_dir.display(),
            dir.display()
        );
    }
    Ok(dir)
}

fn parse_layers(arg: &str) -> Result<validate::Layers> {
    match arg.trim() {
        l if l.eq_ignore_ascii_case("all") => Ok(validate::Layers::All),
        l => Ok(validate::Layers::One(
            l.parse().with_context(|| format!("--layer takes a layer number or \"all\", not {l:?}"))?,
        )),
    }
}

fn run_validate(args: ValidateArgs) -> Result<ExitCode> {
    let model_dir = model_dir(args.model.clone())?;
    let reference_dir = reference_dir(args.reference.clone(), &model_dir)?;
    let strategy = match (args.until_fail, args.bisect) {
        (true, _) => Some(search::Strategy::Sequential),
        (_, true) => Some(search::Strategy::Bisect),
        _ => None,
    };
    let layers = parse_layers(args.layer.as_deref().unwrap_or(if strategy.is_some() { "all" } else { "0" }))?;
    for (flag, value) in [("--atol", args.atol), ("--rtol", args.rtol)] {
        if let Some(v) = value {
            anyhow::ensure!(v.is_finite() && v >= 0.0, "{flag} must be a non-negative number, not {v}");
        }
    }
    let checkpoints = checkpoint::parse_selection(&args.checkpoint).context("in --checkpoint")?;
    // Opened before the run, so an unwritable path fails in a second, not after the work; removed
    // again if the run fails, so no empty file poses as a report.
    let output = match &args.output {
        Some(path) => Some(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write the report to {}", path.display()))?,
        ),
        None => None,
    };
    let result =
        validate_and_report(&args, &model_dir, &reference_dir, strategy, layers, &checkpoints, output);
    if let (Err(_), Some(path)) = (&result, &args.output) {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn validate_and_report(
    args: &ValidateArgs,
    model_dir: &Path,
    reference_dir: &Path,
    strategy: Option<search::Strategy>,
    layers: validate::Layers,
    checkpoints: &[checkpoint::Checkpoint],
    output: Option<std::fs::File>,
) -> Result<ExitCode> {
    let mut session = validate::Session::open(model_dir, reference_dir, validate::progress_bar())?;
    session.atol = args.atol;
    session.rtol = args.rtol;
    let sites = validate::plan(checkpoints, &session.layers(layers)?);
    let cases = session.reference.cases(args.case.as_deref())?;
    let report = match strategy {
        None => {
            let mut rows = Vec::new();
            for case in &cases {
                rows.extend(session.check(case, &sites, false)?);
            }
            session.report(rows)
        }
        Some(strategy) => {
            let (rows, outcome) = search::search(&session, &cases, &sites, strategy)?;
            let mut report = session.report(rows);
            report.search = Some(outcome);
            report
        }
    };
    session.progress.finish_and_clear();
    let detail = match (args.quiet, args.verbose) {
        (true, _) => report::Detail::Quiet,
        (_, true) => report::Detail::Verbose,
        _ => report::Detail::Normal,
    };
    let text = match args.format {
        ReportFormat::Table => report.to_table(colors_on(), detail),
        ReportFormat::Json => report.to_json() + "\n",
    };
    match (output, &args.output) {
        (Some(mut file), Some(path)) => file
            .write_all(text.as_bytes())
            .with_context(|| format!("writing the report to {}", path.display()))?,
        _ => print_out(&text)?,
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn run_generate(args: GenerateArgs) -> Result<ExitCode> {
    let dir = model_dir(args.model)?;
    let sampling = sampling::Sampling::new(args.temp, args.top_k, args.top_p)?;
    let model = Gpt2::load_dir(&dir)?;
    let tokenizer = Gpt2Tokenizer::from_model_dir(&dir)?;
    let prompt_ids = match (&args.tokens, &args.prompt) {
        (Some(spec), _) => tokenizer::parse_token_ids(spec)?,
        (None, Some(text)) => {
            anyhow::ensure!(!text.is_empty(), "the prompt is empty: there is nothing to continue");
            let tok = tokenizer.as_ref().with_context(|| {
                format!(
                    "{} has no tokenizer (tokenizer.json, or vocab.json + merges.txt): pass --tokens",
                    dir.display()
                )
            })?;
            tok.encode(text)?
        }
        (None, None) => bail!("give a prompt or --tokens"),
    };
    let mut picker = generate::Picker::new(sampling, args.seed);
    let eos = model.config.eos_token_id;
    let stream = args.format == TextFormat::Text;
    let mut out = std::io::stdout().lock();
    let mut decoder = tokenizer.as_ref().map(|t| t.decode_stream());
    if stream {
        match (&tokenizer, &args.prompt) {
            (Some(_), Some(text)) if args.tokens.is_none() => write!(out, "{text}")?,
            (Some(t), _) => write!(out, "{}", t.decode(&prompt_ids)?)?,
            (None, _) => write!(out, "{prompt_ids:?}")?,
        }
        // Prime the stream decoder with the prompt so the first new token joins it correctly.
        if let Some(d) = decoder.as_mut() {
            for &id in &prompt_ids {
                d.step(id).map_err(|e| anyhow::anyhow!("decoding: {e}"))?;
            }
        }
        out.flush()?;
    }
    let new_ids = generate::generate(&model, &prompt_ids, args.max_tokens, &mut picker, eos, |id| {
        if stream {
            match decoder.as_mut() {
                Some(d) => {
                    if let Some(piece) = d.step(id).map_err(|e| anyhow::anyhow!("decoding: {e}"))? {
                        write!(out, "{piece}")?;
                    }
                }
                None => write!(out, " {id}")?,
            }
            out.flush()?;
        }
        Ok(())
    })?;
    if stream {
        writeln!(out)?;
    } else {
        let all: Vec<u32> = prompt_ids.iter().chain(&new_ids).copied().collect();
        let text = tokenizer.as_ref().map(|t| t.decode(&all)).transpose()?;
        let json = serde_json::json!({
            "prompt_ids": prompt_ids,
            "generated_ids": new_ids,
            "text": text,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Colors only on a terminal, and never when NO_COLOR is set.
fn colors_on() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Writes results to stdout; a closed pipe (`llorch ... | head`) is not an error worth a trace.
fn print_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}
