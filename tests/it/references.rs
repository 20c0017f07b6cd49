//! Several references in one run: ours against each, the references against each other, the
//! float64 truth and the accuracy verdict, and the dumps that must not be mixed.

use crate::common::{RefCopy, reference, reference_f64, run};
use serde_json::Value;

fn json(args: &[&str]) -> (i32, Value) {
    let out = run(&[args, &["--format", "json"]].concat());
    assert!(out.code == 0 || out.code == 1, "exit {}: {}", out.code, out.stderr);
    (out.code, serde_json::from_str(&out.stdout).expect("valid JSON"))
}

fn rows(doc: &Value) -> &Vec<Value> {
    doc["rows"].as_array().unwrap()
}

#[test]
fn every_pair_is_compared_and_ours_against_the_truth_carries_the_accuracy_verdict() {
    let (f32_dir, f64_dir) = (reference(), reference_f64());
    let (code, doc) = json(&[
        "validate",
        "--reference",
        f32_dir.to_str().unwrap(),
        "--reference",
        f64_dir.to_str().unwrap(),
        "--case",
        "long",
        "--checkpoint",
        "5",
        "--phase",
        "prefill",
    ]);
    assert_eq!(code, 0);
    let pairs: Vec<&Value> = rows(&doc).iter().map(|r| &r["pair"]).collect();
    assert_eq!(
        pairs,
        [
            &serde_json::json!(["ours", "pytorch-f32"]),
            &serde_json::json!(["ours", "pytorch-f64"]),
            &serde_json::json!(["pytorch-f32", "pytorch-f64"])
        ]
    );
    for row in rows(&doc) {
        let is_truth_row = row["pair"] == serde_json::json!(["ours", "pytorch-f64"]);
        assert_eq!(row["accuracy"].is_object(), is_truth_row, "{row}");
    }
    let row = &rows(&doc)[1];
    let a = &row["accuracy"];
    // err_ours is the max |diff| of ours against the truth; err_peer that of the float32 dump.
    assert_eq!(a["err_ours"], row["stats"]["max_abs"]);
    assert_eq!(a["err_peer"], rows(&doc)[2]["stats"]["max_abs"]);
    assert_eq!((a["truth"].as_str(), a["peer"].as_str()), (Some("pytorch-f64"), Some("pytorch-f32")));
    let (err_ours, err_peer) = (a["err_ours"].as_f64().unwrap(), a["err_peer"].as_f64().unwrap());
    assert!((a["ratio"].as_f64().unwrap() - err_ours / err_peer).abs() < 1e-12);
    assert_eq!(a["passed"], true);
}

#[test]
fn one_reference_alone_gives_no_accuracy_verdict() {
    let (code, doc) = json(&["validate", "--reference", reference().to_str().unwrap(), "--case", "hello"]);
    assert_eq!(code, 0);
    assert!(rows(&doc).iter().all(|r| r["accuracy"].is_null() && r["pair"][1] != "pytorch-f64"));
}

#[test]
fn the_float64_truth_alone_is_a_reference_like_any_other() {
    let (code, doc) =
        json(&["validate", "--reference", reference_f64().to_str().unwrap(), "--case", "hello"]);
    assert_eq!(code, 0, "ours is within every fixed tolerance of the float64 truth");
    assert!(rows(&doc).iter().all(|r| r["accuracy"].is_null()), "no float32 peer: no accuracy verdict");
    let table = run(&["validate", "--reference", reference_f64().to_str().unwrap(), "--case", "hello"]);
    assert!(
        table.stdout.contains("no accuracy verdict: a float64 truth needs a float32 reference"),
        "{}",
        table.stdout
    );
}

/// A float32 reference whose layer-0 block output is nudged in one element (as a dump made
/// from a model with one nudged weight would be, at the first tensor it touches).
fn nudged_peer() -> RefCopy {
    let nudged = RefCopy::new();
    nudged.edit_tensor("hello", 7, Some(0), "block_out", |a| a[[1, 7]] += 0.01);
    nudged
}

#[test]
fn a_reference_that_disagrees_with_the_others_is_named_the_odd_one_out() {
    let nudged = nudged_peer();
    let f64_dir = reference_f64();
    let args = [
        "validate",
        "--reference",
        nudged.path(),
        "--reference",
        f64_dir.to_str().unwrap(),
        "--case",
        "hello",
        "--checkpoint",
        "7",
    ];
    let out = run(&args);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    // Both pairs with the nudged dump fail; ours and the truth agree.
    assert!(out.stdout.contains("block_out, ours vs pytorch-f32: 1 of 128 elements"), "{}", out.stdout);
    assert!(
        out.stdout.contains("block_out, pytorch-f32 vs pytorch-f64: 1 of 128 elements"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "odd one out: pytorch-f32 disagrees with every other source while they agree, on 1 tensor, \
             first at case hello, checkpoint 7 (block output), layer 0, block_out"
        ),
        "{}",
        out.stdout
    );
    let (_, doc) = json(&args);
    assert_eq!(doc["odd_ones_out"][0]["source"], "pytorch-f32");
    let failing: Vec<&Value> =
        rows(&doc).iter().filter(|r| r["passed"] == false).map(|r| &r["pair"]).collect();
    assert_eq!(
        failing,
        [&serde_json::json!(["ours", "pytorch-f32"]), &serde_json::json!(["pytorch-f32", "pytorch-f64"])]
    );
}

#[test]
fn ours_is_the_odd_one_out_when_the_references_agree_against_it() {
    // Both dumps nudged the same way: ours alone disagrees.
    let (peer, truth) = (RefCopy::new(), RefCopy::f64());
    peer.edit_tensor("hello", 5, Some(1), "attn_out", |a| a[[0, 3]] += 0.5);
    truth.edit_tensor_f64("hello", 5, Some(1), "attn_out", |a| a[[0, 3]] += 0.5);
    let out = run(&[
        "validate",
        "--reference",
        peer.path(),
        "--reference",
        truth.path(),
        "--case",
        "hello",
        "--checkpoint",
        "5",
        "--layer",
        "1",
    ]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("odd one out: ours disagrees"), "{}", out.stdout);
}

#[test]
fn references_made_for_other_cases_are_an_error() {
    let other = RefCopy::f64();
    let mut m = other.manifest();
    m["cases"][0]["token_ids"] = serde_json::json!([15496, 11]);
    m["cases"][0]["prompt"] = Value::Null;
    other.set_manifest(&m);
    let out = run(&["validate", "--reference", reference().to_str().unwrap(), "--reference", other.path()]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("were made for other cases: case \"hello\" has token ids [15496, 13] and [15496, 11]"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_same_reference_twice_is_named_apart() {
    let dir = reference();
    let copy = RefCopy::new();
    let (code, doc) = json(&[
        "validate",
        "--reference",
        dir.to_str().unwrap(),
        "--reference",
        copy.path(),
        "--case",
        "hello",
        "--checkpoint",
        "0",
    ]);
    assert_eq!(code, 0);
    let names: Vec<&str> =
        doc["sources"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names[..2], ["ours", "pytorch-f32"]);
    assert!(names[2].starts_with("pytorch-f32@"), "{names:?}");
}

#[test]
fn the_same_directory_twice_is_an_error() {
    let dir = reference();
    let out = run(&["validate", "--reference", dir.to_str().unwrap(), "--reference", dir.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("is given twice as a reference"), "{}", out.stderr);
}

#[test]
fn a_manifest_file_outside_the_reference_directory_is_refused() {
    for outside in ["../../etc/hostname", "/etc/hostname"] {
        let refs = RefCopy::new();
        let mut m = refs.manifest();
        m["cases"][0]["tensors"][0]["file"] = outside.into();
        refs.set_manifest(&m);
        let out = run(&["validate", "--reference", refs.path()]);
        assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
        assert!(
            out.stderr
                .contains(&format!("lists the file {outside:?}, which is outside the reference directory")),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn a_manifest_mixing_float32_and_float64_entries_is_refused() {
    let refs = RefCopy::f64();
    let mut m = refs.manifest();
    m["cases"][0]["tensors"][0]["dtype"] = "float32".into();
    refs.set_manifest(&m);
    let out = run(&["validate", "--reference", refs.path()]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("has dtype \"float32\" in a float64 dump"), "{}", out.stderr);
}

#[test]
fn the_checkpoint_table_as_json_agrees_with_the_table() {
    let out = run(&["checkpoints", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let cps = doc["checkpoints"].as_array().unwrap();
    assert_eq!(cps.len(), 13);
    for (i, cp) in cps.iter().enumerate() {
        assert_eq!(cp["checkpoint"], i);
        let float = cp["tensors"].as_array().unwrap().iter().any(|t| t["kind"] == "float");
        assert_eq!(cp["accuracy"].is_object(), float, "checkpoint {i}");
    }
    assert_eq!(cps[4]["tensors"][0]["mask"], "causal");
    assert_eq!(cps[1]["tolerance"], serde_json::json!({"atol": 1e-4, "rtol": 1e-5}));
    let table = run(&["checkpoints"]).stdout;
    assert!(table.contains("atol 1e-4 rtol 1e-5"));
}
