//! A reference dump written by scripts/dump_reference.py: manifest.json plus one .npy per
//! tensor. The format is documented in CHECKPOINTS.md ("Reference dump format").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use std::fs::File;

use memmap2::Mmap;
use ndarray::{ArrayD, ArrayViewD};
use ndarray_npy::ViewNpyExt;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::model::Config;

pub const FORMAT: &str = "llorch-reference/1";

#[derive(Debug, Deserialize, Serialize)]
pub struct Manifest {
    pub format: String,
    /// Library versions and settings of the run that made the dump (informational).
    pub generator: BTreeMap<String, serde_json::Value>,
    pub model: ModelInfo,
    pub cases: Vec<Case>,
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

#[derive(Debug, Deserialize, Serialize, Clone)]
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
    /// HF's argmax after the prompt (checkpoint 10), also the token of checkpoint 3's decode step.
    pub next_token: u32,
    pub max_new_tokens: usize,
    /// HF's greedy `generate` (checkpoint 12): the new tokens only, and the decoded full text.
    pub generated_ids: Vec<u32>,
    pub generated_text: Option<String>,
    pub tensors: Vec<TensorEntry>,
}

#[derive(Debug, Deserialize, Serialize, Clone)]
pub struct TensorEntry {
    pub checkpoint: u8,
    pub layer: Option<usize>,
    pub name: String,
    pub file: String,
    pub shape: Vec<usize>,
    pub dtype: String,
}

pub struct Reference {
    pub dir: PathBuf,
    pub manifest: Manifest,
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
            "{} has format {:?}; this llorch reads {FORMAT:?}",
            path.display(),
            manifest.format
        );
        ensure!(!manifest.cases.is_empty(), "{} holds no cases", path.display());
        let reference = Reference { dir: dir.to_owned(), manifest };
        reference.check_files()?;
        Ok(reference)
    }

    /// Every tensor the manifest lists must exist, and every .npy in a case directory must be
    /// listed: a stray file means the directory mixes dumps.
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

    /// Reads one float32 tensor and checks it against its manifest entry.
    pub fn load(&self, entry: &TensorEntry) -> Result<ArrayD<f32>> {
        let path = self.dir.join(&entry.file);
        ensure!(
            entry.dtype == "float32",
            "{}: manifest says dtype {:?}, llorch references are float32",
            path.display(),
            entry.dtype
        );
        // Viewed in place from a mapping: a corrupt header that claims a huge shape is then a
        // length error, not an allocation of that size.
        let file =
            File::open(&path).with_context(|| format!("reading reference tensor {}", path.display()))?;
        // Safety: read-only mapping of a file we do not modify; see Weights::open.
        let map = unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        let array = ArrayViewD::<f32>::view_npy(&map)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("{} is not a float32 .npy file", path.display()))?
            .to_owned();
        ensure!(
            array.shape() == entry.shape.as_slice(),
            "{} has shape {:?}, but the manifest says {:?}",
            path.display(),
            array.shape(),
            entry.shape
        );
        Ok(array)
    }
}

impl Case {
    pub fn tensor(&self, checkpoint: Checkpoint, layer: Option<usize>, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.checkpoint == checkpoint.index() && t.layer == layer && t.name == name)
    }

    /// Like `tensor`, but a missing entry is an error that says what is missing.
    pub fn require(&self, checkpoint: Checkpoint, layer: Option<usize>, name: &str) -> Result<&TensorEntry> {
        self.tensor(checkpoint, layer, name).with_context(|| {
            let at = layer.map(|l| format!(" layer {l}")).unwrap_or_default();
            format!(
                "case {:?} has no reference tensor {name:?} for checkpoint {checkpoint}{at}; \
                 regenerate the dump with scripts/dump_reference.py",
                self.name
            )
        })
    }
}
