//! A weight matrix laid out once, at load, for the kernels of `kernels/`. Every product with
//! a weight is y = x·W, W [K, N]. W is held in panels of 16 columns: panel p is K cache lines,
//! line k holding W[k, 16p .. 16p + 16] (the last panel padded with zeros). One layout serves
//! both products of the engine:
//! - the decode step (one row of x) streams every panel front to back, contiguous memory, each
//!   thread its own panels;
//! - a prompt (many rows of x) keeps a panel in cache while every row of x goes past it, 16
//!   outputs per vector register, x[t, k] broadcast.
//!
//! Both sum each output over k in order, one multiply-add at a time in blocks of 64 steps, so a
//! row of a prompt's product is bit for bit the decode step's product of that row (checkpoint
//! 9's invariant, and a KV cache that does not depend on how the prompt was split).

use ndarray::Array2;

/// Columns per panel: one AVX-512 register, two AVX2 ones.
pub const PANEL: usize = 16;

/// 16 float32 on a 64-byte boundary: one line of a panel, one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct Line(pub [f32; PANEL]);

// Safety: 16 float32 fill the 64 bytes exactly: no padding, and every bit pattern is valid.
unsafe impl bytemuck::Zeroable for Line {}
// Safety: as Zeroable: plain old data, Copy, 'static.
unsafe impl bytemuck::Pod for Line {}

/// W [K, N] in panels of `PANEL` columns (see the module's comment).
pub struct PackedMatrix {
    lines: Lines, // [N / 16 (rounded up), K] lines of 16
    k: usize,
    n: usize,
}

/// Zeroed memory for the lines, in huge pages where the system grants them (Linux's
/// transparent huge pages on request): the kernels stream hundreds of megabytes, and with 4 KiB
/// pages every 64 lines cost a TLB miss.
struct Lines(memmap2::MmapMut);

impl Lines {
    fn zeroed(count: usize) -> std::io::Result<Lines> {
        Ok(Lines(huge_pages(count * size_of::<Line>())?))
    }
}

/// `bytes` of zeroed memory, in huge pages where the system grants them. Also the memory of the
/// benchmark's bandwidth probe, so that its floor is measured under the weights' conditions.
pub fn huge_pages(bytes: usize) -> std::io::Result<memmap2::MmapMut> {
    let map = memmap2::MmapMut::map_anon(bytes.max(1))?;
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage); // a hint: without it, 4 KiB pages
    Ok(map)
}

impl std::ops::Deref for Lines {
    type Target = [Line];
    fn deref(&self) -> &[Line] {
        bytemuck::cast_slice(&self.0[..self.0.len() / size_of::<Line>() * size_of::<Line>()])
    }
}

impl std::ops::DerefMut for Lines {
    fn deref_mut(&mut self) -> &mut [Line] {
        let len = self.0.len() / size_of::<Line>() * size_of::<Line>();
        bytemuck::cast_slice_mut(&mut self.0[..len])
    }
}

impl PackedMatrix {
    /// W [k, n] with W[i, j] = `value(i, j)`, filled panel by panel. Fails only when the system
    /// refuses the memory.
    pub fn from_fn(k: usize, n: usize, value: impl Fn(usize, usize) -> f32) -> std::io::Result<PackedMatrix> {
        let panels = n.div_ceil(PANEL);
        let mut lines = Lines::zeroed(panels * k)?;
        for (p, panel) in lines.chunks_exact_mut(k.max(1)).enumerate().take(panels) {
            for (i, line) in panel.iter_mut().enumerate() {
                for (lane, v) in line.0.iter_mut().enumerate().take(n - (p * PANEL).min(n)) {
                    *v = value(i, p * PANEL + lane);
                }
            }
        }
        Ok(PackedMatrix { lines, k, n })
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

    /// The panels `panels`, one after the other: K lines of 16 floats each, contiguous.
    pub fn lines_of(&self, panels: std::ops::Range<usize>) -> &[Line] {
        &self.lines[panels.start * self.k..panels.end * self.k]
    }

    /// W[i, j].
    pub fn get(&self, i: usize, j: usize) -> f32 {
        self.lines[j / PANEL * self.k + i].0[j % PANEL]
    }

    /// W as a plain [K, N] array, for code that computes without the kernels (the kernels'
    /// reference in their tests).
    pub fn to_dense(&self) -> Array2<f32> {
        Array2::from_shape_fn((self.k, self.n), |(i, j)| self.get(i, j))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_is_where_get_finds_it_and_the_padding_is_zero() {
        let (k, n) = (3, 37); // three panels, the last with 5 columns
        let w = PackedMatrix::from_fn(k, n, |i, j| (i * 100 + j) as f32).unwrap();
        assert_eq!(w.panels(), 3);
        assert_eq!(w.to_dense(), Array2::from_shape_fn((k, n), |(i, j)| (i * 100 + j) as f32));
        let last = w.lines_of(2..3);
        assert_eq!(last[1].0[..5], [132.0, 133.0, 134.0, 135.0, 136.0]);
        assert!(last.iter().all(|line| line.0[5..].iter().all(|&v| v == 0.0)));
        assert_eq!(w.lines_of(0..3).len(), 3 * k);
        assert_eq!(w.lines_of(0..1).as_ptr() as usize % 64, 0, "lines start on cache lines");
    }
}
