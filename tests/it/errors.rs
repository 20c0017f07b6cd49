//! Bad input is an error with exit 2 and one clear message, never a pass, a panic or a trace.

use std::fs;
use std::path::Path;

use crate::common::{RefCopy, copy_model, fixture, run};

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
    assert_error(
        &["validate", "--reference", refs.path(), "--checkpoint", "2"],
        "hello/cp02_l00_q.npy, which does not exist",
    );
}

#[test]
fn missing_safetensors_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
    fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    assert_error(&["validate", "--model", dir.path().to_str().unwrap()], "model.safetensors");
}

#[test]
fn config_the_engine_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
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

// ---- model directories with broken files -------------------------------------------------

/// A copy of the fixture model (with its reference) whose model.safetensors is `bytes`.
fn model_with_safetensors(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
    fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    dir
}

/// A safetensors file: 8-byte little-endian header length, the header, the data.
fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn assert_model_error(dir: &tempfile::TempDir, needle: &str) {
    assert_error(&["validate", "--model", dir.path().to_str().unwrap()], needle);
}

/// Rewrites the fixture's tensors through `edit` (name, dtype, shape, bytes) and saves them.
fn edited_model(
    edit: impl Fn(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) -> tempfile::TempDir {
    use safetensors::tensor::{SafeTensors, TensorView};
    let bytes = fs::read(fixture().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView<'_>)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    let out = safetensors::serialize(views, None).unwrap();
    model_with_safetensors(&out)
}

#[test]
fn truncated_safetensors() {
    let bytes = fs::read(fixture().join("model.safetensors")).unwrap();
    let dir = model_with_safetensors(&bytes[..bytes.len() / 2]);
    assert_model_error(&dir, "is not a valid safetensors file");
}

#[test]
fn safetensors_header_length_beyond_the_file() {
    let mut bytes = (1u64 << 20).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    assert_model_error(&model_with_safetensors(&bytes), "is not a valid safetensors file");
}

#[test]
fn safetensors_header_that_is_not_json() {
    assert_model_error(
        &model_with_safetensors(&raw_safetensors("{not json", &[])),
        "not a valid safetensors",
    );
}

#[test]
fn safetensors_with_overlapping_offsets() {
    let header = r#"{"transformer.wte.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"transformer.wpe.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    assert_model_error(&model_with_safetensors(&raw_safetensors(header, &[0; 8])), "not a valid safetensors");
}

#[test]
fn safetensors_with_out_of_bounds_offsets() {
    let header = r#"{"transformer.wte.weight":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    assert_model_error(&model_with_safetensors(&raw_safetensors(header, &[0; 8])), "not a valid safetensors");
}

#[test]
fn safetensors_without_gpt2_embeddings() {
    let header = r#"{"something.else":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    assert_model_error(
        &model_with_safetensors(&raw_safetensors(header, &[0; 4])),
        "holds no GPT-2 token embedding",
    );
}

#[test]
fn missing_weight_tensor() {
    let dir = edited_model(|t| t.retain(|(n, ..)| n != "transformer.h.1.mlp.c_fc.bias"));
    assert_model_error(&dir, "tensor \"transformer.h.1.mlp.c_fc.bias\" is missing");
}

#[test]
fn weight_with_the_wrong_shape() {
    let dir = edited_model(|t| {
        let ln = t.iter_mut().find(|(n, ..)| n == "transformer.ln_f.bias").unwrap();
        ln.2 = vec![32];
        ln.3.truncate(32 * 4);
    });
    assert_model_error(&dir, "has shape [32], expected [64] from config.json");
}

#[test]
fn weight_with_an_unsupported_dtype() {
    let dir = edited_model(|t| {
        let ln = t.iter_mut().find(|(n, ..)| n == "transformer.ln_f.bias").unwrap();
        ln.1 = safetensors::Dtype::I8;
        ln.3.truncate(64);
    });
    assert_model_error(&dir, "\"transformer.ln_f.bias\" in");
    assert_model_error(&dir, "is I8; llorch reads F32, F16 and BF16 checkpoints");
}

/// Q8_0's blocks run along K: a model whose width is not a whole number of them (the coverage
/// model, 136 wide) is refused in q8_0, naming the first matrix, not run in a mixed format.
#[test]
fn a_width_q8_0_blocks_do_not_fill_is_refused() {
    assert_error(
        &["generate", "--model", "fixtures/coverage-gpt2", "--weights", "q8_0", "--tokens", "1"],
        "\"transformer.wte.weight\" in fixtures/coverage-gpt2/model.safetensors cannot be held in q8_0: q8_0 \
         needs the input dimension to be a multiple of 32, and it is 136",
    );
}

/// A weight that a format cannot hold is named, with the format, in every command that loads
/// the model; the F32 engine (which can hold it) runs.
#[test]
fn weight_the_format_cannot_hold() {
    let dir = edited_model(|t| {
        let fc = t.iter_mut().find(|(n, ..)| n == "transformer.h.1.mlp.c_fc.weight").unwrap();
        let at = 4 * (3 * 256 + 7); // element [3, 7] of [64, 256]
        fc.3[at..at + 4].copy_from_slice(&1e10f32.to_le_bytes());
    });
    let model = dir.path().to_str().unwrap();
    for (format, needle) in [("f16", "is infinite or NaN once converted"), ("q8_0", "Q8_0 block's scale")] {
        let message = format!(
            "\"transformer.h.1.mlp.c_fc.weight\" in {model}/model.safetensors cannot be held in {format}: its element [3, 7] (10000000000) "
        );
        for command in [
            &["validate", "--model", model][..],
            &["generate", "--model", model, "--tokens", "1", "--max-tokens", "1"],
            &["bench", "--model", model],
        ] {
            let mut args = command.to_vec();
            args.extend(["--weights", format]);
            assert_error(&args, &message);
            assert_error(&args, needle);
        }
    }
    let out = run(&["generate", "--model", model, "--tokens", "1", "--max-tokens", "1", "--weights", "bf16"]);
    assert_eq!(out.code, 0, "bf16 holds 1e10: {}", out.stderr);
}

/// A weight that is NaN or infinite in the file is refused, named with its element, in every
/// format: run, it would make every output it reaches NaN, and rounded to Q8_0 a NaN would even
/// pass as a zero weight.
#[test]
fn weight_that_is_not_a_finite_number() {
    let matrix = edited_model(|t| {
        let fc = t.iter_mut().find(|(n, ..)| n == "transformer.h.1.mlp.c_fc.weight").unwrap();
        let at = 4 * (3 * 256 + 7); // element [3, 7] of [64, 256]
        fc.3[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    let vector = edited_model(|t| {
        let ln = t.iter_mut().find(|(n, ..)| n == "transformer.ln_f.bias").unwrap();
        ln.3[4 * 9..4 * 10].copy_from_slice(&f32::NEG_INFINITY.to_le_bytes());
    });
    let table = edited_model(|t| {
        let wpe = t.iter_mut().find(|(n, ..)| n == "transformer.wpe.weight").unwrap();
        let at = 4 * (2 * 64 + 5); // element [2, 5] of [1024, 64]: read as it is, not packed
        wpe.3[at..at + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    });
    for (dir, tensor, held) in [
        (&matrix, "transformer.h.1.mlp.c_fc.weight", "NaN at its element [3, 7]"),
        (&vector, "transformer.ln_f.bias", "-inf at its element [9]"),
        (&table, "transformer.wpe.weight", "inf at its element [2, 5]"),
    ] {
        let model = dir.path().to_str().unwrap();
        let message = format!(
            "\"{tensor}\" in {model}/model.safetensors holds {held}: a weight must be a finite number"
        );
        for format in ["f32", "bf16", "f16", "q8_0"] {
            for command in [
                &["validate", "--model", model][..],
                &["generate", "--model", model, "--tokens", "1", "--max-tokens", "1"],
            ] {
                let mut args = command.to_vec();
                args.extend(["--weights", format]);
                assert_error(&args, &message);
            }
        }
    }
}

#[test]
fn unknown_weight_format() {
    assert_error(
        &["generate", "--weights", "int4", "Hi"],
        "\"int4\" is no weight format; they are f32, bf16, f16, q8_0",
    );
}

/// A dump made on weights rounded otherwise than ours would differ by the rounding, which is not
/// the arithmetic validation judges: refused, whichever way round.
#[test]
fn reference_made_on_other_rounded_weights() {
    let fixture = fixture();
    let bf16 = fixture.join("reference-bf16");
    let f32s = fixture.join("reference");
    assert_error(
        &["validate", "--weights", "q8_0", "--reference", bf16.to_str().unwrap()],
        "reference-bf16 was made on the model's weights rounded to bf16, and our engine holds them in q8_0",
    );
    assert_error(
        &["validate", "--weights", "bf16", "--reference", f32s.to_str().unwrap()],
        "rounded to f32, and our engine holds them in bf16",
    );
    // Without --reference, only the dumps of the format's rounding are taken.
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
    fs::remove_file(dir.path().join("reference-f16")).unwrap();
    fs::remove_file(dir.path().join("reference-f16-f64")).unwrap();
    assert_error(
        &["validate", "--model", dir.path().to_str().unwrap(), "--weights", "f16"],
        "with f16 weights: pass --reference DIR, or make one with `python scripts/dump_reference.py",
    );
}

fn model_with_config(edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
    let path = dir.path().join("config.json");
    fs::write(&path, edit(fs::read_to_string(&path).unwrap())).unwrap();
    dir
}

#[test]
fn vocab_size_that_disagrees_with_wte() {
    // The reference would disagree too; the weights are checked first.
    let dir = model_with_config(|c| c.replace("\"vocab_size\": 50257", "\"vocab_size\": 50000"));
    assert_model_error(&dir, "has shape [50257, 64], expected [50000, 64]");
}

#[test]
fn n_embd_not_divisible_by_n_head() {
    let dir = model_with_config(|c| c.replace("\"n_head\": 4", "\"n_head\": 5"));
    assert_model_error(&dir, "n_embd (64) is not divisible by n_head (5)");
}

#[test]
fn config_that_is_not_json() {
    let dir = model_with_config(|_| "model_type = gpt2".into());
    assert_model_error(&dir, "not a GPT-2 config.json");
}

#[test]
fn missing_config() {
    let dir = tempfile::tempdir().unwrap();
    copy_model(dir.path());
    fs::remove_file(dir.path().join("config.json")).unwrap();
    assert_model_error(&dir, "reading model config");
}

// ---- reference directories with broken files ----------------------------------------------

#[test]
fn extra_npy_in_a_case_directory() {
    let refs = RefCopy::new();
    fs::write(refs.dir.path().join("hello/cp99_stray.npy"), b"x").unwrap();
    assert_error(&["validate", "--reference", refs.path()], "cp99_stray.npy is not listed in");
}

#[test]
fn corrupt_npy_header() {
    let refs = RefCopy::new();
    fs::write(refs.tensor_path("hello", 0, None, "embeddings"), b"\x93NUMPY garbage").unwrap();
    assert_error(
        &["validate", "--reference", refs.path(), "--checkpoint", "0"],
        "is not a float32 .npy file",
    );
}

#[test]
fn npy_header_claiming_a_huge_shape() {
    // A valid header for 10^12 float32 values over a few bytes of data: an error, not an
    // attempt to allocate 4 TB.
    let refs = RefCopy::new();
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }";
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0; 16]);
    fs::write(refs.tensor_path("hello", 0, None, "embeddings"), bytes).unwrap();
    assert_error(
        &["validate", "--reference", refs.path(), "--checkpoint", "0"],
        "is not a float32 .npy file",
    );
}

#[test]
fn npy_of_the_wrong_dtype() {
    let refs = RefCopy::new();
    let path = refs.tensor_path("hello", 0, None, "embeddings");
    ndarray_npy::write_npy(&path, &ndarray::Array2::<f64>::zeros((2, 64))).unwrap();
    assert_error(
        &["validate", "--reference", refs.path(), "--checkpoint", "0"],
        "is not a float32 .npy file",
    );
}

#[test]
fn manifest_that_is_not_json() {
    let refs = RefCopy::new();
    fs::write(refs.dir.path().join("manifest.json"), "{").unwrap();
    assert_error(&["validate", "--reference", refs.path()], "is not a valid llorch reference manifest");
}

#[test]
fn manifest_token_outside_the_vocabulary() {
    let refs = RefCopy::new();
    let mut m = refs.manifest();
    m["cases"][0]["next_token"] = 60000.into();
    refs.set_manifest(&m);
    assert_error(
        &["validate", "--reference", refs.path()],
        "has token id 60000, outside the model's vocabulary",
    );
}

// ---- command line -------------------------------------------------------------------------

#[test]
fn prompt_longer_than_the_context() {
    let ids = vec!["13"; 1025].join(",");
    assert_error(&["generate", "--tokens", &ids, "--max-tokens", "1"], "exceeds the model's context of 1024");
}

#[test]
fn unwritable_output_path() {
    assert_error(
        &["validate", "--output", "/nonexistent/dir/report.txt"],
        "cannot write the report to /nonexistent/dir/report.txt",
    );
}

#[test]
fn output_file_receives_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let out = run(&["validate", "--checkpoint", "0", "--format", "json", "--output", path.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.is_empty());
    let doc: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    assert!(doc["rows"].as_array().unwrap().iter().all(|r| r["passed"] == true));
}

#[test]
fn no_report_file_is_left_behind_by_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.txt");
    assert_error(&["validate", "--case", "nope", "--output", path.to_str().unwrap()], "no case \"nope\"");
    assert!(!path.exists(), "an empty report file would pose as a result");
    // Nor by a model that cannot be loaded.
    let model = model_with_safetensors(&[]);
    let junit = dir.path().join("junit.xml");
    let args = ["--output", path.to_str().unwrap(), "--junit", junit.to_str().unwrap()];
    let out = run(&[&["validate", "--model", model.path().to_str().unwrap()][..], &args].concat());
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(!path.exists() && !junit.exists(), "an empty report file would pose as a result");
}

#[test]
fn empty_files() {
    assert_model_error(&model_with_safetensors(&[]), "is not a valid safetensors file: header too small");
    let refs = RefCopy::new();
    fs::write(refs.tensor_path("hello", 0, None, "embeddings"), b"").unwrap();
    assert_error(
        &["validate", "--reference", refs.path(), "--checkpoint", "0"],
        "is not a float32 .npy file",
    );
}

/// The fuzz targets start from the committed seeds: each must be a valid input, or the fuzzer
/// spends its minute on inputs the reader refuses at the door.
#[test]
fn the_reference_fuzz_seeds_open_and_load() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/reference_loader");
    for seed in ["one-tensor", "one-tensor-f64"] {
        let data = fs::read(corpus.join(seed)).unwrap();
        let split = data.iter().position(|&b| b == 0xFF).unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("manifest.json"), &data[..split]).unwrap();
        fs::create_dir(dir.path().join("c")).unwrap();
        fs::write(dir.path().join("c/t.npy"), &data[split + 1..]).unwrap();
        let reference = llorch::validation::reference::Reference::open(dir.path())
            .unwrap_or_else(|e| panic!("{seed}: {e:#}"));
        reference.precision().unwrap();
        reference.load(&reference.manifest.cases[0].tensors[0]).unwrap_or_else(|e| panic!("{seed}: {e:#}"));
    }
}

#[test]
fn a_dump_of_the_first_format_is_refused_with_a_request_to_regenerate() {
    let refs = RefCopy::new();
    let mut m = refs.manifest();
    m["format"] = "llorch-reference/1".into();
    refs.set_manifest(&m);
    assert_error(
        &["validate", "--reference", refs.path()],
        "this llorch reads \"llorch-reference/2\": regenerate",
    );
}
