//! `llorch cost` through the real binary, on the bundled model's dumps: the float64 truth on the
//! checkpoint's weights, the float64 truths on bf16/f16/q8_0-rounded weights, and PyTorch
//! computing in bfloat16 and float16 (scripts/dump_reference.py --dtype).

use serde_json::Value;

use crate::common::{copy_model, run};

fn cost_json(args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["cost", "--format", "json"];
    all.extend_from_slice(args);
    let out = run(&all);
    let report = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    (out.code, report, out.stderr)
}

fn format<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["formats"].as_array().unwrap().iter().find(|f| f["format"] == name).unwrap()
}

fn column(format: &Value, kind: &str) -> Option<usize> {
    format["columns"].as_array().unwrap().iter().position(|c| c["kind"] == kind)
}

#[test]
fn every_format_is_measured_against_the_truth_with_the_rounding_apart() {
    let (code, report, stderr) = cost_json(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["truth_dir"].as_str().unwrap().rsplit('/').next(), Some("reference-f64"));
    let names: Vec<&str> =
        report["formats"].as_array().unwrap().iter().map(|f| f["format"].as_str().unwrap()).collect();
    assert_eq!(names, ["f32", "bf16", "f16", "q8_0"]);
    for (name, yardstick) in
        [("f32", Some("pytorch-f32")), ("bf16", Some("pytorch-bf16")), ("f16", Some("pytorch-f16"))]
    {
        let f = format(&report, name);
        assert_eq!(f["yardstick"].as_str(), yardstick, "{name}");
        assert_eq!(f["passed"], true, "{name}");
    }
    // Q8_0 has no PyTorch precision and no other engine's dump among the bundled ones.
    let q8 = format(&report, "q8_0");
    assert!(q8["yardstick"].is_null() && q8["passed"].is_null());
    for name in ["bf16", "f16", "q8_0"] {
        let f = format(&report, name);
        let (rounding, ours, arith) =
            (column(f, "rounding").unwrap(), column(f, "ours").unwrap(), column(f, "arithmetic").unwrap());
        let rows = f["rows"].as_array().unwrap();
        // Every float tensor of checkpoints 0-9 but the cache (embeddings, 11 per layer, ln_f,
        // logits, selected logits), both phases, every case.
        assert_eq!(rows.len(), 4 * 2 * (4 + 2 * 11), "{name}");
        for row in rows {
            let rel = |c: usize| row["cells"][c]["rel_rms"].as_f64();
            let (r, o, a) = (rel(rounding).unwrap(), rel(ours).unwrap(), rel(arith).unwrap());
            // The weights' rounding costs orders of magnitude more than our float32 arithmetic on
            // the rounded weights, and ours is about the rounding's cost.
            assert!(r > 100.0 * a && a < 2e-6, "{name}: {row}");
            assert!((o - r).abs() <= 4.0 * a + 1e-3 * r, "{name}: {row}");
        }
    }
    // At bf16 ours loses less than PyTorch computing in bfloat16 at every tensor.
    let bf16 = format(&report, "bf16");
    let worst =
        bf16["rows"].as_array().unwrap().iter().filter_map(|r| r["ratio"].as_f64()).fold(0.0, f64::max);
    assert!(worst > 0.1 && worst < 1.0, "worst ours/pytorch-bf16 {worst}");
}

#[cfg(feature = "planted-bugs")]
#[test]
fn a_bf16_kernel_that_truncates_costs_more_than_pytorch_and_fails() {
    let (code, report, stderr) = cost_json(&["--weights", "bf16", "--plant", "bf16-truncated"]);
    assert_eq!(code, 1, "{stderr}");
    let f = format(&report, "bf16");
    assert_eq!(f["passed"], false);
    let failed: Vec<&Value> =
        f["verdicts"].as_array().unwrap().iter().filter(|v| v["passed"] == false).collect();
    assert!(failed.len() > 10, "{} tensors failed", failed.len());
    // Truncation is in the weights: every product's output fails, nothing before the first.
    assert!(failed.iter().all(|v| v["checkpoint"].as_u64() >= Some(2)), "{failed:?}");
}

#[test]
fn the_table_says_each_formats_verdict() {
    let out = run(&["cost", "--weights", "bf16,q8_0", "--case", "hello"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("truth: "), "{}", out.stdout);
    assert!(out.stdout.contains("pytorch-bf16*"), "{}", out.stdout);
    assert!(out.stdout.contains("bf16: PASS: ours is as accurate as pytorch-bf16"), "{}", out.stdout);
    assert!(out.stdout.contains("the weights' rounding alone is"), "{}", out.stdout);
    assert!(out.stdout.contains("q8_0: no verdict: no yardstick"), "{}", out.stdout);
    assert!(!out.stdout.contains("\nf16 "), "only the formats asked for: {}", out.stdout);
}

#[test]
fn the_html_report_draws_one_line_per_format() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["cost", "--case", "hello", "--report", dir.path().to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let page = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    for label in ["ours f32", "ours bf16", "ours f16", "ours q8_0", "bf16 rounding", "pytorch-bf16"] {
        assert!(page.contains(label), "{label} missing");
    }
    assert!(page.contains("<svg"));
}

#[test]
fn without_the_truth_or_with_a_bad_case_it_says_so_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
    std::fs::remove_file(dir.path().join("reference-f64")).unwrap();
    let out = run(&["cost", "--model", dir.path().to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("float64 truth on the checkpoint's own"), "{}", out.stderr);
    let out = run(&["cost", "--case", "nope"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no case \"nope\""), "{}", out.stderr);
}

#[test]
fn validate_refuses_a_dump_computed_in_bfloat16() {
    let bf16 = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tiny-gpt2/reference-pytorch-bf16");
    let out = run(&["validate", "--reference", bf16]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("computed in bfloat16") && out.stderr.contains("llorch cost"),
        "{}",
        out.stderr
    );
}
