//! model.safetensors, memory-mapped. A float32 tensor is a view into the mapping (no copy of the
//! 1.4 GB of gpt2-medium); both HF namings resolve through one lookup.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use memmap2::Mmap;
use ndarray::{ArrayView1, ArrayView2};
use safetensors::{Dtype, SafeTensors};

use super::packed::PackedMatrix;

/// One weight tensor: where its float32 values are, and its shape.
pub struct Param {
    shape: Vec<usize>,
    storage: Storage,
}

enum Storage {
    /// Aligned little-endian float32 bytes inside the mapping: read in place.
    Mapped { map: Arc<Mmap>, bytes: Range<usize> },
    /// A copy, only for data that cannot be read in place (misaligned in the file).
    Owned(Vec<f32>),
}

/// How a matrix in the file relates to the W [K, N] of the product y = x·W it serves.
#[derive(Clone, Copy)]
pub enum Orientation {
    /// Stored as W [K, N] itself: HF's Conv1D.
    AsIs,
    /// Stored as Wᵀ [N, K]: the token embedding [V, C], which the tied lm_head multiplies by
    /// as wteᵀ.
    Transposed,
}

impl Param {
    pub fn values(&self) -> &[f32] {
        match &self.storage {
            // Alignment and length were checked when the Param was made.
            Storage::Mapped { map, bytes } => bytemuck::cast_slice(&map[bytes.clone()]),
            Storage::Owned(v) => v,
        }
    }

    pub fn view1(&self) -> ArrayView1<'_, f32> {
        ArrayView1::from(self.values())
    }

    pub fn view2(&self) -> ArrayView2<'_, f32> {
        let (rows, cols) = (self.shape[0], self.shape[1]);
        ArrayView2::from_shape((rows, cols), self.values()).expect("shape checked at load")
    }
}

/// An opened model.safetensors. `prefix` is "transformer." for files written by HF's
/// `save_pretrained`, "" for the published gpt2 checkpoints.
pub struct Weights {
    path: PathBuf,
    map: Arc<Mmap>,
    header_len: usize,
    metadata: safetensors::tensor::Metadata,
    prefix: &'static str,
}

impl Weights {
    pub fn open(path: &Path) -> Result<Weights> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // Safety: the mapping is read-only; like every mmap user we rely on nobody truncating
        // the file while llorch runs.
        let map = unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        let (header_len, metadata) = SafeTensors::read_metadata(&map)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
        let names = metadata.tensors();
        let prefix = if names.contains_key("transformer.wte.weight") {
            "transformer."
        } else if names.contains_key("wte.weight") {
            ""
        } else {
            bail!(
                "{} holds no GPT-2 token embedding: neither \"transformer.wte.weight\" nor \
                 \"wte.weight\" is in it",
                path.display()
            );
        };
        Ok(Weights { path: path.to_owned(), map: Arc::new(map), header_len, metadata, prefix })
    }

    /// The tensor `name` in HF's module naming without the "transformer." prefix
    /// (e.g. "h.0.attn.c_attn.weight"), checked to have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Param> {
        let bytes = self.locate(name, shape)?;
        let raw = &self.map[bytes.clone()];
        let storage = if cfg!(target_endian = "little") && bytemuck::try_cast_slice::<u8, f32>(raw).is_ok() {
            Storage::Mapped { map: Arc::clone(&self.map), bytes }
        } else {
            Storage::Owned(
                raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            )
        };
        Ok(Param { shape: shape.to_vec(), storage })
    }

    /// The matrix `name` of `shape` [rows, cols], laid out for the kernels (`PackedMatrix`) as
    /// the W [K, N] of a product y = x·W, read as `orientation` says. The file's pages it was
    /// read from are released from this process, so resident memory holds one copy of the
    /// weights, not two.
    pub fn get_packed(
        &self,
        name: &str,
        shape: [usize; 2],
        orientation: Orientation,
    ) -> Result<PackedMatrix> {
        let bytes = self.locate(name, &shape)?;
        let (rows, cols) = (shape[0], shape[1]);
        let raw = &self.map[bytes.clone()];
        let value = |i: usize| f32::from_le_bytes(raw[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        let packed = match orientation {
            Orientation::AsIs => PackedMatrix::from_fn(rows, cols, |k, n| value(k * cols + n)),
            Orientation::Transposed => PackedMatrix::from_fn(cols, rows, |k, n| value(n * cols + k)),
        }
        .with_context(|| format!("memory for {name} ({} bytes)", 4 * rows * cols))?;
        // Safety: the mapping is private and read-only; dropping its pages only makes a later
        // read fetch them from the file again (the diagnosis of `llorch validate` may).
        #[cfg(unix)]
        unsafe {
            self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, bytes.start, bytes.len())
        }
        .with_context(|| format!("releasing {name}'s pages of {}", self.path.display()))?;
        Ok(packed)
    }

    /// Where tensor `name` lies in the file, checked to be float32 of `shape`.
    fn locate(&self, name: &str, shape: &[usize]) -> Result<Range<usize>> {
        let full = format!("{}{name}", self.prefix);
        let info = self
            .metadata
            .info(&full)
            .with_context(|| format!("tensor {full:?} is missing from {}", self.path.display()))?;
        ensure!(
            info.shape == shape,
            "tensor {full:?} in {} has shape {:?}, expected {shape:?} from config.json",
            self.path.display(),
            info.shape
        );
        if info.dtype != Dtype::F32 {
            bail!(
                "tensor {full:?} in {} is {:?}; llorch computes in float32 and reads F32 \
                 checkpoints only (convert with model.float().save_pretrained(DIR))",
                self.path.display(),
                info.dtype
            );
        }
        let (start, end) = info.data_offsets;
        let base = 8 + self.header_len;
        Ok(base + start..base + end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;
    use std::collections::HashMap;

    fn write(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
        let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, v)| bytemuck::cast_slice(v).to_vec()).collect();
        let views: HashMap<String, TensorView<'_>> = tensors
            .iter()
            .zip(&bytes)
            .map(|((n, s, _), b)| (n.to_string(), TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    }

    #[test]
    fn both_namings_resolve_to_the_same_tensor() {
        let dir = tempfile::tempdir().unwrap();
        for (file, name) in
            [("hf.safetensors", "transformer.wte.weight"), ("openai.safetensors", "wte.weight")]
        {
            let path = dir.path().join(file);
            write(&path, &[(name, vec![2, 3], vec![1., 2., 3., 4., 5., 6.])]);
            let w = Weights::open(&path).unwrap();
            let p = w.get("wte.weight", &[2, 3]).unwrap();
            assert_eq!(p.view2()[[1, 2]], 6.0);
            let t = w.get_packed("wte.weight", [2, 3], Orientation::Transposed).unwrap();
            assert_eq!(t.to_dense(), p.view2().t());
            let a = w.get_packed("wte.weight", [2, 3], Orientation::AsIs).unwrap();
            assert_eq!(a.to_dense(), p.view2());
            assert!(w.get("wte.weight", &[3, 2]).is_err(), "wrong shape must be refused");
            assert!(w.get("wpe.weight", &[1]).is_err(), "missing tensor must be refused");
        }
    }
}
