//! The HTML report (--report DIR) and JUnit XML (--junit FILE), written by the real binary for
//! the fixture: a failing three-way run (llama.cpp deviates at layer 0's GELU) and a passing one.

use std::fs;
use std::path::Path;

use crate::common::{reference, reference_f64, reference_llamacpp, run};
use serde_json::Value;

struct Written {
    code: i32,
    html: String,
    junit: String,
    json: Value,
}

/// One validation with --report and --junit (and `report_args`), and the same run's JSON.
fn validate(dir: &Path, refs: &[&Path], extra: &[&str], report_args: &[&str]) -> Written {
    let (report, junit) = (dir.join("report"), dir.join("junit.xml"));
    let mut args: Vec<String> =
        vec!["validate".into(), "--checkpoint".into(), "all".into(), "--layer".into(), "all".into()];
    for r in refs {
        args.extend(["--reference".into(), r.display().to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let json_args: Vec<String> = args.iter().cloned().chain(["--format".into(), "json".into()]).collect();
    args.extend([
        "--report".into(),
        report.display().to_string(),
        "--junit".into(),
        junit.display().to_string(),
    ]);
    args.extend(report_args.iter().map(|s| s.to_string()));
    let out = run(&as_str(&args));
    assert!(out.code == 0 || out.code == 1, "exit {}: {}", out.code, out.stderr);
    let json = run(&as_str(&json_args));
    Written {
        code: out.code,
        html: fs::read_to_string(report.join("index.html")).expect("index.html written"),
        junit: fs::read_to_string(junit).expect("junit.xml written"),
        json: serde_json::from_str(&json.stdout).unwrap(),
    }
}

fn counts(json: &Value) -> (usize, usize) {
    let rows = json["rows"].as_array().unwrap();
    let failed = rows.iter().filter(|r| r["passed"] == false).count();
    (rows.len() - failed, failed)
}

/// The page stands alone: no script, nothing loaded from anywhere (the only URL is SVG's
/// namespace).
fn assert_self_contained(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    for banned in ["<script", "<link", "<img", "@import", "url(", "src="] {
        assert!(!html.contains(banned), "the page has {banned:?}");
    }
    let urls = html.matches("http").count();
    let namespaces = html.matches("http://www.w3.org/2000/svg").count();
    assert_eq!(urls, namespaces, "a URL other than the SVG namespace");
}

#[test]
fn a_failing_run_has_charts_heatmaps_failures_and_junit_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (f32_dir, f64_dir, peer) = (reference(), reference_f64(), reference_llamacpp());
    let w = validate(dir.path(), &[&f32_dir, &f64_dir, &peer], &["--case", "long"], &[]);
    assert_eq!(w.code, 1);
    let (passed, failed) = counts(&w.json);
    assert_self_contained(&w.html);

    assert!(w.html.contains(&format!("FAIL</span> ({passed} passed, {failed} failed)")));
    // What was compared: the model, the case's prompt, every source and its versions.
    assert!(w.html.contains("The engine was tested only end to end"));
    for source in ["pytorch-f32", "pytorch-f64", "llama.cpp-f32", "llama_cpp_python: 0.3.36", "torch: 2.15.0"]
    {
        assert!(w.html.contains(source), "{source}");
    }
    assert!(w.html.contains("odd one out: llama.cpp-f32"));
    assert!(w.html.contains("not checked: llama.cpp-f32 has no probs of checkpoint 11"));

    // Error growth: a chart per per-layer checkpoint (1-7) and pass, each an inline SVG with a
    // line per pair and the failing points crossed.
    let growth = section(&w.html, "id=growth", "id=position");
    for pass in ["the prompt's pass", "the decode step"] {
        assert!(growth.contains(pass));
    }
    for cp in 1..=7 {
        assert_eq!(growth.matches(&format!("checkpoint {cp}: ")).count(), 2, "checkpoint {cp}: both passes");
    }
    assert_eq!(growth.matches("<svg").count(), 14);
    assert!(growth.contains("ours vs pytorch-f64") && growth.contains("pytorch-f32 vs llama.cpp-f32"));
    // Error against position: a chart per checkpoint 0-9 over the prompt and the decode steps
    // the dumps hold (1, 2, 8, 10).
    let position = section(&w.html, "id=position", "id=heatmaps");
    assert_eq!(position.matches("<svg").count(), 10);
    assert!(
        position.contains("decode step (0: the prompt)") && position.contains("checkpoint 8: full logits")
    );

    // Heatmaps: the failing tensors' first failing pair, starting with layer 0's GELU; attention
    // tensors by head.
    let heatmaps = section(&w.html, "id=heatmaps", "id=failures");
    let first = heatmaps.find("<h3>").unwrap();
    assert!(
        heatmaps[first..]
            .starts_with("<h3>case long, checkpoint 6 (FFN), layer 0, gelu, ours vs llama.cpp-f32")
    );
    assert!(heatmaps.contains("head 0 [27 × 27]"), "attention heads as [query, key]");
    assert!(heatmaps.matches("<rect").count() > 100);

    // Failures: as many as the run had.
    assert!(w.html.contains(&format!("<h2 id=failures>Failures ({failed})</h2>")));

    // JUnit: a test case per row, a failure per failing row, the worst element in its message.
    let xml = roxmltree::Document::parse(&w.junit).expect("well-formed XML");
    let root = xml.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(root.attribute("tests"), Some((passed + failed).to_string().as_str()));
    assert_eq!(root.attribute("failures"), Some(failed.to_string().as_str()));
    let cases: Vec<_> = root.descendants().filter(|n| n.has_tag_name("testcase")).collect();
    assert_eq!(cases.len(), passed + failed);
    let failures: Vec<_> = root.descendants().filter(|n| n.has_tag_name("failure")).collect();
    assert_eq!(failures.len(), failed);
    let gelu = cases
        .iter()
        .find(|c| c.attribute("name") == Some("checkpoint 6, layer 0, gelu: ours vs llama.cpp-f32"))
        .expect("the first deviation as a test case");
    assert_eq!(gelu.attribute("classname"), Some("llorch.long.prefill.cp06"));
    let failure = gelu.children().find(|n| n.has_tag_name("failure")).expect("it fails");
    assert_eq!(failure.attribute("type"), Some("tolerance"));
    assert!(failure.attribute("message").unwrap().contains("out of tolerance; worst at"));
    for suite in root.children().filter(|n| n.has_tag_name("testsuite")) {
        let tests: usize = suite.attribute("tests").unwrap().parse().unwrap();
        assert_eq!(tests, suite.children().filter(|n| n.has_tag_name("testcase")).count());
    }
}

#[test]
fn a_passing_run_says_so_and_draws_heatmaps_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (f32_dir, f64_dir) = (reference(), reference_f64());
    let w = validate(dir.path(), &[&f32_dir, &f64_dir], &["--case", "hello"], &[]);
    assert_eq!(w.code, 0);
    assert_self_contained(&w.html);
    let (passed, _) = counts(&w.json);
    assert!(w.html.contains(&format!("PASS</span> ({passed} passed, 0 failed)")));
    assert!(!w.html.contains("id=failures") && !w.html.contains("id=heatmaps"));
    let xml = roxmltree::Document::parse(&w.junit).unwrap();
    assert_eq!(xml.root_element().attribute("failures"), Some("0"));

    let asked =
        validate(dir.path(), &[&f32_dir, &f64_dir], &["--case", "hello"], &["--heatmap", "attn_probs"]);
    let heatmaps = section(&asked.html, "id=heatmaps", "id=whole-model");
    // One per layer (2) and pass (the prompt's and decode steps 1, 2, 8, 10), of the tensor's
    // first pair.
    assert_eq!(heatmaps.matches("<h3>").count(), 10, "{heatmaps}");
    assert!(heatmaps.contains("attn_probs, ours vs pytorch-f32"));
}

#[test]
fn report_options_are_checked_before_any_work() {
    let out = run(&["validate", "--report", "/proc/no-such-dir/report"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("cannot make the report directory /proc/no-such-dir/report"),
        "{}",
        out.stderr
    );
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r");
    let out = run(&["validate", "--report", report.to_str().unwrap(), "--heatmap", "gelu2"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--heatmap \"gelu2\" is no float tensor of a checkpoint"), "{}", out.stderr);
    let out = run(&["validate", "--junit", "/proc/no-such-dir/junit.xml"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("cannot write the JUnit XML to /proc/no-such-dir/junit.xml"));
}

/// The part of the page from the element with `from` to the one with `to` (or the end).
fn section<'a>(html: &'a str, from: &str, to: &str) -> &'a str {
    let start = html.find(from).unwrap_or_else(|| panic!("no {from}"));
    let end = html[start..].find(to).map_or(html.len(), |e| start + e);
    &html[start..end]
}

fn as_str(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
