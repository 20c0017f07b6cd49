//! The model directory layouts a user can hand llorch: both tensor namings, and both tokenizer
//! file sets (tokenizer.json, or vocab.json + merges.txt).

use std::collections::HashMap;
use std::fs;

use crate::common::{copy_model, fixture, reference, run};
use llorch::engine::tokenizer::Gpt2Tokenizer;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// Rewrites the fixture's model.safetensors the way the published gpt2 checkpoints name their
/// tensors: no "transformer." prefix, no lm_head, plus the h.N.attn.bias mask buffers.
#[test]
fn openai_naming_with_mask_buffers_validates_against_the_same_reference() {
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
    let bytes = fs::read(fixture().join("model.safetensors")).unwrap();
    let hf = SafeTensors::deserialize(&bytes).unwrap();
    let mut renamed: HashMap<String, TensorView<'_>> = HashMap::new();
    for (name, view) in hf.tensors() {
        assert!(name.starts_with("transformer.") || name == "lm_head.weight", "{name}");
        if let Some(short) = name.strip_prefix("transformer.") {
            renamed.insert(short.to_string(), view);
        }
    }
    let n_pos = 1024;
    let mask: Vec<u8> = (0..n_pos * n_pos)
        .flat_map(|i| if i % n_pos <= i / n_pos { 1.0f32 } else { 0.0f32 }.to_le_bytes())
        .collect();
    for layer in 0..2 {
        let view = TensorView::new(Dtype::F32, vec![1, 1, n_pos, n_pos], &mask).unwrap();
        renamed.insert(format!("h.{layer}.attn.bias"), view);
    }
    assert!(renamed.contains_key("h.0.attn.c_attn.weight") && !renamed.contains_key("lm_head.weight"));
    safetensors::serialize_to_file(renamed, None, &dir.path().join("model.safetensors")).unwrap();

    let out = run(&[
        "validate",
        "--model",
        dir.path().to_str().unwrap(),
        "--reference",
        reference().to_str().unwrap(),
        "--layer",
        "all",
        "--case",
        "hello",
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(" 0 failed"), "{}", out.stdout);
}

const LATE: &str = " I'm a little late to the party, but";
const LATE_IDS: [u32; 10] = [314, 1101, 257, 1310, 2739, 284, 262, 2151, 11, 475];

#[test]
fn vocab_and_merges_tokenize_hello_as_gpt2_does() {
    let t = Gpt2Tokenizer::from_model_dir(&fixture()).unwrap().expect("fixture has a tokenizer");
    assert_eq!(t.encode("Hello.").unwrap(), vec![15496, 13]);
    assert_eq!(t.encode(LATE).unwrap(), LATE_IDS);
    assert_eq!(t.decode(&[15496, 13, 50256]).unwrap(), "Hello.<|endoftext|>");
}

/// fixtures/gpt2-tokenizer/tokenizer.json was written by Python `tokenizers` (transformers'
/// GPT2Tokenizer.backend_tokenizer.save); the Rust crate must read it and agree.
#[test]
fn python_made_tokenizer_json_tokenizes_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let json = fixture().join("../gpt2-tokenizer/tokenizer.json");
    fs::copy(json, dir.path().join("tokenizer.json")).unwrap();
    let t = Gpt2Tokenizer::from_model_dir(dir.path()).unwrap().expect("tokenizer.json found");
    assert_eq!(t.encode("Hello.").unwrap(), vec![15496, 13]);
    assert_eq!(t.encode(LATE).unwrap(), LATE_IDS);
    let text = "Grüße aus Köln — 東京の桜 🌸";
    let from_vocab = Gpt2Tokenizer::from_model_dir(&fixture()).unwrap().unwrap();
    assert_eq!(t.encode(text).unwrap(), from_vocab.encode(text).unwrap());
    assert_eq!(t.decode(&t.encode(text).unwrap()).unwrap(), text);
}

#[test]
fn a_model_dir_without_tokenizer_needs_token_ids() {
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
    fs::remove_file(dir.path().join("vocab.json")).unwrap();
    let model = dir.path().to_str().unwrap();
    let out = run(&["generate", "Hello.", "--model", model]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("has no tokenizer"), "{}", out.stderr);
    let out = run(&[
        "generate",
        "--tokens",
        "15496,13",
        "--model",
        model,
        "--temp",
        "0",
        "--max-tokens",
        "3",
        "--format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Its dumps were made from prompts: our encoding and decoding of them cannot be checked.
    let out = run(&["validate", "--model", model]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains("case \"hello\" holds text (a prompt or a generated text), but"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("has no tokenizer"), "{}", out.stderr);
}
