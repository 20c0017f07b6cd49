//! llama.cpp as a peer reference (fixtures/peers/tiny-gpt2-llamacpp, made by
//! scripts/dump_llamacpp.py from the bundled model): what llorch finds about it is pinned here,
//! so a change that stops finding it fails. The finding, explained in CHECKPOINTS.md: llama.cpp
//! agrees with PyTorch and ours within float32 noise up to checkpoint 6, where its GELU (ggml's
//! CPU kernel rounds the input to float16 and looks the result up in a float16 table) is off by
//! ~2e-3; everything after it drifts.

use crate::common::{reference, reference_f64, reference_llamacpp, run};
use serde_json::Value;

const LLAMA: &str = "llama.cpp-f32";

fn three_way(extra: &[&str]) -> (i32, Value, String) {
    let (f32_dir, f64_dir, peer) = (reference(), reference_f64(), reference_llamacpp());
    let mut args = vec![
        "validate",
        "--reference",
        f32_dir.to_str().unwrap(),
        "--reference",
        f64_dir.to_str().unwrap(),
        "--reference",
        peer.to_str().unwrap(),
        "--checkpoint",
        "all",
        "--layer",
        "all",
    ];
    args.extend(extra);
    let table = run(&args);
    let json = run(&[args.as_slice(), &["--format", "json"]].concat());
    assert!(json.code == 0 || json.code == 1, "exit {}: {}", json.code, json.stderr);
    (json.code, serde_json::from_str(&json.stdout).expect("valid JSON"), table.stdout)
}

fn rows(doc: &Value) -> impl Iterator<Item = &Value> {
    doc["rows"].as_array().unwrap().iter()
}

fn involves(row: &Value, source: &str) -> bool {
    row["pair"][0] == source || row["pair"][1] == source
}

fn place(row: &Value) -> (String, String, u64, Option<u64>, String) {
    (
        row["case"].as_str().unwrap().to_string(),
        row["phase"].as_str().unwrap().to_string(),
        row["checkpoint"].as_u64().unwrap(),
        row["layer"].as_u64(),
        row["tensor"].as_str().unwrap().to_string(),
    )
}

#[test]
fn llama_cpp_first_deviates_at_the_gelu_of_layer_0_and_is_named_the_odd_one_out() {
    let (code, doc, table) = three_way(&[]);
    assert_eq!(code, 1, "llama.cpp fails the default tolerances");

    // Ours and PyTorch pass every check among themselves: the failures are llama.cpp's alone.
    let failing: Vec<&Value> = rows(&doc).filter(|r| r["passed"] == false).collect();
    assert!(!failing.is_empty());
    assert!(failing.iter().all(|r| involves(r, LLAMA)), "only pairs with llama.cpp fail");
    // Ours agrees with PyTorch: nothing in ours is diagnosed for llama.cpp's deviation.
    assert!(rows(&doc).all(|r| r["diagnosis"].is_null()), "no diagnosis of ours");

    // In every case the first failing tensor, in forward order, is layer 0's GELU.
    for case in ["hello", "long", "unicode", "sampled"] {
        let first = failing.iter().find(|r| r["case"] == case).expect("llama.cpp fails in every case");
        assert_eq!(
            place(first),
            (case.to_string(), "prefill".to_string(), 6, Some(0), "gelu".to_string()),
            "{first}"
        );
    }
    let odd = &doc["odd_ones_out"];
    assert_eq!(odd.as_array().unwrap().len(), 1, "{odd}");
    assert_eq!(odd[0]["source"], LLAMA);
    assert_eq!(
        (&odd[0]["first"]["checkpoint"], &odd[0]["first"]["layer"], &odd[0]["first"]["tensor"]),
        (&Value::from(6), &Value::from(0), &Value::from("gelu"))
    );
    assert!(
        table.contains("odd one out: llama.cpp-f32 disagrees with every other source while they agree, on ")
    );
    // Each source's error against the truth, side by side: llama.cpp's is hundreds of times
    // PyTorch's from checkpoint 6 on.
    assert!(table.contains("error against pytorch-f64 per checkpoint"), "{table}");
    let header = table.lines().find(|l| l.contains("ours max / rms")).expect("the table's header");
    assert!(
        header.contains("pytorch-f32 max / rms") && header.contains("llama.cpp-f32 max / rms"),
        "{header}"
    );
}

#[test]
fn before_the_gelu_llama_cpp_is_as_close_to_the_float64_truth_as_pytorch() {
    let (_, doc, _) = three_way(&["--case", "long", "--phase", "prefill"]);
    let err = |source: &str, cp: u64, layer: u64, tensor: &str| -> f64 {
        let row = rows(&doc)
            .find(|r| {
                involves(r, source)
                    && involves(r, "pytorch-f64")
                    && r["checkpoint"] == cp
                    && r["layer"] == layer
                    && r["tensor"] == tensor
            })
            .expect("compared");
        row["stats"]["max_abs"].as_f64().unwrap()
    };
    // Layer 0 up to the FFN: within a few times PyTorch float32's own error.
    for (cp, tensor) in [(1, "ln_1"), (2, "q"), (4, "attn_probs"), (5, "attn_out"), (6, "ln_2")] {
        let (llama, pytorch) = (err(LLAMA, cp, 0, tensor), err("pytorch-f32", cp, 0, tensor));
        assert!(
            llama < 4.0 * pytorch.max(1e-7),
            "checkpoint {cp} {tensor}: llama.cpp {llama:e}, pytorch {pytorch:e}"
        );
    }
    // The GELU: hundreds of times PyTorch's error, about one float16 rounding of values near 4.
    let (llama, pytorch) = (err(LLAMA, 6, 0, "gelu"), err("pytorch-f32", 6, 0, "gelu"));
    assert!(llama > 100.0 * pytorch, "gelu: llama.cpp {llama:e}, pytorch {pytorch:e}");
    assert!((5e-4..5e-3).contains(&llama), "gelu: llama.cpp {llama:e}");
}

#[test]
fn llama_cpp_tokens_agree_and_its_missing_checkpoint_is_reported_not_skipped() {
    let (_, doc, table) = three_way(&[]);
    // Its tokenizer gave every case the same ids (else the run refuses to start), and its greedy
    // sampler the same next token and generation.
    for cp in [10, 12] {
        let llama_rows: Vec<&Value> =
            rows(&doc).filter(|r| r["checkpoint"] == cp && involves(r, LLAMA)).collect();
        assert!(!llama_rows.is_empty());
        assert!(llama_rows.iter().all(|r| r["passed"] == true), "checkpoint {cp}: {llama_rows:?}");
    }
    // Checkpoint 11 is compared among the others only, and the report says why.
    let probs: Vec<&Value> = rows(&doc).filter(|r| r["checkpoint"] == 11).collect();
    assert!(!probs.is_empty() && probs.iter().all(|r| !involves(r, LLAMA)));
    assert!(
        table.contains("not checked: llama.cpp-f32 has no probs of checkpoint 11 (prefill): "),
        "{table}"
    );
    let source = doc["sources"].as_array().unwrap().iter().find(|s| s["name"] == LLAMA).unwrap();
    assert_eq!(source["omitted"][0]["checkpoint"], 11);
}

#[test]
fn a_peer_may_be_given_looser_tolerances_on_request_and_only_its_pairs_get_them() {
    let (code, doc, table) = three_way(&["--tolerance-scale", "llama.cpp-f32=50", "--case", "long"]);
    assert_eq!(code, 0, "{table}");
    // Each tensor's default tolerance is that of ours vs pytorch-f32; llama.cpp's pairs get 50×.
    let float_rows: Vec<&Value> = rows(&doc).filter(|r| r["tolerance"]["atol"].is_number()).collect();
    let mut scaled = 0;
    for row in &float_rows {
        let default = float_rows
            .iter()
            .find(|d| place(d) == place(row) && d["pair"] == serde_json::json!(["ours", "pytorch-f32"]))
            .expect("ours vs pytorch-f32 of the same tensor");
        let factor = if involves(row, LLAMA) { 50.0 } else { 1.0 };
        for t in ["atol", "rtol"] {
            let (got, want) =
                (row["tolerance"][t].as_f64().unwrap(), default["tolerance"][t].as_f64().unwrap());
            assert!((got - want * factor).abs() <= want * factor * 1e-12, "{t}: {row}");
        }
        scaled += usize::from(factor != 1.0);
    }
    assert!(scaled > 0);
    // Ours is still held to the defaults against PyTorch: the accuracy verdict is untouched.
    assert!(rows(&doc).any(|r| r["accuracy"]["passed"] == true));
}

#[test]
fn a_tolerance_scale_for_no_source_of_the_run_is_an_error() {
    let (f32_dir, peer) = (reference(), reference_llamacpp());
    let (f32_dir, peer) = (f32_dir.to_str().unwrap(), peer.to_str().unwrap());
    let out = run(&["validate", "--reference", f32_dir, "--reference", peer, "--tolerance-scale", "llama=3"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--tolerance-scale names \"llama\", which is not a reference of this run"));
    let out = run(&["validate", "--reference", f32_dir, "--tolerance-scale", "pytorch-f32=0"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("the factor must be a positive number"), "{}", out.stderr);
}
