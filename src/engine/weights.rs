//! model.safetensors, memory-mapped. A float32 tensor is a view into the mapping (no copy of the
//! 1.4 GB of gpt2-medium); F16 and BF16 tensors (as many checkpoints are published) are widened
//! to float32 exactly; both HF namings resolve through one lookup. Matrices are packed for the
//! kernels in the weight format asked for (`format.rs`), straight from the file's values.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use memmap2::Mmap;
use ndarray::{ArrayView1, ArrayView2};
use safetensors::{Dtype, SafeTensors};

use super::format::{WeightFormat, bf16_value, f16_value};
use super::packed::{PackError, PackedMatrix};

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
    /// The format the matrices are packed in (`get_packed`).
    format: WeightFormat,
    path: PathBuf,
    map: Arc<Mmap>,
    header_len: usize,
    metadata: safetensors::tensor::Metadata,
    prefix: &'static str,
}

impl Weights {
    /// Opens the file; its matrices will be packed in `format`.
    pub fn open(path: &Path, format: WeightFormat) -> Result<Weights> {
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
        Ok(Weights { format, path: path.to_owned(), map: Arc::new(map), header_len, metadata, prefix })
    }

    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// The same file, its matrices to be packed in `format`.
    pub fn reopened_as(&self, format: WeightFormat) -> Result<Weights> {
        Weights::open(&self.path, format)
    }

    /// The names of the file's tensors, without the "transformer." prefix, with their shapes.
    #[cfg(test)]
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let mut all: Vec<(String, Vec<usize>)> = self
            .metadata
            .tensors()
            .into_iter()
            .filter_map(|(name, info)| {
                Some((name.strip_prefix(self.prefix)?.to_string(), info.shape.clone()))
            })
            .collect();
        all.sort();
        all
    }

    /// Tensor `name` as the engine computes with it, in float32: a matrix the engine packs
    /// (`packed_orientation`) rounded to the format exactly as packing rounds it, any other
    /// tensor as stored. For code that recomputes a stage outside the engine (the diagnosis).
    pub fn as_computed(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        match (packed_orientation(name), shape) {
            (Some(orientation), &[rows, cols]) => {
                let dense = self.get_packed(name, [rows, cols], orientation)?.to_dense();
                Ok(match orientation {
                    Orientation::AsIs => dense.iter().copied().collect(),
                    Orientation::Transposed => dense.t().iter().copied().collect(),
                })
            }
            _ => Ok(self.get(name, shape)?.values().to_vec()),
        }
    }

    /// The tensor `name` in HF's module naming without the "transformer." prefix
    /// (e.g. "h.0.attn.c_attn.weight"), checked to have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Param> {
        let (bytes, dtype) = self.locate(name, shape)?;
        let raw = &self.map[bytes.clone()];
        let storage = if dtype == Dtype::F32
            && cfg!(target_endian = "little")
            && bytemuck::try_cast_slice::<u8, f32>(raw).is_ok()
        {
            Storage::Mapped { map: Arc::clone(&self.map), bytes }
        } else {
            let value = reader(raw, dtype);
            Storage::Owned((0..shape.iter().product()).map(value).collect())
        };
        let param = Param { shape: shape.to_vec(), storage };
        if let Some(at) = param.values().iter().position(|v| !v.is_finite()) {
            let element = match *shape {
                [_, cols] => format!("[{}, {}]", at / cols, at % cols),
                _ => format!("[{at}]"),
            };
            bail!(
                "tensor {:?} in {} holds {} at its element {element}: {NOT_FINITE}",
                format!("{}{name}", self.prefix),
                self.path.display(),
                param.values()[at]
            );
        }
        Ok(param)
    }

    /// The matrix `name` of `shape` [rows, cols], laid out for the kernels (`PackedMatrix`) in
    /// the file's `format` as the W [K, N] of a product y = x·W, read as `orientation` says. The file's
    /// pages are released from this process as the panels are filled, so resident memory holds
    /// one copy of the weights (in the format), not two.
    pub fn get_packed(
        &self,
        name: &str,
        shape: [usize; 2],
        orientation: Orientation,
    ) -> Result<PackedMatrix> {
        let format = self.format;
        let (bytes, dtype) = self.locate(name, &shape)?;
        let (rows, cols) = (shape[0], shape[1]);
        let value = reader(&self.map[bytes.clone()], dtype);
        let full = format!("{}{name}", self.prefix);
        let mut released = bytes.start;
        // Releases the file's pages before `upto` (rounded down to a page, or the mapping's end).
        let mut release = |upto: usize| -> Result<()> {
            let upto = if upto >= self.map.len() { self.map.len() } else { upto / PAGE * PAGE };
            if upto > released {
                // Safety: the mapping is private and read-only; dropping its pages only makes a
                // later read fetch them from the file again (the diagnosis of `llorch validate`
                // may).
                #[cfg(unix)]
                unsafe {
                    self.map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        released,
                        upto - released,
                    )
                }
                .with_context(|| format!("releasing {full}'s pages of {}", self.path.display()))?;
                released = upto;
            }
            Ok(())
        };
        let item = dtype.bitsize() / 8;
        let packed = match orientation {
            Orientation::AsIs => {
                PackedMatrix::from_fn(rows, cols, format, |k, n| value(k * cols + n), |_| {})
            }
            // Panel p holds rows 16p.. of the file's matrix: the file is read front to back, and
            // what the finished panels came from is let go of at once (wte is the largest
            // tensor: its float32 pages would otherwise sit beside its packed copy).
            Orientation::Transposed => PackedMatrix::from_fn(
                cols,
                rows,
                format,
                |k, n| value(n * cols + k),
                |p| {
                    let _ = release(bytes.start + (p + 1) * 16 * cols * item);
                },
            ),
        }
        .map_err(|e| match e {
            PackError::NotFinite { k, n, value } => {
                let (i, j) = match orientation {
                    Orientation::AsIs => (k, n),
                    Orientation::Transposed => (n, k),
                };
                if !value.is_finite() {
                    anyhow::anyhow!(
                        "tensor {full:?} in {} holds {value} at its element [{i}, {j}]: {NOT_FINITE}",
                        self.path.display()
                    )
                } else {
                    anyhow::anyhow!(
                        "tensor {full:?} in {} cannot be held in {format}: its element [{i}, {j}] ({value}) {}",
                        self.path.display(),
                        if format == WeightFormat::Q8_0 {
                            "makes its Q8_0 block's scale infinite or NaN"
                        } else {
                            "is infinite or NaN once converted"
                        }
                    )
                }
            }
            PackError::Shape(why) => {
                anyhow::anyhow!(
                    "tensor {full:?} in {} cannot be held in {format}: {why}",
                    self.path.display()
                )
            }
            PackError::Memory(e) => {
                anyhow::anyhow!(
                    "no memory for {full} ({} bytes in {format}): {e}",
                    format.bytes_of(rows * cols)
                )
            }
        })?;
        release(bytes.end + PAGE - 1)?;
        Ok(packed)
    }

    /// Where tensor `name` lies in the file, checked to be of `shape` and of a dtype llorch
    /// reads (F32, F16, BF16).
    fn locate(&self, name: &str, shape: &[usize]) -> Result<(Range<usize>, Dtype)> {
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
        if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            bail!(
                "tensor {full:?} in {} is {:?}; llorch reads F32, F16 and BF16 checkpoints \
                 (convert with model.float().save_pretrained(DIR))",
                self.path.display(),
                info.dtype
            );
        }
        let (start, end) = info.data_offsets;
        let base = 8 + self.header_len;
        Ok((base + start..base + end, info.dtype))
    }
}

/// How the engine packs tensor `name` (HF naming without the "transformer." prefix), if it is one
/// of the products' matrices: the Conv1D weights as stored, the token embedding transposed (the
/// tied lm_head's W). Every other tensor (wpe, biases, LayerNorm) stays float32 in every format.
pub fn packed_orientation(name: &str) -> Option<Orientation> {
    if name == "wte.weight" {
        Some(Orientation::Transposed)
    } else {
        let conv1d = ["attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"];
        (name.starts_with("h.") && conv1d.iter().any(|m| name.ends_with(m))).then_some(Orientation::AsIs)
    }
}

/// Why a weight that is NaN or infinite in the file is refused, in whatever format it would be
/// run: every output it reaches would be NaN, and rounded to a format it could even pass unseen
/// (Q8_0 quantises a NaN to 0).
const NOT_FINITE: &str = "a weight must be a finite number (is the checkpoint damaged?)";

/// Pages of the mapping, for releasing what has been read (4 KiB on every system llorch runs on;
/// a larger page only makes a release round down further).
const PAGE: usize = 4096;

/// Element i of a tensor's little-endian bytes as float32: F16 and BF16 widened exactly.
fn reader(raw: &[u8], dtype: Dtype) -> impl Fn(usize) -> f32 + '_ {
    move |i| match dtype {
        Dtype::F16 => f16_value(u16::from_le_bytes([raw[2 * i], raw[2 * i + 1]])),
        Dtype::BF16 => bf16_value(u16::from_le_bytes([raw[2 * i], raw[2 * i + 1]])),
        _ => f32::from_le_bytes(raw[4 * i..4 * i + 4].try_into().expect("4 bytes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::{bf16_bits, f16_bits};
    use safetensors::tensor::TensorView;
    use std::collections::HashMap;

    /// Writes float32 tensors, each stored as `dtype` (F32, F16, BF16, or raw F64 bytes).
    fn write(path: &Path, dtype: Dtype, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
        let encode = |v: &[f32]| -> Vec<u8> {
            match dtype {
                Dtype::F16 => v.iter().flat_map(|&x| f16_bits(x).to_le_bytes()).collect(),
                Dtype::BF16 => v.iter().flat_map(|&x| bf16_bits(x).to_le_bytes()).collect(),
                Dtype::F64 => v.iter().flat_map(|&x| f64::from(x).to_le_bytes()).collect(),
                _ => bytemuck::cast_slice(v).to_vec(),
            }
        };
        let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, v)| encode(v)).collect();
        let views: HashMap<String, TensorView<'_>> = tensors
            .iter()
            .zip(&bytes)
            .map(|((n, s, _), b)| (n.to_string(), TensorView::new(dtype, s.clone(), b).unwrap()))
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
            write(&path, Dtype::F32, &[(name, vec![2, 3], vec![1., 2., 3., 4., 5., 6.])]);
            let w = Weights::open(&path, WeightFormat::F32).unwrap();
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

    /// Half-precision checkpoints are read as published: widened exactly, then packed in any
    /// format (to F32 unchanged; to the other formats by that format's rounding of the value).
    #[test]
    fn f16_and_bf16_checkpoints_are_widened_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<f32> = (0..64 * 3).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        for (dtype, widen) in [
            (Dtype::F16, (|v| f16_value(f16_bits(v))) as fn(f32) -> f32),
            (Dtype::BF16, |v| bf16_value(bf16_bits(v))),
        ] {
            let path = dir.path().join(format!("{dtype:?}.safetensors"));
            write(&path, dtype, &[("wte.weight", vec![3, 64], values.clone())]);
            let stored: Vec<f32> = values.iter().map(|&v| widen(v)).collect();
            for format in WeightFormat::ALL {
                let w = Weights::open(&path, format).unwrap();
                assert_eq!(w.get("wte.weight", &[3, 64]).unwrap().values(), stored, "{dtype:?}");
                let packed = w.get_packed("wte.weight", [3, 64], Orientation::Transposed).unwrap();
                let from_f32 =
                    PackedMatrix::from_fn(64, 3, format, |k, n| stored[n * 64 + k], |_| {}).unwrap();
                assert_eq!(packed.to_dense(), from_f32.to_dense(), "{dtype:?} as {format}");
            }
        }
    }

    #[test]
    fn what_cannot_be_converted_is_refused_naming_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let f64s = dir.path().join("f64.safetensors");
        write(&f64s, Dtype::F64, &[("wte.weight", vec![2, 2], vec![1.0; 4])]);
        let opened = Weights::open(&f64s, WeightFormat::F32).unwrap();
        let err = format!("{:#}", opened.get("wte.weight", &[2, 2]).err().expect("F64 is refused"));
        assert!(
            err.contains("\"wte.weight\"") && err.contains("F64") && err.contains("F16 and BF16"),
            "{err}"
        );

        let big = dir.path().join("big.safetensors");
        let mut values = vec![0.5f32; 2 * 32];
        values[32 + 5] = 1e10; // row 1, column 5 of the file's [2, 32]
        write(
            &big,
            Dtype::F32,
            &[("h.0.mlp.c_fc.weight", vec![2, 32], values), ("wte.weight", vec![1], vec![0.0])],
        );
        let err = |orientation, format| {
            let w = Weights::open(&big, format).unwrap();
            format!("{:#}", w.get_packed("h.0.mlp.c_fc.weight", [2, 32], orientation).err().expect("refused"))
        };
        let f16 = err(Orientation::AsIs, WeightFormat::F16);
        assert!(
            f16.contains("h.0.mlp.c_fc.weight") && f16.contains("[1, 5]") && f16.contains("f16"),
            "{f16}"
        );
        let q8 = err(Orientation::Transposed, WeightFormat::Q8_0);
        assert!(q8.contains("[1, 5]") && q8.contains("scale"), "{q8}");
        let shape = err(Orientation::AsIs, WeightFormat::Q8_0); // K = 2
        assert!(shape.contains("multiple of 32"), "{shape}");
    }
}
