//! Opt-in: the published GPT-2 weights, which this repository cannot ship. The tests are ignored
//! by default (cargo test lists them as ignored, with the reason); run them with
//!
//!     LLORCH_REAL_MODEL=models/gpt2-medium LLORCH_PYTHON=.venv/bin/python \
//!         cargo test --release --test real_weights -- --ignored
//!
//! LLORCH_REAL_MODEL is an HF model directory of gpt2-medium (README, "With the real GPT-2
//! weights"); LLORCH_PYTHON an interpreter with scripts/requirements.txt (default python3),
//! used to dump a fresh HF reference.

use std::path::PathBuf;
use std::process::Command;

use crate::common::run;

const WHY: &str = "needs the published gpt2-medium weights: set LLORCH_REAL_MODEL=DIR and pass --ignored";

fn real_model() -> PathBuf {
    let dir = std::env::var_os("LLORCH_REAL_MODEL").expect(WHY);
    PathBuf::from(dir)
}

/// HF's greedy continuation of "Hello." with the published gpt2-medium weights.
#[test]
#[ignore = "needs the published gpt2-medium weights: set LLORCH_REAL_MODEL=DIR and pass --ignored"]
fn gpt2_medium_greedy_hello() {
    let dir = real_model();
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

/// Every checkpoint on every layer against references HF dumps on the spot: float32, and the
/// float64 truth of the accuracy verdict.
#[test]
#[ignore = "needs the published gpt2-medium weights: set LLORCH_REAL_MODEL=DIR and pass --ignored"]
fn every_checkpoint_of_the_real_model_matches_a_fresh_hf_dump() {
    let dir = real_model();
    let python = std::env::var("LLORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let refs = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dump_reference.py");
    let mut reference_args = Vec::new();
    for dtype in ["float32", "float64"] {
        let out = refs.path().join(dtype);
        let status = Command::new(&python)
            .args([script, "--model", dir.to_str().unwrap(), "--prompt", "Hello.", "--dtype", dtype])
            .arg("--out")
            .arg(&out)
            .status()
            .expect("LLORCH_PYTHON runs");
        assert!(status.success(), "dump_reference.py --dtype {dtype} failed");
        reference_args.extend(["--reference".to_string(), out.to_str().unwrap().to_string()]);
    }
    let mut args: Vec<&str> = vec!["validate", "--model", dir.to_str().unwrap()];
    args.extend(reference_args.iter().map(String::as_str));
    args.extend(["--checkpoint", "all", "--layer", "all"]);
    let out = run(&args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    println!("{}", out.stdout.lines().last().unwrap());
}
