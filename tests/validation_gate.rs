//! The validator as the only test of the engine: `llorch validate` on the bundled models (the
//! tiny one in every weight format it has references for, and the coverage one: every remainder
//! path), every checkpoint on every layer, chained and isolated, against their float32 and
//! float64 dumps. cargo-mutants runs this test alone against each mutant of the engine
//! (`.cargo/mutants.toml`, `scripts/mutants.sh`): a mutant the validation does not fail
//! survives. On a failure it prints the first failing row, which `scripts/mutants_summary.py`
//! reads to say whether the mutated function's stage is the one that failed.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

#[test]
fn the_bundled_validation_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let runs = [
        ("fixtures/tiny-gpt2", "f32"),
        ("fixtures/tiny-gpt2", "bf16"),
        ("fixtures/tiny-gpt2", "f16"),
        ("fixtures/tiny-gpt2", "q8_0"),
        ("fixtures/coverage-gpt2", "f32"),
    ];
    for (model, weights) in runs {
        let out = Command::cargo_bin("llorch")
            .expect("binary built")
            .args(["validate", "--weights", weights, "--model"])
            .arg(root.join(model))
            .args(["--checkpoint", "all", "--layer", "all", "--mode", "chained,isolated", "--format", "json"])
            .output()
            .expect("llorch runs");
        let code = out.status.code();
        if code == Some(0) {
            continue;
        }
        let doc: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        let first =
            doc.as_ref().and_then(|d| d["rows"].as_array()?.iter().find(|r| r["passed"] == false).cloned());
        match first {
            Some(r) => println!(
                "FIRST FAILURE: model {model} weights {weights} case {} phase {} mode {} checkpoint {} layer {} tensor {}",
                r["case"], r["phase"], r["mode"], r["checkpoint"], r["layer"], r["tensor"]
            ),
            None => println!(
                "FIRST FAILURE: model {model} weights {weights} exit {code:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        panic!("the bundled validation of {model} ({weights} weights) fails (exit {code:?})");
    }
}
