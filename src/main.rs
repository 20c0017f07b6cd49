use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = llorch::commands::cli::Cli::parse();
    match llorch::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
