//! The validator as the only test of the engine: `llorch validate` on the bundled models (the
//! tiny one in every weight format it has references for, also stored as a BF16 and an F16
//! checkpoint; the coverage one: every remainder path; the halves one stored in float32, bfloat16
//! and float16 from end to end), every checkpoint on every layer,
//! chained and isolated, against their float32 and float64 dumps. cargo-mutants runs this test
//! alone against each mutant of the engine (`.cargo/mutants.toml`, `scripts/mutants.sh`): a
//! mutant the validation does not fail survives. On a failure it prints the first failing row,
//! which `scripts/mutants_summary.py` reads to say whether the mutated function's stage is the
//! one that failed.

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use safetensors::Dtype;
use safetensors::tensor::{SafeTensors, TensorView};
use serde_json::Value;

#[test]
fn the_bundled_validation_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tiny = root.join("fixtures/tiny-gpt2");
    let runs = [
        (tiny.clone(), "f32"),
        (tiny.clone(), "bf16"),
        (tiny.clone(), "f16"),
        (tiny.clone(), "q8_0"),
        (root.join("fixtures/coverage-gpt2"), "f32"),
    ];
    for (model, weights) in runs {
        validate(&model, weights, &[], &[]);
    }
    // The engine reads a checkpoint's halves only from a file that stores them: every bundled
    // model is stored in float32, and `--weights` rounds float32 values.
    for (dtype, weights) in [(Dtype::BF16, "bf16"), (Dtype::F16, "f16")] {
        let stored = stored_in(&tiny, dtype, is_product_matrix);
        let references =
            [tiny.join(format!("reference-{weights}")), tiny.join(format!("reference-{weights}-f64"))];
        validate(stored.path(), weights, &references, &[]);
    }
    // A checkpoint stored in a half format from end to end, biases, LayerNorm and wpe too (as a
    // model saved in bfloat16 is): every weight of the halves model is exact in both formats, so
    // stored in either it is the same model, and its own references judge the engine reading it.
    let halves = root.join("fixtures/halves-gpt2");
    // Stored in float32 it runs on one thread: the team's and the kernels' work splits are then
    // the single part's (every other run has a thread per core).
    validate(&halves, "f32", &[], &["--threads", "1"]);
    for dtype in [Dtype::BF16, Dtype::F16] {
        let stored = stored_in(&halves, dtype, |_| true);
        validate(stored.path(), "f32", &[halves.join("reference"), halves.join("reference-f64")], &[]);
    }
}

/// `llorch validate` of `model` with `weights`, against `references` (none: the model's own), on
/// every checkpoint and layer in both modes, with the run-time `settings`; on a failure, the
/// first failing row and a panic.
fn validate(model: &Path, weights: &str, references: &[PathBuf], settings: &[&str]) {
    let mut command = Command::cargo_bin("llorch").expect("binary built");
    command.args(["validate", "--weights", weights, "--model"]).arg(model).args(settings);
    for reference in references {
        command.arg("--reference").arg(reference);
    }
    command.args(["--checkpoint", "all", "--layer", "all", "--mode", "chained,isolated", "--format", "json"]);
    let out = command.output().expect("llorch runs");
    let code = out.status.code();
    if code == Some(0) {
        return;
    }
    let model = model.display();
    let doc: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    let first =
        doc.as_ref().and_then(|d| d["rows"].as_array()?.iter().find(|r| r["passed"] == false).cloned());
    match first {
        Some(r) => println!(
            "FIRST FAILURE: model {model} weights {weights} case {} phase {} mode {} checkpoint {} layer {} tensor {}",
            r["case"], r["phase"], r["mode"], r["checkpoint"], r["layer"], r["tensor"]
        ),
        None => println!(
            "FIRST FAILURE: model {model} weights {weights} exit {code:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
    panic!("the bundled validation of {model} ({weights} weights) fails (exit {code:?})");
}

/// `model` in a temporary directory, the tensors `stored` picks written in `dtype` (rounded to
/// nearest, ties to even, by the `half` crate, as torch's `.to()` rounds), every other one in
/// float32. For the tiny model with `is_product_matrix`: exactly the weights its `--weights-as`
/// references were made on (`scripts/rounding.py`), so those references judge the engine reading
/// that file.
fn stored_in(model: &Path, dtype: Dtype, stored: fn(&str) -> bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for entry in fs::read_dir(model).expect("the model's directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_file() && path.file_name().is_some_and(|n| n != "model.safetensors") {
            fs::copy(&path, dir.path().join(path.file_name().unwrap())).expect("copied");
        }
    }
    let bytes = fs::read(model.join("model.safetensors")).expect("the model's weights");
    let file = SafeTensors::deserialize(&bytes).expect("a safetensors file");
    let tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32, "{name}: the bundled models are stored in float32");
            let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()));
            if stored(&name) {
                let halves: Vec<u8> = match dtype {
                    Dtype::BF16 => values.flat_map(|v| half::bf16::from_f32(v).to_le_bytes()).collect(),
                    _ => values.flat_map(|v| half::f16::from_f32(v).to_le_bytes()).collect(),
                };
                (name, dtype, view.shape().to_vec(), halves)
            } else {
                (name, Dtype::F32, view.shape().to_vec(), view.data().to_vec())
            }
        })
        .collect();
    let views = tensors.iter().map(|(name, dtype, shape, data)| {
        (name.clone(), TensorView::new(*dtype, shape.clone(), data).expect("a consistent tensor"))
    });
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).expect("written");
    dir
}

/// The matrices a format holds (`scripts/rounding.py`'s `is_rounded`): wte and the blocks'
/// Conv1D weights. Biases, LayerNorm and wpe stay float32 in every format.
fn is_product_matrix(name: &str) -> bool {
    let name = name.strip_prefix("transformer.").unwrap_or(name);
    let conv1d = ["attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"];
    name == "wte.weight" || (name.starts_with("h.") && conv1d.iter().any(|m| name.ends_with(m)))
}
