//! `llorch generate` through the real binary, checked against what HF generated for the same
//! model (read from the fixture's reference manifest, which HF wrote).

use crate::common::{reference, run};
use serde_json::Value;

fn hf_case(name: &str) -> Value {
    let text = std::fs::read_to_string(reference().join("manifest.json")).unwrap();
    let m: Value = serde_json::from_str(&text).unwrap();
    m["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone()
}

#[test]
fn greedy_text_equals_hf_generate() {
    let hf = hf_case("hello");
    let out = run(&["generate", "Hello.", "--temp", "0", "--max-tokens", "10"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, format!("{}\n", hf["generated_text"].as_str().unwrap()));
}

#[test]
fn greedy_ids_equal_hf_generate_in_json() {
    let hf = hf_case("unicode");
    let prompt = hf["prompt"].as_str().unwrap();
    let out = run(&["generate", prompt, "--temp", "0", "--max-tokens", "10", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["prompt_ids"], hf["token_ids"]);
    assert_eq!(doc["generated_ids"], hf["generated_ids"]);
    assert_eq!(doc["text"], hf["generated_text"]);
}

#[test]
fn token_ids_prompt_gives_the_same_continuation() {
    let hf = hf_case("hello");
    let out =
        run(&["generate", "--tokens", "15496,13", "--temp", "0", "--max-tokens", "10", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["generated_ids"], hf["generated_ids"]);
}

#[test]
fn seeded_sampling_repeats_and_seeds_differ() {
    let sample = |seed: &str| {
        let out = run(&[
            "generate",
            "Hello.",
            "--temp",
            "1.0",
            "--top-k",
            "50",
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--max-tokens",
            "20",
            "--format",
            "json",
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let doc: Value = serde_json::from_str(&out.stdout).unwrap();
        doc["generated_ids"].clone()
    };
    assert_eq!(sample("1"), sample("1"));
    assert_ne!(sample("1"), sample("2"), "20 sampled tokens from 50 candidates should differ between seeds");
}

#[test]
fn context_overflow_is_a_clear_error() {
    let out = run(&["generate", "Hello.", "--max-tokens", "5000"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("exceeds the model's context of 1024 tokens"), "{}", out.stderr);
}

#[test]
fn bad_sampling_settings_are_errors() {
    for (args, needle) in [
        (vec!["--temp", "-1"], "temperature must be 0 (greedy) or positive"),
        (vec!["--top-p", "1.5"], "top-p must be in (0, 1]"),
        (vec!["--top-k", "0"], "top-k must be at least 1"),
        (vec!["--max-tokens", "0"], "max-tokens must be at least 1"),
        (vec!["--tokens", "99999999"], "outside the vocabulary"),
    ] {
        let mut full = vec!["generate"];
        if !args.contains(&"--tokens") {
            full.push("Hello.");
        }
        full.extend(&args);
        let out = run(&full);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn empty_prompt_is_an_error() {
    let out = run(&["generate", ""]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("the prompt is empty"), "{}", out.stderr);
}

#[test]
fn bench_reports_its_timings_and_the_bandwidth_floor() {
    let out =
        run(&["bench", "--prompt-tokens", "4", "--decode-tokens", "2", "--repeats", "1", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for field in [
        "read_bandwidth_gbs",
        "floor_ms_per_token",
        "decode_ms_per_token",
        "prefill_ms_last_logits",
        "prefill_ms_all_logits",
    ] {
        assert!(doc[field].as_f64().is_some_and(|v| v > 0.0), "{field}: {doc}");
    }
    // The tiny model: 2 layers, 64 channels, 256 inner, 50257 tokens, in float32.
    let (c, inner, v) = (64u64, 256, 50257);
    let per_layer = 4 * c + (3 * c * c + 3 * c) + (c * c + c) + (c * inner + inner) + (inner * c + c);
    assert_eq!(doc["bytes_per_token"], 4 * (2 * per_layer + 2 * c + v * c));
    let out = run(&["bench", "--prompt-tokens", "1020", "--decode-tokens", "10"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("exceed the model's context"), "{}", out.stderr);
}
