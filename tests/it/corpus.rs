//! `llorch validate --corpus FILE` through the real binary, on the bundled model's corpus dumps
//! (fixtures/corpus.txt in windows of 16: PyTorch float64, float32 and bfloat16).

use std::path::PathBuf;

use serde_json::Value;

use crate::common::{RefCopy, run};

fn corpus() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/corpus.txt").to_string()
}

fn dump(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tiny-gpt2")).join(name)
}

fn corpus_json(args: &[&str]) -> (i32, Value, String) {
    let file = corpus();
    let out = run(&[&["validate", "--corpus", file.as_str(), "--format", "json"], args].concat());
    (out.code, serde_json::from_str(&out.stdout).unwrap_or(Value::Null), out.stderr)
}

fn source<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["sources"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()
}

#[test]
fn every_source_is_measured_against_the_truth() {
    let (code, report, stderr) = corpus_json(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["truth"], "pytorch-f64");
    assert_eq!(report["peer"], "pytorch-f32");
    assert_eq!(report["corpus"]["window"], 16);
    let names: Vec<&str> =
        report["sources"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ours", "pytorch-f32", "pytorch-bf16"]);
    let (ours, f32, bf16) =
        (source(&report, "ours"), source(&report, "pytorch-f32"), source(&report, "pytorch-bf16"));
    let kld = |s: &Value, k: &str| s["kld"][k].as_f64().unwrap();
    for s in [ours, f32, bf16] {
        assert_eq!(s["positions"], 32);
        assert!(kld(s, "median") <= kld(s, "p99") && kld(s, "p99") <= kld(s, "max"), "{s}");
        assert!(kld(s, "mean") <= kld(s, "max"), "{s}");
    }
    // float32 engines sit at float32's noise; PyTorch in bfloat16 loses orders of magnitude more.
    assert!(kld(ours, "max") < 1e-10 && kld(f32, "max") < 1e-10, "{ours} {f32}");
    assert!(kld(bf16, "mean") > 1e4 * kld(ours, "mean"), "{bf16}");
    assert_eq!(ours["top1_agree"], 32);
    // Perplexity is each source's own; a float32 engine's equals the truth's to many digits.
    let truth_ppl = report["truth_perplexity"].as_f64().unwrap();
    assert!((ours["perplexity"].as_f64().unwrap() / truth_ppl - 1.0).abs() < 1e-6);
}

#[test]
fn the_gate_fails_a_format_whose_kld_exceeds_it() {
    let (code, report, stderr) = corpus_json(&["--weights", "bf16", "--max-kld", "1e-4"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["gate"]["passed"], true);
    let (code, report, _) = corpus_json(&["--weights", "bf16", "--max-kld", "1e-7"]);
    assert_eq!(code, 1);
    assert_eq!(report["gate"]["passed"], false);
    let file = corpus();
    let out = run(&["validate", "--corpus", &file, "--weights", "bf16", "--max-kld", "1e-7"]);
    assert!(out.stdout.contains("FAIL: ours's mean KLD"), "{}", out.stdout);
}

/// Runs the corpus check against a copy of the float64 corpus dump edited by `edit`.
fn with_edited_truth(edit: impl Fn(&mut Value)) -> crate::common::Output {
    let copy = RefCopy::of(&dump("corpus-f64"));
    let mut m = copy.manifest();
    edit(&mut m);
    copy.set_manifest(&m);
    let file = corpus();
    run(&["validate", "--corpus", &file, "--reference", copy.path()])
}

#[test]
fn bad_corpora_and_dumps_are_one_message_and_exit_2() {
    // Another text than the dump's.
    let other = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        other.path(),
        "Quite another text, long enough to hold two windows of sixteen tokens each, \
        and then some more words to be sure of it.",
    )
    .unwrap();
    let out = run(&["validate", "--corpus", other.path().to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("made from another text"), "{}", out.stderr);
    // Windows that overlap: the second window starts where the first does.
    let out = with_edited_truth(|m| m["cases"][1]["token_ids"] = m["cases"][0]["token_ids"].clone());
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("overlap or leave gaps"), "{}", out.stderr);
    // Windows longer than the context.
    let out = with_edited_truth(|m| m["corpus"]["window"] = 2048.into());
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("do not fit the model's context of 1024"), "{}", out.stderr);
    // A dump made for another model.
    let out = with_edited_truth(|m| m["model"]["n_layer"] = 3.into());
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("made for another model"), "{}", out.stderr);
    // A case dump given as a corpus dump, and a corpus dump given to a checkpoint run.
    let file = corpus();
    let case_dump = dump("reference-f64");
    let out = run(&["validate", "--corpus", &file, "--reference", case_dump.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("is not a corpus dump"), "{}", out.stderr);
    let corpus_dump = dump("corpus-f64");
    let out = run(&["validate", "--reference", corpus_dump.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("is a corpus dump"), "{}", out.stderr);
    // A checkpoint option, which a corpus run would not use.
    let out = run(&["validate", "--corpus", &file, "--checkpoint", "4"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("cannot be used with '--checkpoint"), "{}", out.stderr);
    // No float64 truth.
    let f32 = dump("corpus");
    let out = run(&["validate", "--corpus", &file, "--reference", f32.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("float64 truth"), "{}", out.stderr);
}
