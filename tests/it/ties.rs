//! Near ties at the token checks: where two sources pick different tokens whose logits the
//! float64 truth puts within float32's noise, the row passes as a tie with the evidence; a gap
//! beyond the noise fails as before.

use serde_json::Value;

use crate::common::{RefCopy, run};

/// Copies of the float32 and float64 dumps in which case hello's two best tokens (by the truth)
/// are `gap` apart in both dumps' last-position logits, and the float32 dump picked the second.
fn near_tie(gap: f64) -> (RefCopy, RefCopy, [u32; 2]) {
    let (f32s, f64s) = (RefCopy::new(), RefCopy::f64());
    let mut best = [0u32; 2];
    f64s.edit_tensor_f64("hello", 9, None, "selected_logits", |z| {
        let mut order: Vec<usize> = (0..z.len()).collect();
        order.sort_by(|&a, &b| z[[b]].total_cmp(&z[[a]]));
        best = [order[0] as u32, order[1] as u32];
        z[[order[1]]] = z[[order[0]]] - gap;
    });
    f32s.edit_tensor("hello", 9, None, "selected_logits", |z| {
        z[[best[1] as usize]] = z[[best[0] as usize]] - gap as f32;
    });
    let mut manifest = f32s.manifest();
    let case = manifest["cases"].as_array_mut().unwrap().iter_mut().find(|c| c["name"] == "hello").unwrap();
    case["next_token"] = best[1].into();
    f32s.set_manifest(&manifest);
    (f32s, f64s, best)
}

/// Case hello's checkpoint `cp` against both copies: the exit code and the rows.
fn validate(f32s: &RefCopy, f64s: &RefCopy, cp: &str) -> (i32, Vec<Value>) {
    let (f32s, f64s) = (f32s.path(), f64s.path());
    let args = ["validate", "--reference", f32s, "--reference", f64s, "--case", "hello", "--format", "json"];
    let out = run(&[&args[..], &["--checkpoint", cp]].concat());
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    (out.code, doc["rows"].as_array().unwrap().clone())
}

#[test]
fn tokens_the_truth_cannot_tell_apart_are_a_tie() {
    let (f32s, f64s, best) = near_tie(1e-9);
    let (code, rows) = validate(&f32s, &f64s, "10");
    assert_eq!(code, 0, "{rows:#?}");
    let row = rows.iter().find(|r| r["pair"][0] == "ours" && r["pair"][1] == "pytorch-f32").unwrap();
    assert_eq!(row["passed"], true);
    assert_eq!(row["tie"]["tokens"], serde_json::json!([best[0], best[1]]));
    let (gap, threshold) =
        (row["tie"]["truth_gap"].as_f64().unwrap(), row["tie"]["threshold"].as_f64().unwrap());
    assert!(gap < 1e-8 && gap <= threshold, "{row}");
    assert!(threshold < 1e-4, "the noise at checkpoint 9 is float32's, not the logits' scale: {threshold}");
    assert!(row["detail"].as_str().unwrap().starts_with("tie: the truth's logits of"), "{row}");
    // Ours and the truth picked the same token: no tie needed there.
    let truth = rows.iter().find(|r| r["pair"][0] == "ours" && r["pair"][1] == "pytorch-f64").unwrap();
    assert!(truth["tie"].is_null() && truth["passed"] == true);
}

#[test]
fn a_gap_beyond_the_noise_still_fails() {
    let (f32s, f64s, _) = near_tie(1e-2);
    let (code, rows) = validate(&f32s, &f64s, "10");
    assert_eq!(code, 1);
    let row = rows.iter().find(|r| r["pair"][0] == "ours" && r["pair"][1] == "pytorch-f32").unwrap();
    assert!(row["passed"] == false && row["tie"].is_null(), "{row}");
}

/// Without a float64 truth there is no evidence: a different token fails as before.
#[test]
fn without_a_truth_different_tokens_fail() {
    let (f32s, _f64s, _) = near_tie(1e-9);
    let out = f32s.validate_hello(&["--checkpoint", "10"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
}

/// At checkpoint 12 the first differing token is judged the same way, and the text that
/// differs because of it goes with it.
#[test]
fn a_generation_that_parts_at_a_near_tie_is_a_tie() {
    let (f32s, f64s, best) = near_tie(1e-9);
    let mut manifest = f32s.manifest();
    let case = manifest["cases"].as_array_mut().unwrap().iter_mut().find(|c| c["name"] == "hello").unwrap();
    case["generated_ids"][0] = best[1].into();
    case["generated_text"] = "Hello. a different text".into();
    f32s.set_manifest(&manifest);
    let (code, rows) = validate(&f32s, &f64s, "12");
    assert_eq!(code, 0, "{rows:#?}");
    let tied: Vec<&Value> = rows.iter().filter(|r| !r["tie"].is_null()).collect();
    let tensors: Vec<&str> = tied.iter().map(|r| r["tensor"].as_str().unwrap()).collect();
    assert_eq!(tensors, ["generated_ids", "generated_ids", "generated_text", "generated_text"], "{tied:#?}");
}
