//! The bundled validation reaches every remainder path of the engine: the tiny model's cases
//! and the coverage model's (`fixtures/coverage-gpt2`: odd panel counts with partial last
//! panels, K not a multiple of the sums' block, a head of 136 dimensions: two whole value
//! blocks and a short one, a prompt past two key blocks, prompt lengths that leave every tile
//! remainder) pass every check, and in a build with the `path-counters` feature their runs
//! together take every path this machine's kernel set has (src/engine/paths.rs).

use crate::common::{coverage_fixture, run};

fn validate_all(model: &std::path::Path, extra: &[&str]) -> crate::common::Output {
    let model = model.to_str().expect("a UTF-8 path");
    let args = ["validate", "--model", model, "--layer", "all", "--mode", "chained,isolated", "-q"];
    run(&[&args[..], extra].concat())
}

#[test]
fn the_coverage_model_passes_every_check_on_every_layer_in_both_modes() {
    let out = validate_all(&coverage_fixture(), &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(" passed, 0 failed"), "{}", out.stdout);
}

#[cfg(feature = "path-counters")]
#[test]
fn the_bundled_validation_reaches_every_remainder_path() {
    use std::collections::BTreeMap;

    use crate::common::fixture;

    let dir = tempfile::tempdir().unwrap();
    let mut counts: BTreeMap<String, (u64, bool)> = BTreeMap::new();
    for (name, model) in [("tiny", fixture()), ("coverage", coverage_fixture())] {
        let file = dir.path().join(format!("{name}.json"));
        let out = validate_all(&model, &["--path-counts", file.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{name}: {}{}", out.stdout, out.stderr);
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for p in doc["paths"].as_array().unwrap() {
            let entry = counts.entry(p["path"].as_str().unwrap().to_string()).or_default();
            entry.0 += p["count"].as_u64().unwrap();
            entry.1 = p["required"].as_bool().unwrap();
        }
    }
    let unreached: Vec<&String> =
        counts.iter().filter(|(_, (count, required))| *required && *count == 0).map(|(p, _)| p).collect();
    assert!(unreached.is_empty(), "paths no bundled case takes: {unreached:?} (all counts: {counts:?})");
    assert!(counts.len() >= 18, "every path is counted: {counts:?}");
}
