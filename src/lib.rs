//! llorch: validates an in-repo GPT-2 engine against Hugging Face reference dumps, one
//! checkpoint at a time. `main.rs` only parses the command line and calls [`run`].

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod compare;
pub mod diagnose;
pub mod generate;
pub mod model;
pub mod options;
pub mod plant;
pub mod reference;
pub mod report;
pub mod result;
pub mod sampling;
pub mod search;
pub mod serve;
pub mod tape;
pub mod tokenizer;
pub mod validate;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use cli::{BenchArgs, Cli, Command, GenerateArgs, ReportFormat, TextFormat, ValidateArgs};
use model::Gpt2;
use options::{ValidateOptions, model_dir};
use report::Exporter;
use tokenizer::Gpt2Tokenizer;

pub use options::DEFAULT_MODEL_DIR;

/// Runs one command. Ok(exit code) for results (0 pass, 1 a check failed); errors are the
/// caller's exit code 2.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => run_validate(args),
        Command::Generate(args) => run_generate(args),
        Command::Bench(args) => run_bench(args),
        Command::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS),
        Command::Checkpoints(args) => {
            print_out(&match args.format {
                ReportFormat::Table => report::checkpoints_table(),
                ReportFormat::Json => report::checkpoints_json(),
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_validate(args: ValidateArgs) -> Result<ExitCode> {
    #[cfg(feature = "planted-bugs")]
    if let Some(variant) = args.plant {
        plant::select(variant);
    }
    let options = ValidateOptions::resolve(args)?;
    let written: Vec<PathBuf> = [&options.output, &options.junit, &options.html]
        .into_iter()
        .flatten()
        .map(|(path, _)| path.clone())
        .collect();
    let result = validate_and_report(options);
    // No empty or partial file may pose as a report.
    if result.is_err() {
        for path in written {
            let _ = std::fs::remove_file(path);
        }
    }
    result
}

fn validate_and_report(options: ValidateOptions) -> Result<ExitCode> {
    let validator = validate::Validator::open(
        &options.model_dir,
        &options.reference_dirs,
        options.overrides.clone(),
        validate::progress_bar(),
    )?;
    let validator = match &options.html {
        Some(_) => validator.with_heatmaps(options.heatmaps.clone()),
        None => validator,
    };
    let sites = validate::plan(&options.checkpoints, &validator.layers(options.layers)?, &options.phases);
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
    if let Some((path, mut file)) = options.junit {
        file.write_all(report::Junit.render(&report).as_bytes())
            .with_context(|| format!("writing the JUnit XML to {}", path.display()))?;
    }
    if let Some((path, mut file)) = options.html {
        let html = report::Html {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            cases: validator.case_prompts(),
        };
        file.write_all(html.render(&report).as_bytes())
            .with_context(|| format!("writing the HTML report to {}", path.display()))?;
    }
    match options.output {
        Some((path, mut file)) => file
            .write_all(text.as_bytes())
            .with_context(|| format!("writing the report to {}", path.display()))?,
        None => print_out(&text)?,
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn run_bench(args: BenchArgs) -> Result<ExitCode> {
    let dir = model_dir(args.model)?;
    let model = Gpt2::load_dir(&dir)?;
    eprintln!("llorch bench: {} on {} threads", dir.display(), rayon::current_num_threads());
    let result = bench::run(&model, args.prompt_tokens, args.decode_tokens, args.repeats)?;
    let text = match args.format {
        ReportFormat::Json => serde_json::to_string_pretty(&result)? + "\n",
        ReportFormat::Table => format!(
            "read bandwidth      {:.1} GB/s ({} threads, median of passes between the decode steps)\n\
             weights per token   {:.1} MB: floor {:.2} ms/token\n\
             decode              {:.2} ms/token ({:.2}x the floor), median of {}\n\
             prefill {} tokens   {:.1} ms (last position's logits), {:.1} ms (all logits), best of {}\n",
            result.read_bandwidth_gbs,
            result.threads,
            result.bytes_per_token as f64 / 1e6,
            result.floor_ms_per_token,
            result.decode_ms_per_token,
            result.decode_ms_per_token / result.floor_ms_per_token,
            result.decode_tokens,
            result.prompt_tokens,
            result.prefill_ms_last_logits,
            result.prefill_ms_all_logits,
            result.repeats,
        ),
    };
    print_out(&text)?;
    Ok(ExitCode::SUCCESS)
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
