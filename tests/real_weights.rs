//! Opt-in: the published GPT-2 weights. Set LLORCH_REAL_MODEL to an HF model directory of
//! gpt2-medium (see README, "With the real GPT-2 weights"). The full check also dumps a fresh HF
//! reference, so it needs the Python environment of scripts/requirements.txt: set
//! LLORCH_PYTHON to its interpreter (default python3).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::run;

fn real_model() -> Option<PathBuf> {
    match std::env::var_os("LLORCH_REAL_MODEL") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            eprintln!("skipped: set LLORCH_REAL_MODEL=DIR (gpt2-medium) to run the real-weights tests");
            None
        }
    }
}

/// HF's greedy continuation of "Hello." with the published gpt2-medium weights.
#[test]
fn gpt2_medium_greedy_hello() {
    let Some(dir) = real_model() else { return };
    let out = run(&[
        "generate",
        "Hello.",
        "--temp",
        "0",
        "--max-tokens",
        "10",
        "--format",
        "json",
        "--model",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let ids: Vec<u64> = doc["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .chain(doc["generated_ids"].as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(ids, [15496, 13, 314, 1101, 257, 1310, 2739, 284, 262, 2151, 11, 475]);
    assert_eq!(doc["text"], "Hello. I'm a little late to the party, but");
}

/// Every checkpoint on every layer against a reference HF dumps on the spot.
#[test]
fn every_checkpoint_of_the_real_model_matches_a_fresh_hf_dump() {
    let Some(dir) = real_model() else { return };
    let python = std::env::var("LLORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let refs = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dump_reference.py");
    let status = Command::new(&python)
        .args([
            script,
            "--model",
            dir.to_str().unwrap(),
            "--prompt",
            "Hello.",
            "--out",
            refs.path().to_str().unwrap(),
        ])
        .status()
        .expect("LLORCH_PYTHON runs");
    assert!(status.success(), "dump_reference.py failed");
    let out = run(&[
        "validate",
        "--model",
        dir.to_str().unwrap(),
        "--reference",
        refs.path().to_str().unwrap(),
        "--checkpoint",
        "all",
        "--layer",
        "all",
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    println!("{}", out.stdout.lines().last().unwrap());
}
