//! The command line: `cli` (clap's definitions), `options` (validate's arguments resolved once),
//! `exports` (the one owner of validate's output files), and one module per command, each
//! owning its own output. `main.rs` only parses the command line and calls [`run`].

mod bench;
pub mod cli;
mod cost;
mod exports;
mod generate;
mod options;
mod serve;
mod validate;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::validation::report;
use cli::{Cli, Command, ReportFormat};

pub use options::DEFAULT_MODEL_DIR;

/// Runs one command. Ok(exit code) for results (0 pass, 1 a check failed); errors are the
/// caller's exit code 2.
pub fn run(cli: Cli) -> Result<ExitCode> {
    crate::engine::run_on(cli.threads, cli.kernels.map(kernel_set).transpose()?)?;
    match cli.command {
        Command::Validate(args) => validate::run(*args),
        Command::Cost(args) => cost::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Bench(args) => bench::run(args),
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

/// The engine's unit of a --kernels name; the AVX sets exist on x86-64 only.
fn kernel_set(set: cli::KernelSet) -> Result<crate::engine::Simd> {
    use crate::engine::Simd;
    match set {
        cli::KernelSet::Portable => Ok(Simd::Baseline),
        #[cfg(target_arch = "x86_64")]
        cli::KernelSet::Avx2 => Ok(Simd::Avx2),
        #[cfg(target_arch = "x86_64")]
        cli::KernelSet::Avx512 => Ok(Simd::Avx512),
        #[cfg(not(target_arch = "x86_64"))]
        other => anyhow::bail!("the {other:?} kernels exist on x86-64 only"),
    }
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
