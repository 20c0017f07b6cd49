//! Bad input is an error with exit 2 and one clear message, never a pass, a panic or a trace.

mod common;

use std::fs;

use common::{RefCopy, copy_dir, fixture, run};

/// Runs llorch, expects exit 2 and an error message containing `needle`, and nothing on stdout.
fn assert_error(args: &[&str], needle: &str) {
    let out = run(args);
    assert_eq!(out.code, 2, "args {args:?}: stdout {} stderr {}", out.stdout, out.stderr);
    assert!(out.stderr.contains(needle), "wanted {needle:?} in stderr: {}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(!out.stdout.contains("PASS"), "no partial result on an error: {}", out.stdout);
}

#[test]
fn missing_model_dir() {
    assert_error(
        &["validate", "--model", "/nonexistent/model"],
        "model directory /nonexistent/model does not exist",
    );
}

#[test]
fn missing_reference_dir() {
    assert_error(&["validate", "--reference", "/nonexistent/ref"], "/nonexistent/ref/manifest.json");
}

#[test]
fn checkpoint_out_of_range() {
    assert_error(&["validate", "--checkpoint", "13"], "checkpoint 13 does not exist");
}

#[test]
fn layer_beyond_the_model() {
    assert_error(&["validate", "--layer", "2"], "--layer 2 does not exist: the model has layers 0 to 1");
}

#[test]
fn unknown_case() {
    assert_error(&["validate", "--case", "nope"], "no case \"nope\"");
}

#[test]
fn negative_tolerance() {
    assert_error(&["validate", "--atol", "-1"], "--atol must be a non-negative number");
}

#[test]
fn manifest_for_another_prompt() {
    let refs = RefCopy::new();
    let mut m = refs.manifest();
    m["cases"][0]["token_ids"] = serde_json::json!([15496, 0]);
    refs.set_manifest(&m);
    assert_error(&["validate", "--reference", refs.path()], "encodes \"Hello.\" as [15496, 13]");
}

#[test]
fn manifest_for_another_model() {
    let refs = RefCopy::new();
    let mut m = refs.manifest();
    m["model"]["n_layer"] = 12.into();
    refs.set_manifest(&m);
    assert_error(&["validate", "--reference", refs.path()], "was made for another model");
}

#[test]
fn reference_tensor_with_the_wrong_shape() {
    let refs = RefCopy::new();
    let path = refs.tensor_path("hello", 1, Some(0), "ln_1");
    ndarray_npy::write_npy(&path, &ndarray::Array2::<f32>::zeros((3, 64))).unwrap();
    assert_error(
        &["validate", "--reference", refs.path(), "--checkpoint", "1"],
        "has shape [3, 64], but the manifest says [2, 64]",
    );
}

#[test]
fn missing_reference_tensor_file() {
    let refs = RefCopy::new();
    fs::remove_file(refs.tensor_path("hello", 2, Some(0), "q")).unwrap();
    assert_error(&["validate", "--reference", refs.path(), "--checkpoint", "2"], "reading reference tensor");
}

#[test]
fn missing_safetensors_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), dir.path());
    fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    assert_error(&["validate", "--model", dir.path().to_str().unwrap()], "model.safetensors");
}

#[test]
fn config_the_engine_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), dir.path());
    let path = dir.path().join("config.json");
    let text = fs::read_to_string(&path).unwrap().replace("\"gelu_new\"", "\"relu\"");
    fs::write(&path, text).unwrap();
    assert_error(&["validate", "--model", dir.path().to_str().unwrap()], "activation_function is \"relu\"");
}

#[test]
fn bad_command_line_is_exit_2() {
    let out = run(&["validate", "--no-such-flag"]);
    assert_eq!(out.code, 2);
    let out = run(&["frobnicate"]);
    assert_eq!(out.code, 2);
}
