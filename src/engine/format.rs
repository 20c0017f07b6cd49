//! The formats the engine can hold its weight matrices in, and the one rounding of each: what a
//! float32 weight becomes when the model is loaded in that format. Activations, sums, biases,
//! LayerNorm parameters and the position embeddings stay float32 in every format (as llama.cpp
//! keeps its norms, biases and position embeddings in F32); only the matrices of the products,
//! wte among them (it is both the token embedding and the tied lm_head), are rounded.
//!
//! Every product computes in float32 on the rounded weights: a weight is widened to float32 in
//! registers (exactly: every BF16, F16 and Q8_0 value is a float32) and multiply-added as in the
//! F32 format. So the engine in a format is, bit for bit, the F32 engine on the rounded weights
//! (a test says so), and a reference run in float32 or float64 on the same rounded weights
//! judges its arithmetic with the F32 tolerances.

use std::fmt;
use std::str::FromStr;

use half::f16;

/// How the weight matrices are held. Names as llama.cpp's ggml types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WeightFormat {
    /// 4 bytes a weight, as the checkpoint (F16 and BF16 checkpoints widened exactly).
    #[default]
    F32,
    /// bfloat16: float32's top 16 bits, rounded to nearest, ties to even (torch's conversion).
    Bf16,
    /// IEEE half precision, rounded to nearest, ties to even (torch's and numpy's conversion).
    F16,
    /// llama.cpp's Q8_0: blocks of 32 weights along K (the input dimension), one F16 scale
    /// d = max|w| / 127 each, w ≈ d·q with q = round(w / d) in int8 (ggml's
    /// `quantize_row_q8_0_ref`).
    Q8_0,
}

/// Weights per Q8_0 block (ggml's `QK8_0`).
pub const Q8_0_BLOCK: usize = 32;

impl WeightFormat {
    pub const ALL: [WeightFormat; 4] =
        [WeightFormat::F32, WeightFormat::Bf16, WeightFormat::F16, WeightFormat::Q8_0];

    /// The name on the command line, in manifests and JSON: llama.cpp's type name in lower case.
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Bf16 => "bf16",
            WeightFormat::F16 => "f16",
            WeightFormat::Q8_0 => "q8_0",
        }
    }

    /// Bytes of `count` weights (a multiple of the Q8_0 block for Q8_0): 4, 2, 2 or 34/32.
    pub fn bytes_of(self, count: usize) -> usize {
        match self {
            WeightFormat::F32 => 4 * count,
            WeightFormat::Bf16 | WeightFormat::F16 => 2 * count,
            WeightFormat::Q8_0 => count.div_ceil(Q8_0_BLOCK) * (Q8_0_BLOCK + 2),
        }
    }

    /// Why a matrix with `k` inputs cannot be held in this format, if it cannot: Q8_0's blocks
    /// run along K, so K must be a whole number of them (llama.cpp's converter keeps such a
    /// tensor in F16 instead; llorch says so rather than mixing formats silently).
    pub fn refuses(self, k: usize) -> Option<String> {
        (self == WeightFormat::Q8_0 && !k.is_multiple_of(Q8_0_BLOCK)).then(|| {
            format!("q8_0 needs the input dimension to be a multiple of {Q8_0_BLOCK}, and it is {k}")
        })
    }
}

impl serde::Serialize for WeightFormat {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WeightFormat {
    type Err = String;
    fn from_str(text: &str) -> Result<WeightFormat, String> {
        WeightFormat::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(text.trim())).ok_or_else(|| {
            let names: Vec<&str> = WeightFormat::ALL.iter().map(|f| f.name()).collect();
            format!("{text:?} is no weight format; they are {}", names.join(", "))
        })
    }
}

/// float32 → bfloat16 bits, to nearest, ties to even; a NaN stays a (quiet) NaN.
pub fn bf16_bits(value: f32) -> u16 {
    let bits = value.to_bits();
    if value.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// bfloat16 bits → float32: the top half of its bits (exact).
pub fn bf16_value(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// float32 → IEEE half bits, to nearest, ties to even; beyond ±65504 an infinity.
pub fn f16_bits(value: f32) -> u16 {
    f16::from_f32(value).to_bits()
}

/// IEEE half bits → float32 (exact).
pub fn f16_value(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

/// One Q8_0 block: its scale (F16 bits) and 32 int8 quants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Q8Block {
    pub scale: u16,
    pub quants: [i8; Q8_0_BLOCK],
}

impl Q8Block {
    /// ggml's `quantize_row_q8_0_ref` for one block: d = max|w| / 127 in float32, q = round(w·(1/d))
    /// (half away from zero, C's roundf), the scale stored as d rounded to F16.
    pub fn quantize(block: &[f32; Q8_0_BLOCK]) -> Q8Block {
        let amax = block.iter().fold(0.0f32, |m, w| m.max(w.abs()));
        let d = amax / 127.0;
        let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
        Q8Block { scale: f16_bits(d), quants: std::array::from_fn(|i| (block[i] * inverse).round() as i8) }
    }

    /// The weight the block holds at `i`: d·q, exact in float32 (an 11-bit scale times a
    /// 7-bit integer). The kernels widen whole lines instead (`kernels/widen.rs`); this is the
    /// tests' plain statement of it.
    #[cfg(test)]
    pub fn value(&self, i: usize) -> f32 {
        f16_value(self.scale) * f32::from(self.quants[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for format in WeightFormat::ALL {
            assert_eq!(format.name().parse::<WeightFormat>(), Ok(format));
        }
        assert!("int4".parse::<WeightFormat>().unwrap_err().contains("f32, bf16, f16, q8_0"));
    }

    #[test]
    fn bfloat16_rounds_to_nearest_even() {
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: to the even one, 1.
        assert_eq!(bf16_value(bf16_bits(1.0 + 2f32.powi(-8))), 1.0);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up, to the even one.
        assert_eq!(bf16_value(bf16_bits(1.0 + 3.0 * 2f32.powi(-8))), 1.0 + 2f32.powi(-6));
        assert_eq!(bf16_value(bf16_bits(1.0 + 2f32.powi(-8) + 2f32.powi(-20))), 1.0 + 2f32.powi(-7));
        assert_eq!(bf16_value(bf16_bits(-2.5)), -2.5);
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
        assert_eq!(bf16_value(bf16_bits(f32::MAX)), f32::INFINITY, "rounds up past the largest");
    }

    #[test]
    fn half_precision_overflows_to_infinity() {
        assert_eq!(f16_value(f16_bits(65504.0)), 65504.0);
        assert_eq!(f16_value(f16_bits(70000.0)), f32::INFINITY);
        assert_eq!(f16_value(f16_bits(1.0 + 2f32.powi(-11))), 1.0, "a tie, to even");
    }

    #[test]
    fn q8_0_keeps_the_largest_weight_and_rounds_half_away_from_zero() {
        let mut block = [0.0f32; Q8_0_BLOCK];
        block[..4].copy_from_slice(&[-127.0, 0.5, 2.5, -1.5]); // d = 1: ties at .5
        let q = Q8Block::quantize(&block);
        assert_eq!(q.quants[..4], [-127, 1, 3, -2], "C's roundf, not ties to even");
        assert_eq!(q.value(2), 3.0);
        let mut small = [0.0f32; Q8_0_BLOCK];
        small[0] = 1.27;
        let q = Q8Block::quantize(&small);
        assert_eq!(q.scale, f16_bits(1.27 / 127.0));
        assert_eq!(q.value(0), f16_value(q.scale) * 127.0);
        let zero = Q8Block::quantize(&[0.0; Q8_0_BLOCK]);
        assert_eq!((zero.scale, zero.quants), (0, [0; Q8_0_BLOCK]));
    }

    /// Byte for byte what llama.cpp's quantizer makes of the same weights: fixtures/q8_0 holds
    /// float32 rows (the bundled model's wte and c_fc, random rows at many scales, ties, zeros,
    /// subnormal scales) and gguf-py's Q8_0 blocks of them (scripts/make_q8_0_fixture.py).
    #[test]
    fn q8_0_blocks_are_llama_cpps_byte_for_byte() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/q8_0");
        let rows: ndarray::Array2<f32> = ndarray_npy::read_npy(dir.join("weights.npy")).unwrap();
        let blocks: ndarray::Array2<u8> = ndarray_npy::read_npy(dir.join("blocks.npy")).unwrap();
        assert_eq!(blocks.nrows(), rows.nrows());
        let mut checked = 0;
        for (row, bytes) in rows.rows().into_iter().zip(blocks.rows()) {
            let row = row.to_vec();
            for (b, block) in row.as_chunks::<Q8_0_BLOCK>().0.iter().enumerate() {
                let ours = Q8Block::quantize(block);
                let theirs = &bytes.as_slice().unwrap()[b * 34..(b + 1) * 34];
                let mut mine = ours.scale.to_le_bytes().to_vec();
                mine.extend(ours.quants.iter().map(|&q| q as u8));
                assert_eq!(mine, theirs, "block {b} of {block:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 2 * rows.nrows());
    }
}
