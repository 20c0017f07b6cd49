//! `llorch generate`: the prompt through the engine, new tokens streamed to stdout as they are
//! picked (or, with --format json, the ids and the text at the end).

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::cli::{GenerateArgs, TextFormat};
use super::options::model_dir;
use crate::engine::Gpt2;
use crate::engine::generate::{self, Picker};
use crate::engine::sampling::Sampling;
use crate::engine::tokenizer::{self, Gpt2Tokenizer};

pub fn run(args: GenerateArgs) -> Result<ExitCode> {
    let dir = model_dir(args.model)?;
    let sampling = Sampling::new(args.temp, args.top_k, args.top_p)?;
    let model = Gpt2::load_dir(&dir, args.weights)?;
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
    let mut picker = Picker::new(sampling, args.seed);
    let eos = model.config.eos_token_id;
    let stream = args.format == TextFormat::Text;
    let mut out = std::io::stdout().lock();
    let mut text = None;
    if stream {
        match (&tokenizer, &args.prompt) {
            (Some(_), Some(text)) if args.tokens.is_none() => write!(out, "{text}")?,
            (Some(t), _) => write!(out, "{}", t.decode(&prompt_ids)?)?,
            (None, _) => write!(out, "{prompt_ids:?}")?,
        }
        text = tokenizer.as_ref().map(|t| t.stream_after(&prompt_ids)).transpose()?;
        out.flush()?;
    }
    let new_ids = generate::generate(&model, &prompt_ids, args.max_tokens, &mut picker, eos, |id, _| {
        if stream {
            match text.as_mut() {
                Some(text) => write!(out, "{}", text.next(id)?)?,
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
            "weights": model.format(),
            "prompt_ids": prompt_ids,
            "generated_ids": new_ids,
            "text": text,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    }
    Ok(ExitCode::SUCCESS)
}
