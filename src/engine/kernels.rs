//! The products y = x·W (+ a bias, added as the sums are stored) of the engine, W a
//! `PackedMatrix` (panels of 16 columns, laid out at load). Every output is summed over k in
//! order, one multiply-add at a time, in blocks of `BLOCK` steps, by the same tile whatever the
//! number of rows of x: a row of a prompt's product is bit for bit the decode step's product of
//! that row. Two entries:
//! - `gemv`, one row (the decode step), where the time is reading W from memory: four panels
//!   at a time;
//! - `gemm`, many rows (a prompt), where the time is multiply-adds: a pair of panels stays in
//!   cache while x goes past it twelve rows at a time, 24 accumulators in AVX-512 registers,
//!   x[t, k] broadcast, the next pair prefetched meanwhile.
//!
//! Both share the panels out between the threads of the team (`team.rs`), each streaming its
//! own slab.
//!
//! SIMD is chosen at run time: AVX-512, AVX2 (both with fused multiply-adds), or portable code
//! (separate multiply and add) that LLVM vectorises for the baseline target. One machine makes
//! the same choice for every product. `reference_matmul` beside it is the plain definition the
//! kernels are tested against, as llm.c keeps its reference kernels.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{ArrayView2, ArrayViewMut2};

use super::math::Simd;
use super::packed::{PANEL, PackedMatrix};

/// y[N] = x[K]·W (+ bias[N]): the decode step's product. Allocates nothing.
pub fn gemv(x: &[f32], w: &PackedMatrix, bias: Option<&[f32]>, y: &mut [f32]) {
    gemv_with(Kernels::detect().one_row, x, w, bias, y)
}

fn gemv_with(kernel: Kernel, x: &[f32], w: &PackedMatrix, bias: Option<&[f32]>, y: &mut [f32]) {
    assert_eq!(x.len(), w.k(), "x has K elements");
    assert_eq!(y.len(), w.n(), "y has N elements");
    let x = Rows { at: x.as_ptr(), stride: w.k(), rows: 1 };
    let out = Out { at: y.as_mut_ptr(), stride: w.n(), bias: bias_of(bias, w) };
    // Safety: x and y hold one row of K and N floats, the bias N or none.
    unsafe { share_out(kernel, x, w, out) }
}

/// y[M, N] = x[M, K]·W (+ bias[N] on every row) for many rows (a prompt, the full logits). y may
/// be a view with any row stride, its rows contiguous.
pub fn gemm(x: ArrayView2<'_, f32>, w: &PackedMatrix, bias: Option<&[f32]>, y: ArrayViewMut2<'_, f32>) {
    gemm_with(Kernels::detect().many_rows, x, w, bias, y)
}

fn gemm_with(
    kernel: Kernel,
    x: ArrayView2<'_, f32>,
    w: &PackedMatrix,
    bias: Option<&[f32]>,
    mut y: ArrayViewMut2<'_, f32>,
) {
    let (m, k) = x.dim();
    assert_eq!(k, w.k(), "inner dimensions");
    assert_eq!(y.dim(), (m, w.n()), "the output's shape");
    if m == 0 {
        return;
    }
    let x = x.as_standard_layout();
    assert!(y.ncols() < 2 || y.strides()[1] == 1, "the output's rows are contiguous");
    let rows = Rows { at: x.as_ptr(), stride: k, rows: m };
    let out = Out { at: y.as_mut_ptr(), stride: y.strides()[0].max(0) as usize, bias: bias_of(bias, w) };
    // Safety: x and y are the views checked above.
    unsafe { share_out(kernel, rows, w, out) }
}

/// Runs `kernel` over all of W's panels on the team's threads (`team.rs`). The panels are cut
/// into one slab per thread, which each thread streams from its front, so that the next panels
/// it prefetches are the ones it takes next; a thread done with its own takes runs of panels
/// from the back of the others', so that one the machine slowed down (two cores, shared) is not
/// waited for. (Taking runs from one shared queue instead measured ~12% slower for the decode
/// step: each thread's reads then jump instead of streaming.) Allocates nothing.
///
/// Safety: x holds `x.rows` rows of W's K floats; y has room for those rows of W's N floats.
unsafe fn share_out(kernel: Kernel, x: Rows, w: &PackedMatrix, y: Out) {
    let team = super::team::team();
    let parts = team.size();
    let panels = w.panels();
    let per_part = panels.div_ceil(parts).max(1);
    let run = (per_part / 8).max(4); // panels taken at a time
    thread_local! {
        // Kept from one product to the next: the decode step allocates nothing here.
        static SLABS: std::cell::RefCell<Vec<Slab>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SLABS.with_borrow_mut(|slabs| {
        slabs.resize_with(parts, || Slab::new(0, 0));
        for (p, slab) in slabs.iter().enumerate() {
            slab.reset((p * per_part).min(panels), ((p + 1) * per_part).min(panels));
        }
        // Safety (every call of `kernel`): x and y as the caller promised; every run of panels
        // is taken from its slab once, by one thread, so the threads write disjoint columns of
        // y.
        team.run(&|part| {
            while let Some(run) = slabs[part].take_front(run) {
                unsafe { kernel(x, w, run, y) };
            }
            for other in (1..parts).map(|i| (part + i) % parts) {
                while let Some(run) = slabs[other].take_back(run / 4 + 1) {
                    unsafe { kernel(x, w, run, y) };
                }
            }
        });
    });
}

/// The plain definition: y[t, n] = Σ_k x[t, k]·W[k, n], summed in float64 (for the tests).
#[cfg(test)]
pub fn reference_matmul(x: ArrayView2<'_, f32>, w: &PackedMatrix) -> ndarray::Array2<f32> {
    let dense = w.to_dense().mapv(f64::from);
    x.mapv(f64::from).dot(&dense).mapv(|v| v as f32)
}

/// The rows of x a kernel reads: `rows` rows of K floats, `stride` floats apart.
#[derive(Clone, Copy)]
struct Rows {
    at: *const f32,
    stride: usize,
    rows: usize,
}

/// Where a kernel writes y: row t at `at + t·stride`, N floats; each the sum plus `bias` (N
/// floats) unless that is null. Adding the bias as the sum is stored is the same float32
/// addition as adding it afterwards, without another pass over y.
#[derive(Clone, Copy)]
struct Out {
    at: *mut f32,
    stride: usize,
    bias: *const f32,
}

fn bias_of(bias: Option<&[f32]>, w: &PackedMatrix) -> *const f32 {
    bias.map_or(std::ptr::null(), |b| {
        assert_eq!(b.len(), w.n(), "the bias has N elements");
        b.as_ptr()
    })
}

// Safety: shared with the threads of one product only, which read x and write disjoint columns
// of y while the caller's borrows of both are held.
unsafe impl Send for Rows {}
unsafe impl Sync for Rows {}
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// y[.., panels] = x·W[.., panels] for every row of x.
type Kernel = unsafe fn(Rows, &PackedMatrix, Range<usize>, Out);

/// A set of kernels for one row and for many, compiled for one kind of CPU.
#[derive(Clone, Copy)]
struct Kernels {
    one_row: Kernel,
    many_rows: Kernel,
}

impl Kernels {
    /// The fastest set this CPU runs.
    fn detect() -> Kernels {
        Kernels::for_unit(Simd::best())
    }

    /// The set compiled for a vector unit (`math::Simd` knows which units the CPU runs; the
    /// tests check every one).
    fn for_unit(unit: Simd) -> Kernels {
        match unit {
            Simd::Baseline => Kernels { one_row: one_row_portable, many_rows: many_rows_portable },
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => Kernels { one_row: x86::one_row_avx2, many_rows: x86::many_rows_avx2 },
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => Kernels { one_row: x86::one_row_avx512, many_rows: x86::many_rows_avx512 },
        }
    }
}

/// 16 float32 lanes, one column of a panel each: the operations of a tile.
trait Lanes: Copy {
    unsafe fn zero() -> Self;
    /// 16 floats: a line of a panel (on a 64-byte boundary), or of the bias (anywhere).
    unsafe fn load(line: *const f32) -> Self;
    unsafe fn splat(value: f32) -> Self;
    /// self + a·b
    unsafe fn madd(self, a: Self, b: Self) -> Self;
    unsafe fn add(self, other: Self) -> Self;
    unsafe fn store(self, to: *mut f32);
    /// Starts fetching the cache line at `line` (a hint: nothing is read).
    unsafe fn prefetch(_line: *const f32) {}
}

/// The runs of `NP` panels in `panels`, each against every row of x, `MR` rows at a time.
///
/// Safety: x holds `x.rows` rows of W's K floats; y has room for those rows of W's N floats.
#[inline(always)]
unsafe fn panels<V: Lanes, const NP: usize, const MR: usize>(
    x: Rows,
    w: &PackedMatrix,
    panels: Range<usize>,
    y: Out,
) {
    let mut p = panels.start;
    while p + NP <= panels.end {
        unsafe { rows::<V, NP, MR>(x, w, p, y) };
        p += NP;
    }
    for p in p..panels.end {
        unsafe { rows::<V, 1, MR>(x, w, p, y) };
    }
}

/// Panels p..p + NP against every row of x: tiles of MR rows, the rest in tiles of 8, 4, 2, 1.
/// While x goes past these panels (in cache after the first tile), the tiles share out the
/// prefetching of the next NP panels from memory, which would otherwise hold up the first tile
/// of the next run.
#[inline(always)]
unsafe fn rows<V: Lanes, const NP: usize, const MR: usize>(x: Rows, w: &PackedMatrix, p: usize, y: Out) {
    let tiles = x.rows.div_ceil(MR);
    let next = w.lines_of((p + NP).min(w.panels())..(p + 2 * NP).min(w.panels()));
    let share = next.len().div_ceil(tiles);
    let ahead = |tile: usize| {
        let lines = if tiles > 1 { next.chunks(share.max(1)).nth(tile).unwrap_or(&[]) } else { &[] };
        Ahead { at: lines.as_ptr().cast::<f32>(), lines: lines.len() }
    };
    let mut t = 0;
    while t + MR <= x.rows {
        unsafe { tile::<V, MR, NP>(x, w, p, t, y, ahead(t / MR)) };
        t += MR;
    }
    macro_rules! rest {
        ($($rows:literal),*) => {$(
            if $rows < MR && x.rows - t >= $rows {
                unsafe { tile::<V, $rows, NP>(x, w, p, t, y, ahead(tiles - 1)) };
                t += $rows;
            }
        )*};
    }
    rest!(8, 4, 2, 1);
    debug_assert_eq!(t, x.rows);
}

/// Lines of the next panels to fetch into cache during a tile, spread over its steps of k.
#[derive(Clone, Copy)]
struct Ahead {
    at: *const f32,
    lines: usize,
}

/// Steps of k summed in an accumulator of their own before it is added to the output's sum: a
/// float32 sum of K terms in one accumulator has rounding errors growing with K; in blocks they
/// grow with BLOCK + K / BLOCK, for one extra add per output and block. Measured on the
/// GPT-2-small shape against the float64 truth (rms error over PyTorch's, per checkpoint): 1.9
/// to 3.5 with one accumulator, 0.6 to 1.0 in blocks of 64.
const BLOCK: usize = 64;

/// y[t..t + MR, panels p..p + NP] = x[t..t + MR]·W[.., those panels]: MR·NP accumulators, each
/// 16 outputs, summing over k in order in blocks of `BLOCK`. The same arithmetic for every
/// output whatever MR and NP, hence bit for bit the same result.
#[inline(always)]
unsafe fn tile<V: Lanes, const MR: usize, const NP: usize>(
    x: Rows,
    w: &PackedMatrix,
    p: usize,
    t: usize,
    y: Out,
    ahead: Ahead,
) {
    let k = w.k();
    let panel: [*const f32; NP] =
        std::array::from_fn(|j| w.lines_of(p + j..p + j + 1).as_ptr().cast::<f32>());
    // Safety: rows t..t + MR of x exist (the callers' loops), each K floats.
    let xs: [*const f32; MR] = std::array::from_fn(|r| unsafe { x.at.add((t + r) * x.stride) });
    // Sums of the finished blocks of k, and of the block being summed.
    let mut sum = [[unsafe { V::zero() }; NP]; MR];
    // One prefetch every `every` steps of k, spread over the whole tile.
    let every = (k / ahead.lines.max(1)).max(1);
    let (mut countdown, mut fetched) = (0, 0);
    for block in (0..k).step_by(BLOCK) {
        let mut acc = [[unsafe { V::zero() }; NP]; MR];
        for i in block..(block + BLOCK).min(k) {
            // Safety: line i of each panel is within its K lines; x[t + r, i] within row t + r.
            let lines: [V; NP] = std::array::from_fn(|j| unsafe { V::load(panel[j].add(i * PANEL)) });
            if countdown == 0 {
                if fetched < ahead.lines {
                    // Safety: `fetched` counts lines of `ahead`.
                    unsafe { V::prefetch(ahead.at.add(fetched * PANEL)) };
                    fetched += 1;
                }
                countdown = every;
            }
            countdown -= 1;
            for r in 0..MR {
                let xv = unsafe { V::splat(*xs[r].add(i)) };
                for j in 0..NP {
                    acc[r][j] = unsafe { acc[r][j].madd(xv, lines[j]) };
                }
            }
        }
        for (sum, acc) in sum.iter_mut().zip(&acc) {
            for (sum, acc) in sum.iter_mut().zip(acc) {
                *sum = unsafe { sum.add(*acc) };
            }
        }
    }
    for (r, sums) in sum.iter().enumerate() {
        for (j, sum) in sums.iter().enumerate() {
            let column = (p + j) * PANEL;
            // Safety: row t + r of y and the bias have N floats; the last panel's padding
            // columns are not stored.
            unsafe {
                let to = y.at.add((t + r) * y.stride + column);
                let valid = w.n() - column;
                if valid >= PANEL {
                    if y.bias.is_null() { *sum } else { sum.add(V::load(y.bias.add(column))) }.store(to);
                } else {
                    let mut line = [0.0f32; PANEL];
                    sum.store(line.as_mut_ptr());
                    if !y.bias.is_null() {
                        let bias = std::slice::from_raw_parts(y.bias.add(column), valid);
                        line.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                    }
                    std::ptr::copy_nonoverlapping(line.as_ptr(), to, valid);
                }
            }
        }
    }
}

/// The baseline target's lanes: multiply and add separate (a fused multiply-add without the
/// hardware is a slow library call); LLVM vectorises the loops for what the target has.
#[derive(Clone, Copy)]
struct Portable([f32; PANEL]);

impl Lanes for Portable {
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; PANEL])
    }
    #[inline(always)]
    unsafe fn load(line: *const f32) -> Self {
        Portable(unsafe { line.cast::<[f32; PANEL]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn splat(value: f32) -> Self {
        Portable([value; PANEL])
    }
    #[inline(always)]
    unsafe fn madd(self, a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] + a.0[i] * b.0[i]))
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] + other.0[i]))
    }
    #[inline(always)]
    unsafe fn store(self, to: *mut f32) {
        unsafe { to.cast::<[f32; PANEL]>().write_unaligned(self.0) }
    }
}

unsafe fn one_row_portable(x: Rows, w: &PackedMatrix, run: Range<usize>, y: Out) {
    unsafe { panels::<Portable, 2, 1>(x, w, run, y) }
}

unsafe fn many_rows_portable(x: Rows, w: &PackedMatrix, run: Range<usize>, y: Out) {
    unsafe { panels::<Portable, 1, 4>(x, w, run, y) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The x86-64 lanes and the kernels compiled for them. The tile shapes fill the register
    //! file: AVX-512 has 32 registers of 16 floats (12 rows × 2 panels = 24 accumulators, two
    //! lines, one broadcast), AVX2 16 of 8 (6 rows × 1 panel × 2 halves = 12 accumulators).
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{Lanes, Out, PackedMatrix, Rows, panels};

    #[derive(Clone, Copy)]
    pub struct Avx512(__m512);

    impl Lanes for Avx512 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx512(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn load(line: *const f32) -> Self {
            Avx512(unsafe { _mm512_loadu_ps(line) })
        }
        #[inline(always)]
        unsafe fn splat(value: f32) -> Self {
            Avx512(unsafe { _mm512_set1_ps(value) })
        }
        #[inline(always)]
        unsafe fn madd(self, a: Self, b: Self) -> Self {
            Avx512(unsafe { _mm512_fmadd_ps(a.0, b.0, self.0) })
        }
        #[inline(always)]
        unsafe fn add(self, other: Self) -> Self {
            Avx512(unsafe { _mm512_add_ps(self.0, other.0) })
        }
        #[inline(always)]
        unsafe fn store(self, to: *mut f32) {
            unsafe { _mm512_storeu_ps(to, self.0) }
        }
        #[inline(always)]
        unsafe fn prefetch(line: *const f32) {
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.cast()) }
        }
    }

    #[derive(Clone, Copy)]
    pub struct Avx2(__m256, __m256);

    impl Lanes for Avx2 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { Avx2(_mm256_setzero_ps(), _mm256_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn load(line: *const f32) -> Self {
            unsafe { Avx2(_mm256_loadu_ps(line), _mm256_loadu_ps(line.add(8))) }
        }
        #[inline(always)]
        unsafe fn splat(value: f32) -> Self {
            unsafe { Avx2(_mm256_set1_ps(value), _mm256_set1_ps(value)) }
        }
        #[inline(always)]
        unsafe fn madd(self, a: Self, b: Self) -> Self {
            unsafe { Avx2(_mm256_fmadd_ps(a.0, b.0, self.0), _mm256_fmadd_ps(a.1, b.1, self.1)) }
        }
        #[inline(always)]
        unsafe fn add(self, other: Self) -> Self {
            unsafe { Avx2(_mm256_add_ps(self.0, other.0), _mm256_add_ps(self.1, other.1)) }
        }
        #[inline(always)]
        unsafe fn store(self, to: *mut f32) {
            unsafe {
                _mm256_storeu_ps(to, self.0);
                _mm256_storeu_ps(to.add(8), self.1);
            }
        }
        #[inline(always)]
        unsafe fn prefetch(line: *const f32) {
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.cast()) }
        }
    }

    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn one_row_avx512(x: Rows, w: &PackedMatrix, run: Range<usize>, y: Out) {
        unsafe { panels::<Avx512, 4, 1>(x, w, run, y) }
    }

    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn many_rows_avx512(x: Rows, w: &PackedMatrix, run: Range<usize>, y: Out) {
        unsafe { panels::<Avx512, 2, 12>(x, w, run, y) }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn one_row_avx2(x: Rows, w: &PackedMatrix, run: Range<usize>, y: Out) {
        unsafe { panels::<Avx2, 2, 1>(x, w, run, y) }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn many_rows_avx2(x: Rows, w: &PackedMatrix, run: Range<usize>, y: Out) {
        unsafe { panels::<Avx2, 1, 6>(x, w, run, y) }
    }
}

/// The panels front..back of a slab not yet taken, in one word so that the owner taking from
/// the front and a helper taking from the back never both take a panel.
struct Slab(AtomicU64);

impl Slab {
    fn new(first: usize, last: usize) -> Slab {
        Slab(AtomicU64::new(Slab::pack(first, last)))
    }

    fn reset(&self, first: usize, last: usize) {
        self.0.store(Slab::pack(first, last), Ordering::Release);
    }

    fn pack(front: usize, back: usize) -> u64 {
        (front as u64) << 32 | back as u64
    }

    fn take_front(&self, count: usize) -> Option<Range<usize>> {
        self.take(|front, back| {
            let end = (front + count).min(back);
            (front..end, Slab::pack(end, back))
        })
    }

    fn take_back(&self, count: usize) -> Option<Range<usize>> {
        self.take(|front, back| {
            let start = back.saturating_sub(count).max(front);
            (start..back, Slab::pack(front, start))
        })
    }

    /// Takes the panels `split` chooses, unless none are left.
    fn take(&self, split: impl Fn(usize, usize) -> (Range<usize>, u64)) -> Option<Range<usize>> {
        let mut now = self.0.load(Ordering::Acquire);
        loop {
            let (front, back) = ((now >> 32) as usize, now as u32 as usize);
            if front >= back {
                return None;
            }
            let (taken, rest) = split(front, back);
            match self.0.compare_exchange_weak(now, rest, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(taken),
                Err(actual) => now = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, rng: &mut impl Rng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn matrix(k: usize, n: usize, rng: &mut impl Rng) -> PackedMatrix {
        let values = random(k * n, rng);
        PackedMatrix::from_fn(k, n, |i, j| values[i * n + j]).unwrap()
    }

    /// Odd sizes exercise every tail: rows not a multiple of any tile, columns not of a panel,
    /// panels not of a run.
    #[test]
    fn every_row_of_gemm_is_bit_for_bit_gemv() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for unit in Simd::available() {
            let kernels = Kernels::for_unit(unit);
            for (t, k, n) in [(29, 200, 333), (2, 7, 16), (13, 64, 1)] {
                let x = Array2::from_shape_vec((t, k), random(t * k, &mut rng)).unwrap();
                let w = matrix(k, n, &mut rng);
                let bias = random(n, &mut rng);
                for bias in [None, Some(&bias[..])] {
                    let mut all = Array2::zeros((t, n));
                    gemm_with(kernels.many_rows, x.view(), &w, bias, all.view_mut());
                    for (row, x_row) in all.rows().into_iter().zip(x.rows()) {
                        let mut one = vec![0.0; n];
                        gemv_with(kernels.one_row, x_row.as_slice().unwrap(), &w, bias, &mut one);
                        assert_eq!(row.to_vec(), one, "{unit:?} ({t}, {k}, {n})");
                    }
                }
            }
        }
    }

    #[test]
    fn the_kernels_equal_the_reference_to_float32_rounding() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for (t, k, n) in
            [(1, 1, 1), (1, 3, 5), (1, 768, 2304), (3, 64, 257), (30, 131, 1030), (128, 768, 300)]
        {
            let x = Array2::from_shape_vec((t, k), random(t * k, &mut rng)).unwrap();
            let w = matrix(k, n, &mut rng);
            let plain = reference_matmul(x.view(), &w);
            let mut fast = Array2::zeros((t, n));
            if t == 1 {
                gemv(x.as_slice().unwrap(), &w, None, fast.as_slice_mut().unwrap());
            } else {
                gemm(x.view(), &w, None, fast.view_mut());
            }
            let bound = 1e-6 * k as f32; // |x|, |w| < 1: float32 rounding of a k-term sum
            let worst = (&fast - &plain).iter().fold(0.0f32, |m, d| m.max(d.abs()));
            assert!(worst <= bound, "({t}, {k}, {n}): {worst}");
        }
    }

    /// The bias is added as the sums are stored: the same float32 addition as adding it after
    /// the product, every column (the last panel's partial one too), every kernel set.
    #[test]
    fn the_fused_bias_is_the_bias_added_afterwards() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let (t, k, n) = (15, 70, 37);
        let x = Array2::from_shape_vec((t, k), random(t * k, &mut rng)).unwrap();
        let w = matrix(k, n, &mut rng);
        let bias = random(n, &mut rng);
        for unit in Simd::available() {
            let kernels = Kernels::for_unit(unit);
            let mut fused = Array2::zeros((t, n));
            gemm_with(kernels.many_rows, x.view(), &w, Some(&bias), fused.view_mut());
            let mut after = Array2::zeros((t, n));
            gemm_with(kernels.many_rows, x.view(), &w, None, after.view_mut());
            after += &ndarray::ArrayView1::from(&bias[..]);
            assert_eq!(fused, after, "{unit:?}");
        }
    }

    #[test]
    fn gemm_writes_into_a_view_with_a_row_stride_and_nothing_else() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let (t, k, n) = (5, 40, 20);
        let x = Array2::from_shape_vec((t, k), random(t * k, &mut rng)).unwrap();
        let w = matrix(k, n, &mut rng);
        let mut wide = Array2::from_elem((t, n + 7), 9.0f32);
        gemm(x.view(), &w, None, wide.slice_mut(ndarray::s![.., 3..3 + n]));
        let mut plain = Array2::zeros((t, n));
        gemm(x.view(), &w, None, plain.view_mut());
        assert_eq!(wide.slice(ndarray::s![.., 3..3 + n]), plain);
        assert!(
            wide.slice(ndarray::s![.., ..3])
                .iter()
                .chain(wide.slice(ndarray::s![.., 3 + n..]))
                .all(|&v| v == 9.0)
        );
    }
}
