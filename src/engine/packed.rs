//! A weight matrix laid out once, at load, for the kernels of `kernels/`, in one of the weight
//! formats (`format.rs`). Every product with a weight is y = x·W, W [K, N]. W is held in panels
//! of 16 columns, the last panel padded with zeros; panel p holds, for every k in order, the
//! line W[k, 16p .. 16p + 16]:
//! - F32: K lines of 16 float32 (64 bytes, one cache line);
//! - BF16, F16: K lines of 16 halves (32 bytes);
//! - Q8_0: K / 32 blocks, each the 16 columns' F16 scales (32 bytes) and then 32 lines of 16
//!   int8 quants (512 bytes): column j's 32 weights of a block are llama.cpp's block of that
//!   column (its blocks run along K), byte for byte, scattered one byte a line.
//!
//! One layout serves both products of the engine:
//! - the decode step (one row of x) streams every panel front to back, contiguous memory, each
//!   thread its own panels;
//! - a prompt (many rows of x) keeps a panel in cache while every row of x goes past it, 16
//!   outputs per vector register, x[t, k] broadcast.
//!
//! Both sum each output over k in order, one multiply-add at a time in blocks of 64 steps, so a
//! row of a prompt's product is bit for bit the decode step's product of that row (checkpoint
//! 9's invariant, and a KV cache that does not depend on how the prompt was split).

use ndarray::Array2;

use super::format::{Q8_0_BLOCK, Q8Block, WeightFormat, bf16_bits, bf16_value, f16_bits, f16_value};

/// Columns per panel: one AVX-512 register, two AVX2 ones.
pub const PANEL: usize = 16;

/// Bytes of one Q8_0 block of a panel: 16 F16 scales, then 32 lines of 16 int8.
pub const Q8_PANEL_BLOCK: usize = 2 * PANEL + Q8_0_BLOCK * PANEL;

/// Where line k of a panel starts, in bytes from the panel's start, and for Q8_0 where its
/// block's scales are. The one statement of the layout: packing, `get` and the kernels use it.
#[inline(always)]
pub fn line_offset(format: WeightFormat, k: usize) -> (usize, usize) {
    match format {
        WeightFormat::F32 => (k * 4 * PANEL, 0),
        WeightFormat::Bf16 | WeightFormat::F16 => (k * 2 * PANEL, 0),
        WeightFormat::Q8_0 => {
            let block = k / Q8_0_BLOCK * Q8_PANEL_BLOCK;
            (block + 2 * PANEL + k % Q8_0_BLOCK * PANEL, block)
        }
    }
}

/// Bytes of one panel of K lines.
fn panel_bytes(format: WeightFormat, k: usize) -> usize {
    match format {
        WeightFormat::Q8_0 => k / Q8_0_BLOCK * Q8_PANEL_BLOCK,
        _ => line_offset(format, k).0,
    }
}

/// W [K, N] in panels of `PANEL` columns, in a weight format (see the module's comment).
pub struct PackedMatrix {
    bytes: memmap2::MmapMut, // [N / 16 (rounded up)] panels of `panel_bytes`
    format: WeightFormat,
    k: usize,
    n: usize,
}

/// Why a matrix could not be packed (the loader words it, naming the tensor: `Weights::get_packed`).
#[derive(Debug)]
pub enum PackError {
    /// The system refused the memory.
    Memory(std::io::Error),
    /// The format cannot hold a matrix of this K (`WeightFormat::refuses`).
    Shape(String),
    /// W[k, n] (given as `value`) is not finite, as given or once rounded to the format (for
    /// Q8_0: its block's scale is not).
    NotFinite { k: usize, n: usize, value: f32 },
}

/// `bytes` of zeroed memory, in huge pages where the system grants them (Linux's transparent
/// huge pages on request): the kernels stream hundreds of megabytes, and with 4 KiB pages every
/// 64 lines cost a TLB miss. Also the memory of the benchmark's bandwidth probe, so that its
/// floor is measured under the weights' conditions.
pub fn huge_pages(bytes: usize) -> std::io::Result<memmap2::MmapMut> {
    let map = memmap2::MmapMut::map_anon(bytes.max(1))?;
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage); // a hint: without it, 4 KiB pages
    Ok(map)
}

impl PackedMatrix {
    /// W [k, n] with W[i, j] = `value(i, j)` rounded to `format`, filled panel by panel, and
    /// within a panel column by column (`value` is asked for each element once, in that order).
    /// `panel_done(p)` is called once panel p is filled, so that a caller reading a file can let
    /// go of what it has read.
    pub fn from_fn(
        k: usize,
        n: usize,
        format: WeightFormat,
        value: impl Fn(usize, usize) -> f32,
        mut panel_done: impl FnMut(usize),
    ) -> Result<PackedMatrix, PackError> {
        if let Some(why) = format.refuses(k) {
            return Err(PackError::Shape(why));
        }
        let (panels, size) = (n.div_ceil(PANEL), panel_bytes(format, k));
        let mut bytes = huge_pages(panels * size).map_err(PackError::Memory)?;
        let mut column = vec![0.0f32; k];
        for p in 0..panels {
            let panel = &mut bytes[p * size..(p + 1) * size];
            for lane in 0..PANEL.min(n - p * PANEL) {
                let j = p * PANEL + lane;
                column.iter_mut().enumerate().for_each(|(i, v)| *v = value(i, j));
                pack_column(format, &column, panel, lane).map_err(|i| PackError::NotFinite {
                    k: i,
                    n: j,
                    value: column[i],
                })?;
            }
            panel_done(p);
        }
        Ok(PackedMatrix { bytes, format, k, n })
    }

    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// Rows of W (inputs of the product).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of W (outputs of the product).
    pub fn n(&self) -> usize {
        self.n
    }

    pub fn panels(&self) -> usize {
        self.n.div_ceil(PANEL)
    }

    /// The bytes of panels `panels`, one after the other.
    pub fn bytes_of(&self, panels: std::ops::Range<usize>) -> &[u8] {
        let size = panel_bytes(self.format, self.k);
        &self.bytes[panels.start * size..panels.end * size]
    }

    /// Bytes the matrix occupies (the padding of the last panel included).
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// W[i, j], widened to float32 as the kernels widen it.
    pub fn get(&self, i: usize, j: usize) -> f32 {
        let panel = self.bytes_of(j / PANEL..j / PANEL + 1);
        let lane = j % PANEL;
        let (line, scales) = line_offset(self.format, i);
        let half = |at: usize| u16::from_le_bytes([panel[at], panel[at + 1]]);
        match self.format {
            WeightFormat::F32 => {
                let at = line + 4 * lane;
                f32::from_le_bytes(panel[at..at + 4].try_into().expect("4 bytes"))
            }
            WeightFormat::Bf16 => bf16_value(half(line + 2 * lane)),
            WeightFormat::F16 => f16_value(half(line + 2 * lane)),
            WeightFormat::Q8_0 => f16_value(half(scales + 2 * lane)) * f32::from(panel[line + lane] as i8),
        }
    }

    /// A Q8_0 matrix's W[i, j] as its block holds it: (the scale d, widened; the quant q). For
    /// the planted variants that compute with the parts (the engine's kernels read the panels).
    #[cfg(feature = "planted-bugs")]
    pub fn q8_parts(&self, i: usize, j: usize) -> (f32, i8) {
        assert_eq!(self.format, WeightFormat::Q8_0, "a Q8_0 matrix");
        let panel = self.bytes_of(j / PANEL..j / PANEL + 1);
        let (line, scales) = line_offset(self.format, i);
        let at = scales + 2 * (j % PANEL);
        (f16_value(u16::from_le_bytes([panel[at], panel[at + 1]])), panel[line + j % PANEL] as i8)
    }

    /// W as a plain [K, N] float32 array, for code that computes without the kernels (the
    /// kernels' reference in their tests, the planted variants).
    pub fn to_dense(&self) -> Array2<f32> {
        Array2::from_shape_fn((self.k, self.n), |(i, j)| self.get(i, j))
    }
}

/// Writes `column` (K values) into lane `lane` of a panel, rounded to `format`. Err(i): the
/// i-th value is not finite, as given or once rounded (for Q8_0: the scale of its block is not).
fn pack_column(format: WeightFormat, column: &[f32], panel: &mut [u8], lane: usize) -> Result<(), usize> {
    let finite = |i: usize, v: f32| if v.is_finite() { Ok(()) } else { Err(i) };
    // A NaN given must not be rounded first: Q8_0's block scale skips it (f32::max) and its
    // quant casts to 0, so it would pass as a zero weight.
    if let Some(i) = column.iter().position(|v| !v.is_finite()) {
        return Err(i);
    }
    let mut put = |at: usize, bytes: &[u8]| panel[at..at + bytes.len()].copy_from_slice(bytes);
    match format {
        WeightFormat::Q8_0 => {
            for (b, block) in column.as_chunks::<Q8_0_BLOCK>().0.iter().enumerate() {
                let q = Q8Block::quantize(block);
                let first = b * Q8_0_BLOCK;
                if !f16_value(q.scale).is_finite() {
                    // The largest weight of the block: the one that made the scale.
                    let worst = (0..Q8_0_BLOCK).max_by(|&x, &y| block[x].abs().total_cmp(&block[y].abs()));
                    return Err(first + worst.unwrap_or(0));
                }
                let (_, scales) = line_offset(format, first);
                put(scales + 2 * lane, &q.scale.to_le_bytes());
                for (i, &quant) in q.quants.iter().enumerate() {
                    put(line_offset(format, first + i).0 + lane, &[quant as u8]);
                }
            }
        }
        _ => {
            for (i, &v) in column.iter().enumerate() {
                let (at, _) = line_offset(format, i);
                match format {
                    // Finite as given (checked above), so as stored.
                    WeightFormat::F32 => put(at + 4 * lane, &v.to_le_bytes()),
                    WeightFormat::Bf16 => {
                        let bits = bf16_bits(v);
                        finite(i, bf16_value(bits))?;
                        put(at + 2 * lane, &bits.to_le_bytes())
                    }
                    WeightFormat::F16 => {
                        let bits = f16_bits(v);
                        finite(i, f16_value(bits))?;
                        put(at + 2 * lane, &bits.to_le_bytes())
                    }
                    WeightFormat::Q8_0 => unreachable!("Q8_0 is packed by blocks above"),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(k: usize, n: usize, format: WeightFormat, value: impl Fn(usize, usize) -> f32) -> PackedMatrix {
        PackedMatrix::from_fn(k, n, format, value, |_| {}).unwrap()
    }

    #[test]
    fn every_element_is_where_get_finds_it_and_the_padding_is_zero() {
        let (k, n) = (3, 37); // three panels, the last with 5 columns
        let w = pack(k, n, WeightFormat::F32, |i, j| (i * 100 + j) as f32);
        assert_eq!(w.panels(), 3);
        assert_eq!(w.to_dense(), Array2::from_shape_fn((k, n), |(i, j)| (i * 100 + j) as f32));
        let last: &[f32] = bytemuck::cast_slice(w.bytes_of(2..3));
        assert_eq!(last[PANEL..PANEL + 5], [132.0, 133.0, 134.0, 135.0, 136.0]);
        assert!(last.chunks(PANEL).all(|line| line[5..].iter().all(|&v| v == 0.0)));
        assert_eq!(w.bytes_of(0..3).len(), 3 * k * 64);
        assert_eq!(w.bytes_of(0..1).as_ptr() as usize % 64, 0, "panels start on cache lines");
    }

    /// Each format holds what its own rounding makes of every weight (small integers are exact
    /// in all of them), in every column, the partial last panel too.
    #[test]
    fn every_format_holds_its_rounding_of_every_weight() {
        let (k, n) = (64, 21);
        let value = |i: usize, j: usize| ((i * 7 + j * 13) % 97) as f32 / 9.7 - 5.0;
        for format in WeightFormat::ALL {
            let w = pack(k, n, format, value);
            for j in 0..n {
                let column: Vec<f32> = (0..k).map(|i| value(i, j)).collect();
                for i in 0..k {
                    let expected = match format {
                        WeightFormat::F32 => column[i],
                        WeightFormat::Bf16 => bf16_value(bf16_bits(column[i])),
                        WeightFormat::F16 => f16_value(f16_bits(column[i])),
                        WeightFormat::Q8_0 => {
                            let block = column[i / 32 * 32..][..32].try_into().unwrap();
                            Q8Block::quantize(block).value(i % 32)
                        }
                    };
                    assert_eq!(w.get(i, j).to_bits(), expected.to_bits(), "{format} W[{i}, {j}]");
                }
            }
            assert_eq!(w.size(), 2 * format.bytes_of(k * PANEL), "{format}: two panels");
        }
    }

    #[test]
    fn a_weight_the_format_cannot_hold_is_named() {
        let at = |format, big: f32| match PackedMatrix::from_fn(
            64,
            3,
            format,
            |i, j| if (i, j) == (40, 2) { big } else { 0.5 },
            |_| {},
        ) {
            Err(PackError::NotFinite { k, n, value }) => (k, n, value),
            other => panic!("{format}: {:?}", other.map(|_| ())),
        };
        assert_eq!(at(WeightFormat::F16, 1e5), (40, 2, 1e5));
        assert_eq!(at(WeightFormat::Q8_0, 1e10), (40, 2, 1e10), "the scale 1e10/127 overflows F16");
        assert_eq!(at(WeightFormat::F32, f32::NAN).0, 40);
        assert_eq!(at(WeightFormat::Bf16, f32::INFINITY).0, 40);
        assert!(matches!(
            PackedMatrix::from_fn(48, 3, WeightFormat::Q8_0, |_, _| 0.0, |_| {}),
            Err(PackError::Shape(_))
        ));
    }
}
