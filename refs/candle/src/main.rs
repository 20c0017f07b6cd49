//! `llorch-candle-ref`: a GPT-2 reference for llorch on Candle's kernels, writing llorch's dump
//! format (CHECKPOINTS.md, "Reference dump format").
//!
//! What is whose: candle-transformers (0.11.1) has no GPT-2, and its GPTBigCode with
//! `multi_query = false` (which would be GPT-2) fails in `Block::forward` (docs/candle-bigcode.md),
//! so the model code here (`model.rs`) is ours; the arithmetic is candle-core's. It therefore
//! checks llorch's engine against another library's kernels under the same reading of the model,
//! not against another reading of GPT-2.
//!
//!     cargo run --release --manifest-path refs/candle/Cargo.toml -- \
//!         --model DIR --cases cases.json --out DIR/candle [--dtype float64]

mod dump;
mod model;

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use candle_core::DType;
use clap::Parser;

use dump::{CaseDump, Dump};
use model::{Gpt2, argmax, last_row};

#[derive(Parser)]
#[command(about = "Dump llorch reference tensors from a GPT-2 written on candle-core's tensor operations")]
struct Args {
    /// HF model directory (config.json, model.safetensors, tokenizer files)
    #[arg(long)]
    model: PathBuf,
    /// JSON file with a list of cases: name, prompt or token_ids, optional temperature, top_k,
    /// top_p, max_new_tokens (the cases file of scripts/dump_reference.py)
    #[arg(long)]
    cases: PathBuf,
    /// Directory to write manifest.json and the .npy files to
    #[arg(long)]
    out: PathBuf,
    /// Precision candle computes in
    #[arg(long, default_value = "float32", value_parser = ["float32", "float64"])]
    dtype: String,
}

/// One case of the cases file, settings filled in as scripts/dump_format.py's read_cases does.
#[derive(serde::Deserialize)]
struct CaseSpec {
    name: String,
    prompt: Option<String>,
    token_ids: Option<Vec<u32>>,
    #[serde(default = "one")]
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
    #[serde(default = "ten")]
    max_new_tokens: usize,
}

fn one() -> f64 {
    1.0
}

fn ten() -> usize {
    10
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}

fn run(args: Args) -> Result<()> {
    let dtype = if args.dtype == "float64" { DType::F64 } else { DType::F32 };
    let gpt2 = Gpt2::load(&args.model, dtype)?;
    let tokenizer = dump::tokenizer(&args.model)?;
    let text =
        std::fs::read_to_string(&args.cases).with_context(|| format!("reading {}", args.cases.display()))?;
    let specs: Vec<CaseSpec> =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", args.cases.display()))?;
    let mut out = Dump::new(&args.out, &args.dtype, &gpt2.cfg)?;
    for spec in &specs {
        ensure!(!spec.name.is_empty() && !spec.name.contains('/'), "every case needs a name without '/'");
        let ids = match (&spec.token_ids, &spec.prompt, &tokenizer) {
            (Some(ids), _, _) => ids.clone(),
            (None, Some(prompt), Some(tok)) => dump::encode(tok, prompt)?,
            (None, Some(_), None) => bail!("the model has no tokenizer; give case {:?} token_ids", spec.name),
            (None, None, _) => bail!("case {:?} needs a prompt or token_ids", spec.name),
        };
        ensure!(!ids.is_empty(), "case {:?} has an empty prompt", spec.name);
        ensure!(
            ids.len() + spec.max_new_tokens <= gpt2.cfg.n_positions,
            "case {:?} does not fit the context of {}",
            spec.name,
            gpt2.cfg.n_positions
        );
        let mut case = out.case(&spec.name)?;
        let (next_token, generated) = capture(&gpt2, &ids, spec.max_new_tokens, &mut case)?;
        let text = match &tokenizer {
            Some(tok) => Some(dump::decode(tok, &[ids.clone(), generated.clone()].concat())?),
            None => None,
        };
        eprintln!(
            "case {}: {} prompt tokens, {} tensors, greedy continuation {generated:?}",
            spec.name,
            ids.len(),
            case.entries.len()
        );
        let sampling =
            serde_json::json!({"temperature": spec.temperature, "top_k": spec.top_k, "top_p": spec.top_p});
        out.finish_case(
            case,
            spec.prompt.as_deref(),
            &ids,
            sampling,
            next_token,
            spec.max_new_tokens,
            &generated,
            text,
        );
    }
    out.write_manifest()
}

/// The prompt's pass, the decode step after its argmax, then greedy decoding from a fresh
/// cache. Returns (next token, generated ids).
fn capture(gpt2: &Gpt2, ids: &[u32], max_new_tokens: usize, case: &mut CaseDump) -> Result<(u32, Vec<u32>)> {
    let t = ids.len();
    let mut cache = gpt2.new_cache();
    let logits =
        gpt2.forward(ids, 0, &mut cache, &mut |cp, layer, name, x| case.add("prefill", cp, layer, name, x))?;
    let last = last_row(&logits)?;
    case.add("prefill", 9, None, "selected_logits", &last)?;
    let next_token = argmax(&last)?;
    let step = gpt2.forward(&[next_token], t, &mut cache, &mut |cp, layer, name, x| {
        case.add("decode", cp, layer, name, x)
    })?;
    case.add("decode", 9, None, "selected_logits", &last_row(&step)?)?;

    let mut cache = gpt2.new_cache();
    let mut logits = gpt2.forward(ids, 0, &mut cache, &mut |_, _, _, _| Ok(()))?;
    let mut generated = Vec::new();
    while generated.len() < max_new_tokens {
        let token = argmax(&last_row(&logits)?)?;
        generated.push(token);
        if Some(token) == gpt2.cfg.eos_token_id {
            break; // HF's generate keeps the end-of-text token, then stops
        }
        logits = gpt2.forward(&[token], t + generated.len() - 1, &mut cache, &mut |_, _, _, _| Ok(()))?;
    }
    Ok((next_token, generated))
}
