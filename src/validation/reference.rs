//! A reference dump written by scripts/dump_reference.py (or any engine that writes the same
//! format): manifest.json plus one .npy per tensor, float32 or float64. The format is
//! documented in CHECKPOINTS.md ("Reference dump format").

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use memmap2::Mmap;
use ndarray::{ArrayD, ArrayViewD};
use ndarray_npy::ViewNpyExt;
use serde::{Deserialize, Serialize};

use crate::engine::{Config, WeightFormat};
use crate::validation::spec::{Checkpoint, Phase};

/// Version 2 added the decode step's tensors (`phase`) and float64 dumps.
pub const FORMAT: &str = "llorch-reference/2";

#[derive(Debug, Deserialize, Serialize)]
pub struct Manifest {
    pub format: String,
    /// Library versions and settings of the run that made the dump (informational).
    pub generator: BTreeMap<String, serde_json::Value>,
    pub model: ModelInfo,
    /// Tensors the engine that made the dump has no counterpart for (llama.cpp has no tensor
    /// of checkpoint 11, say), each with the reason: their checks leave this dump out. Any
    /// other missing tensor is an error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omitted: Vec<Omitted>,
    /// Set in a corpus dump (`dump_reference.py --corpus`): its cases are the corpus's windows,
    /// each holding only every position's logits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus: Option<CorpusInfo>,
    pub cases: Vec<Case>,
}

/// How a corpus dump cut its text: consecutive windows of `window` tokens from the start, the
/// tokens after the last whole window dropped.
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq)]
pub struct CorpusInfo {
    /// The text file's name.
    pub file: String,
    pub window: usize,
    pub windows: usize,
    /// The tokens the dump's tokenizer made of the text (after --max-tokens).
    pub tokens: usize,
}

/// A tensor a dump leaves out on purpose, in every case.
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq)]
pub struct Omitted {
    pub phase: Phase,
    pub checkpoint: u8,
    pub name: String,
    pub reason: String,
}

impl From<&Config> for ModelInfo {
    fn from(c: &Config) -> ModelInfo {
        ModelInfo {
            n_layer: c.n_layer,
            n_head: c.n_head,
            n_embd: c.n_embd,
            n_positions: c.n_positions,
            vocab_size: c.vocab_size,
            layer_norm_epsilon: c.layer_norm_epsilon,
            n_inner: c.n_inner,
        }
    }
}

/// The model sizes the dump was made with; must equal the model being validated.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
pub struct ModelInfo {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub n_positions: usize,
    pub vocab_size: usize,
    pub layer_norm_epsilon: f64,
    pub n_inner: usize,
}

#[derive(Debug, Deserialize, Serialize, Clone, PartialEq)]
pub struct SamplingSettings {
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct Case {
    pub name: String,
    pub prompt: Option<String>,
    pub token_ids: Vec<u32>,
    /// The settings checkpoint 11's probabilities were filtered with.
    pub sampling: SamplingSettings,
    /// HF's argmax after the prompt (checkpoint 10), also the token of the decode step.
    pub next_token: u32,
    pub max_new_tokens: usize,
    /// HF's greedy `generate` (checkpoint 12): the new tokens only, and the decoded full text.
    pub generated_ids: Vec<u32>,
    pub generated_text: Option<String>,
    pub tensors: Vec<TensorEntry>,
}

#[derive(Debug, Deserialize, Serialize, Clone)]
pub struct TensorEntry {
    /// The prompt's pass or the decode step after it.
    pub phase: Phase,
    pub checkpoint: u8,
    pub layer: Option<usize>,
    pub name: String,
    pub file: String,
    pub shape: Vec<usize>,
    pub dtype: String,
}

/// A reference tensor as the dump stores it.
pub enum Tensor {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
}

impl Tensor {
    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32(a) => a.shape(),
            Tensor::F64(a) => a.shape(),
        }
    }
}

/// The float precision a dump was computed in: a float64 dump is the truth of the accuracy
/// verdict, a float32 one a peer of our engine. A bfloat16 or float16 dump (PyTorch run at that
/// precision, its values widened to float32 files) is no reference of correct arithmetic but the
/// yardstick of `llorch cost`: what the precision costs an engine users know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    Float32,
    Float64,
    Bfloat16,
    Float16,
}

impl Precision {
    /// The manifest's `generator.dtype` name.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Float32 => "float32",
            Precision::Float64 => "float64",
            Precision::Bfloat16 => "bfloat16",
            Precision::Float16 => "float16",
        }
    }

    /// The dtype of the dump's .npy files: numpy has no bfloat16, and both reduced precisions
    /// widen exactly to float32.
    pub fn file_dtype(self) -> &'static str {
        match self {
            Precision::Float64 => "float64",
            _ => "float32",
        }
    }

    /// The precision of a manifest's `generator.dtype` name, if it is one.
    pub fn from_name(name: &str) -> Option<Precision> {
        [Precision::Float32, Precision::Float64, Precision::Bfloat16, Precision::Float16]
            .into_iter()
            .find(|p| p.name() == name)
    }

    /// Whether the dump computed at a precision below float32: a yardstick, not a reference.
    pub fn is_reduced(self) -> bool {
        matches!(self, Precision::Bfloat16 | Precision::Float16)
    }
}

pub struct Reference {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// `generator.weights_as` of a manifest's generator: the format whose rounding the dump's weights
/// had, F32 when absent.
pub fn weights_as(generator: &BTreeMap<String, serde_json::Value>) -> Result<WeightFormat, String> {
    match generator.get("weights_as") {
        None => Ok(WeightFormat::F32),
        Some(serde_json::Value::String(name)) => name.parse(),
        Some(other) => Err(format!("is {other}, not a format's name")),
    }
}

impl Reference {
    pub fn open(dir: &Path) -> Result<Reference> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading reference manifest {}", path.display()))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid llorch reference manifest", path.display()))?;
        ensure!(
            manifest.format == FORMAT,
            "{} has format {:?}; this llorch reads {FORMAT:?}: regenerate the dump with \
             scripts/dump_reference.py",
            path.display(),
            manifest.format
        );
        ensure!(!manifest.cases.is_empty(), "{} holds no cases", path.display());
        let reference = Reference { dir: dir.to_owned(), manifest };
        reference.check_files()?;
        Ok(reference)
    }

    /// The precision of the dump: the manifest's `generator.dtype`, "float32" when absent (dumps
    /// made before float64 ones existed). Every tensor entry must agree with it.
    pub fn precision(&self) -> Result<Precision> {
        let dtype = self.manifest.generator.get("dtype").and_then(|v| v.as_str()).unwrap_or("float32");
        let Some(precision) = Precision::from_name(dtype) else {
            bail!(
                "{}: generator.dtype is {dtype:?}; llorch reads float32, float64, bfloat16 and float16 dumps",
                self.dir.join("manifest.json").display()
            )
        };
        let file_dtype = precision.file_dtype();
        for case in &self.manifest.cases {
            if let Some(entry) = case.tensors.iter().find(|t| t.dtype != file_dtype) {
                bail!(
                    "{}: {} has dtype {:?} in a {dtype} dump, whose files are {file_dtype}",
                    self.dir.join("manifest.json").display(),
                    entry.file,
                    entry.dtype
                );
            }
        }
        Ok(precision)
    }

    /// The rounding of the weights the dump was made on: the manifest's `generator.weights_as`
    /// (a weight format's name), "f32" when absent (the checkpoint's weights as they are).
    pub fn weights_as(&self) -> Result<WeightFormat> {
        weights_as(&self.manifest.generator).map_err(|e| {
            anyhow::anyhow!("{}: generator.weights_as {e}", self.dir.join("manifest.json").display())
        })
    }

    /// A short name for tables: the manifest's `generator.name` ("pytorch-f32"), else the
    /// directory's name.
    pub fn label(&self) -> String {
        match self.manifest.generator.get("name").and_then(|v| v.as_str()) {
            Some(name) if !name.trim().is_empty() => name.trim().to_string(),
            _ => self.dir_name(),
        }
    }

    pub fn dir_name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.dir.display().to_string())
    }

    /// Every tensor the manifest lists must exist inside the reference directory, and every .npy
    /// in a case directory must be listed: a stray file means the directory mixes dumps.
    fn check_files(&self) -> Result<()> {
        for case in &self.manifest.cases {
            ensure!(
                !case.name.is_empty() && !case.name.contains(['/', '\\']) && case.name != "..",
                "case name {:?} in {} is not a plain directory name",
                case.name,
                self.dir.display()
            );
            let mut listed = std::collections::HashSet::new();
            for entry in &case.tensors {
                self.check_inside(&entry.file)?;
                let path = self.dir.join(&entry.file);
                ensure!(
                    path.is_file(),
                    "{} lists {}, which does not exist",
                    self.dir.join("manifest.json").display(),
                    path.display()
                );
                listed.insert(path);
            }
            let case_dir = self.dir.join(&case.name);
            if let Ok(files) = std::fs::read_dir(&case_dir) {
                for file in files {
                    let path = file.with_context(|| format!("listing {}", case_dir.display()))?.path();
                    if path.extension().is_some_and(|e| e == "npy") && !listed.contains(&path) {
                        bail!(
                            "{} is not listed in {}: the directory mixes dumps; regenerate it",
                            path.display(),
                            self.dir.join("manifest.json").display()
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// A manifest's `file` is a path relative to the reference directory, and stays inside it:
    /// `../../etc/hostname` or an absolute path is refused before anything is opened.
    fn check_inside(&self, file: &str) -> Result<()> {
        let path = Path::new(file);
        let plain = path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        ensure!(
            plain && !file.is_empty(),
            "{} lists the file {file:?}, which is outside the reference directory {}: a manifest \
             may only name files inside its own directory",
            self.dir.join("manifest.json").display(),
            self.dir.display()
        );
        Ok(())
    }

    /// Refuses a dump made for a model of other sizes: its numbers would mean nothing here.
    pub fn check_model(&self, config: &Config) -> Result<()> {
        let ours = ModelInfo::from(config);
        if ours != self.manifest.model {
            bail!(
                "the reference in {} was made for another model: manifest has {:?}, the model's \
                 config.json has {:?}",
                self.dir.display(),
                self.manifest.model,
                ours
            );
        }
        for case in &self.manifest.cases {
            let ids = case.token_ids.iter().chain(&case.generated_ids).chain([&case.next_token]);
            if let Some(bad) = ids.copied().find(|&id| id as usize >= config.vocab_size) {
                bail!(
                    "case {:?} in {} has token id {bad}, outside the model's vocabulary of {}",
                    case.name,
                    self.dir.display(),
                    config.vocab_size
                );
            }
        }
        Ok(())
    }

    /// Why the dump leaves out `name` of `checkpoint` in `phase`, if it does on purpose.
    pub fn omits(&self, phase: Phase, checkpoint: Checkpoint, name: &str) -> Option<&Omitted> {
        self.manifest
            .omitted
            .iter()
            .find(|o| o.phase == phase && o.checkpoint == checkpoint.index() && o.name == name)
    }

    /// The case called `name`, or every case when `name` is None.
    pub fn cases(&self, name: Option<&str>) -> Result<Vec<&Case>> {
        match name {
            None => Ok(self.manifest.cases.iter().collect()),
            Some(n) => match self.manifest.cases.iter().find(|c| c.name == n) {
                Some(c) => Ok(vec![c]),
                None => {
                    let known: Vec<&str> = self.manifest.cases.iter().map(|c| c.name.as_str()).collect();
                    bail!("no case {n:?} in {}; it has {known:?}", self.dir.display())
                }
            },
        }
    }

    /// Reads one tensor (float32 or float64, as its manifest entry says) and checks it against
    /// its entry.
    pub fn load(&self, entry: &TensorEntry) -> Result<Tensor> {
        let path = self.dir.join(&entry.file);
        // Viewed in place from a mapping: a corrupt header that claims a huge shape is then a
        // length error, not an allocation of that size.
        let file =
            File::open(&path).with_context(|| format!("reading reference tensor {}", path.display()))?;
        // Safety: read-only mapping of a file we do not modify; see Weights::open.
        let map = unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        let not_npy = || format!("{} is not a {} .npy file", path.display(), entry.dtype);
        let tensor = match entry.dtype.as_str() {
            "float32" => Tensor::F32(
                ArrayViewD::<f32>::view_npy(&map)
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(not_npy)?
                    .to_owned(),
            ),
            "float64" => Tensor::F64(
                ArrayViewD::<f64>::view_npy(&map)
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(not_npy)?
                    .to_owned(),
            ),
            other => {
                bail!("{}: manifest says dtype {other:?}; llorch reads float32 and float64", path.display())
            }
        };
        ensure!(
            tensor.shape() == entry.shape.as_slice(),
            "{} has shape {:?}, but the manifest says {:?}",
            path.display(),
            tensor.shape(),
            entry.shape
        );
        Ok(tensor)
    }
}

impl Case {
    pub fn tensor(
        &self,
        phase: Phase,
        checkpoint: Checkpoint,
        layer: Option<usize>,
        name: &str,
    ) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| {
            t.phase == phase && t.checkpoint == checkpoint.index() && t.layer == layer && t.name == name
        })
    }

    /// Like `tensor`, but a missing entry is an error that says what is missing.
    pub fn require(
        &self,
        phase: Phase,
        checkpoint: Checkpoint,
        layer: Option<usize>,
        name: &str,
    ) -> Result<&TensorEntry> {
        self.tensor(phase, checkpoint, layer, name).with_context(|| {
            let at = layer.map(|l| format!(" layer {l}")).unwrap_or_default();
            format!(
                "case {:?} has no reference tensor {name:?} for checkpoint {checkpoint}{at} ({phase}); \
                 regenerate the dump with scripts/dump_reference.py",
                self.name
            )
        })
    }
}
