//! The writing half of llorch's reference format, for this crate: one `.npy` per tensor under
//! `OUT/CASE/`, named as scripts/dump_format.py names them, and `manifest.json`. Plus the model
//! directory's tokenizer, built as HF's GPT2TokenizerFast is (byte-level BPE).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use candle_core::{DType, Tensor};
use serde_json::{Value, json};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::model::Config;

const FORMAT: &str = "llorch-reference/2";

pub struct Dump {
    out: PathBuf,
    dtype: String,
    manifest: Value,
}

/// One case's tensors as they are written.
pub struct CaseDump {
    out: PathBuf,
    name: String,
    dtype: String,
    pub entries: Vec<Value>,
}

impl Dump {
    pub fn new(out: &Path, dtype: &str, cfg: &Config) -> Result<Dump> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let short = if dtype == "float64" { "f64" } else { "f32" };
        let manifest = json!({
            "format": FORMAT,
            "generator": {
                "name": format!("candle-{short}"),
                "script": "refs/candle (cargo run --release --manifest-path refs/candle/Cargo.toml)",
                "candle_core": "0.11.1",
                "dtype": dtype,
                "model_code": "ours: the GPT-2 forward in refs/candle/src/model.rs (candle-transformers has no GPT-2)",
                "kernels": "candle-core's CPU tensor operations",
            },
            "model": {
                "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd,
                "n_positions": cfg.n_positions, "vocab_size": cfg.vocab_size,
                "layer_norm_epsilon": cfg.layer_norm_epsilon, "n_inner": cfg.n_inner.unwrap_or(4 * cfg.n_embd),
            },
            "omitted": [{
                "phase": "prefill", "checkpoint": 11, "name": "probs",
                "reason": "candle-core's cumsum (top-p's cumulative mass) multiplies by a V x V triangular \
                           matrix, 10 GB at GPT-2's vocabulary, so this reference has no tensor for checkpoint 11",
            }],
            "cases": [],
        });
        Ok(Dump { out: out.to_owned(), dtype: dtype.to_string(), manifest })
    }

    pub fn case(&self, name: &str) -> Result<CaseDump> {
        let dir = self.out.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(CaseDump {
            out: self.out.clone(),
            name: name.to_string(),
            dtype: self.dtype.clone(),
            entries: Vec::new(),
        })
    }

    /// Enters a written case into the manifest, as scripts/dump_format.py's case_entry does.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_case(
        &mut self,
        case: CaseDump,
        prompt: Option<&str>,
        ids: &[u32],
        sampling: Value,
        next_token: u32,
        max_new_tokens: usize,
        generated: &[u32],
        text: Option<String>,
    ) {
        let entry = json!({
            "name": case.name, "prompt": prompt, "token_ids": ids, "sampling": sampling,
            "next_token": next_token, "max_new_tokens": max_new_tokens, "generated_ids": generated,
            "generated_text": text, "tensors": case.entries,
        });
        self.manifest["cases"].as_array_mut().expect("cases is a list").push(entry);
    }

    pub fn write_manifest(&self) -> Result<()> {
        let path = self.out.join("manifest.json");
        std::fs::write(&path, serde_json::to_string_pretty(&self.manifest)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
        Ok(())
    }
}

impl CaseDump {
    /// Writes one tensor as `CASE/[decode_]cpNN[_lLL]_NAME.npy` in the dump's dtype.
    pub fn add(&mut self, phase: &str, cp: u8, layer: Option<usize>, name: &str, x: &Tensor) -> Result<()> {
        let at = layer.map(|l| format!("_l{l:02}")).unwrap_or_default();
        let prefix = if phase == "prefill" { String::new() } else { format!("{phase}_") };
        let rel = format!("{}/{prefix}cp{cp:02}{at}_{name}.npy", self.name);
        let dtype = if self.dtype == "float64" { DType::F64 } else { DType::F32 };
        x.to_dtype(dtype)?
            .contiguous()?
            .write_npy(self.out.join(&rel))
            .with_context(|| format!("writing {rel}"))?;
        self.entries.push(json!({
            "phase": phase, "checkpoint": cp, "layer": layer, "name": name, "file": rel,
            "shape": x.dims(), "dtype": self.dtype,
        }));
        Ok(())
    }
}

/// The model directory's tokenizer: tokenizer.json, or vocab.json + merges.txt as byte-level
/// BPE; None when it has neither.
pub fn tokenizer(dir: &Path) -> Result<Option<Tokenizer>> {
    let json = dir.join("tokenizer.json");
    if json.is_file() {
        return Tokenizer::from_file(&json).map(Some).map_err(|e| anyhow!("reading {}: {e}", json.display()));
    }
    let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
    if !(vocab.is_file() && merges.is_file()) {
        return Ok(None);
    }
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .build()
        .map_err(|e| anyhow!("reading {}: {e}", vocab.display()))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    tok.add_special_tokens(&[AddedToken::from("<|endoftext|>", true)]);
    Ok(Some(tok))
}

pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(tok.encode(text, false).map_err(|e| anyhow!("tokenizing {text:?}: {e}"))?.get_ids().to_vec())
}

pub fn decode(tok: &Tokenizer, ids: &[u32]) -> Result<String> {
    tok.decode(ids, false).map_err(|e| anyhow!("decoding {ids:?}: {e}"))
}
