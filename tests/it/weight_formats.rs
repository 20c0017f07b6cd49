//! The engine in each weight format (--weights), through the real binary: validated against the
//! bundled model's dumps made on the same rounded weights (scripts/dump_reference.py
//! --weights-as), every checkpoint, both phases and modes, with the accuracy verdict; and the
//! format recorded wherever results are.

use serde_json::Value;

use crate::common::run;

const FORMATS: [&str; 3] = ["bf16", "f16", "q8_0"];

#[test]
fn every_format_passes_against_references_on_its_rounded_weights() {
    for format in FORMATS {
        let out = run(&[
            "validate",
            "--weights",
            format,
            "--checkpoint",
            "all",
            "--layer",
            "all",
            "--mode",
            "chained,isolated",
            "--format",
            "json",
        ]);
        assert_eq!(out.code, 0, "{format}: {}", out.stderr);
        let report: Value = serde_json::from_str(&out.stdout).unwrap();
        let sources = report["sources"].as_array().unwrap();
        let names: Vec<&str> = sources.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["ours", "pytorch-f32", "pytorch-f64"], "{format}");
        for source in sources {
            assert_eq!(source["weights"], format, "{format}: {source}");
        }
        let rows = report["rows"].as_array().unwrap();
        assert!(rows.len() > 1000, "{format}: {} rows", rows.len());
        // The accuracy verdict ran: ours against the truth, measured by PyTorch float32's error.
        let verdicts = rows.iter().filter(|r| !r["accuracy"].is_null()).count();
        assert!(verdicts > 100, "{format}: {verdicts} rows with an accuracy verdict");
    }
}

/// `llorch generate --format json` in `format`, greedy from "Hello.".
fn greedy(format: &str, max_tokens: &str) -> Value {
    let args =
        ["generate", "--weights", format, "--temp", "0", "--max-tokens", max_tokens, "--format", "json"];
    let out = run(&[&args[..], &["Hello."]].concat());
    assert_eq!(out.code, 0, "{format}: {}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn the_table_says_which_format_ours_ran_in() {
    let out = run(&["validate", "--weights", "q8_0", "--case", "hello", "--checkpoint", "9"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("ours: weights in q8_0\n"), "{}", out.stdout);
    assert_eq!(greedy("bf16", "3")["weights"], "bf16");
}

/// The rounding changes every logit (`every_format_is_the_f32_engine_on_its_rounded_weights`
/// asserts it), yet every format continues the bundled model's prompt as float32 does.
#[test]
fn each_format_generates_the_float32_continuation_on_the_bundled_model() {
    let f32s = greedy("f32", "10")["generated_ids"].clone();
    for format in FORMATS {
        assert_eq!(greedy(format, "10")["generated_ids"], f32s, "{format}");
    }
}
