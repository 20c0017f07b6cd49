//! Helpers shared by the integration tests: the bundled fixture, running the real binary, and
//! making broken copies of references and models in temporary directories.

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use ndarray::ArrayD;
use ndarray_npy::{ReadableElement, WritableElement};
use serde_json::Value;

pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-gpt2")
}

/// The coverage model: random, 136 wide (9 panels, the last of 8 columns), one head of 136, a
/// vocabulary of 1000 (63 panels), and cases of 1, 7, 10 and 140 tokens given as token ids,
/// so that the bundled validation reaches every remainder path of the engine (tests/it/coverage.rs).
pub fn coverage_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/coverage-gpt2")
}

/// The fixture's float32 dump (PyTorch float32, the peer).
pub fn reference() -> PathBuf {
    fixture().join("reference")
}

/// The fixture's float64 dump (PyTorch float64, the truth).
pub fn reference_f64() -> PathBuf {
    fixture().join("reference-f64")
}

/// The fixture's dump from llama.cpp (scripts/dump_llamacpp.py), an independent peer. It lives
/// outside the model directory: llama.cpp fails checkpoint 6's tolerances (its GELU goes through
/// a float16 table), and the bundled model's default run must pass.
pub fn reference_llamacpp() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/peers/tiny-gpt2-llamacpp")
}

pub fn llorch() -> Command {
    let mut cmd = Command::cargo_bin("llorch").expect("binary built");
    cmd.env("NO_COLOR", "1");
    cmd
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(args: &[&str]) -> Output {
    let out = llorch().args(args).output().expect("llorch runs");
    Output {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A copy of the bundled model directory in `to`, its reference dumps linked rather than copied
/// (they are read-only here and hundreds of megabytes): edit the model's files freely, and
/// remove a dump's link to take that dump away.
pub fn copy_model(to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::os::unix::fs::symlink(entry.path(), &target).unwrap();
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A writable copy of the fixture's reference dump.
pub struct RefCopy {
    pub dir: tempfile::TempDir,
}

impl RefCopy {
    /// A copy of the float32 dump.
    pub fn new() -> RefCopy {
        RefCopy::of(&reference())
    }

    /// A copy of the float64 dump.
    pub fn f64() -> RefCopy {
        RefCopy::of(&reference_f64())
    }

    pub fn of(source: &Path) -> RefCopy {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(source, dir.path());
        RefCopy { dir }
    }

    pub fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    pub fn manifest(&self) -> Value {
        serde_json::from_str(&fs::read_to_string(self.dir.path().join("manifest.json")).unwrap()).unwrap()
    }

    pub fn set_manifest(&self, m: &Value) {
        fs::write(self.dir.path().join("manifest.json"), serde_json::to_string_pretty(m).unwrap()).unwrap();
    }

    /// Runs `llorch validate --reference <this copy> --case hello` plus `args`.
    pub fn validate_hello(&self, args: &[&str]) -> Output {
        run(&[&["validate", "--reference", self.path(), "--case", "hello"], args].concat())
    }

    /// The .npy file of (case, checkpoint, layer, name) of the prompt's pass, from the manifest.
    pub fn tensor_path(&self, case: &str, cp: u64, layer: Option<u64>, name: &str) -> PathBuf {
        self.tensor_path_in("prefill", case, cp, layer, name)
    }

    /// The .npy file of (case, checkpoint, layer, name) of `phase` ("prefill" or "decode").
    pub fn tensor_path_in(
        &self,
        phase: &str,
        case: &str,
        cp: u64,
        layer: Option<u64>,
        name: &str,
    ) -> PathBuf {
        let m = self.manifest();
        let case = m["cases"].as_array().unwrap().iter().find(|c| c["name"] == case).unwrap();
        let entry = case["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| {
                t["phase"] == phase
                    && t["checkpoint"] == cp
                    && t["layer"].as_u64() == layer
                    && t["name"] == name
            })
            .unwrap_or_else(|| panic!("no tensor {phase} {cp} {layer:?} {name}"));
        self.dir.path().join(entry["file"].as_str().unwrap())
    }

    /// Rewrites one tensor of `phase` ("prefill" or "decode") of a float32 dump through `f`.
    pub fn edit_tensor_in(
        &self,
        phase: &str,
        case: &str,
        cp: u64,
        layer: Option<u64>,
        name: &str,
        f: impl FnOnce(&mut ArrayD<f32>),
    ) {
        edit_npy(&self.tensor_path_in(phase, case, cp, layer, name), f)
    }

    /// Rewrites one tensor of a float32 dump through `f`.
    pub fn edit_tensor(
        &self,
        case: &str,
        cp: u64,
        layer: Option<u64>,
        name: &str,
        f: impl FnOnce(&mut ArrayD<f32>),
    ) {
        self.edit(case, cp, layer, name, f)
    }

    /// Rewrites one tensor of a float64 dump through `f`.
    pub fn edit_tensor_f64(
        &self,
        case: &str,
        cp: u64,
        layer: Option<u64>,
        name: &str,
        f: impl FnOnce(&mut ArrayD<f64>),
    ) {
        self.edit(case, cp, layer, name, f)
    }

    fn edit<T: ReadableElement + WritableElement>(
        &self,
        case: &str,
        cp: u64,
        layer: Option<u64>,
        name: &str,
        f: impl FnOnce(&mut ArrayD<T>),
    ) {
        edit_npy(&self.tensor_path(case, cp, layer, name), f)
    }
}

/// Rewrites one .npy file through `f`.
fn edit_npy<T: ReadableElement + WritableElement>(path: &Path, f: impl FnOnce(&mut ArrayD<T>)) {
    let mut a: ArrayD<T> = ndarray_npy::read_npy(path).unwrap();
    f(&mut a);
    ndarray_npy::write_npy(path, &a).unwrap();
}

/// A copy of the fixture's model (weights, config, tokenizer; no references) with one weight
/// element changed: a model that is not the references' model in exactly one place.
pub struct NudgedModel {
    pub dir: tempfile::TempDir,
}

impl NudgedModel {
    /// `tensor` in HF's naming without the "transformer." prefix, `index` the flat element.
    pub fn new(tensor: &str, index: usize, by: f32) -> NudgedModel {
        let dir = tempfile::tempdir().unwrap();
        for entry in fs::read_dir(fixture()).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
            }
        }
        let path = dir.path().join("model.safetensors");
        let mut bytes = fs::read(&path).unwrap();
        let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let info = metadata
            .info(&format!("transformer.{tensor}"))
            .or_else(|| metadata.info(tensor))
            .unwrap_or_else(|| panic!("{tensor} is in the fixture"));
        let at = 8 + header_len + info.data_offsets.0 + 4 * index;
        let value = f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) + by;
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        fs::write(&path, bytes).unwrap();
        NudgedModel { dir }
    }
}
