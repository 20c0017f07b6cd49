//! The one-row matrix product of the decode step, where the engine's time is reading weights:
//! the matrix is held as [N, K] (every output a contiguous row: Conv1D weights are transposed
//! at load, the tied lm_head is wte itself), streamed once in contiguous slabs shared out
//! between the cores, with SIMD chosen at run time (AVX-512, AVX2 + FMA, or the portable loop
//! LLVM vectorises for the baseline target). `reference_gemv_rows` beside it is the plain
//! definition it is tested against, as llm.c keeps its reference kernels. Products of more
//! rows go to a well-kept GEMM crate.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// y[N] = w[N, K] · x[K] (w row-major): every output a dot product of a row with x, the layout
/// of the tied lm_head (wte [V, C] used as wteᵀ). The rows are cut into one slab per thread of
/// the team (`team.rs`), which each thread streams from its front; a thread done with its own
/// takes runs of rows from the back of the others', so that one the machine slowed down (two
/// cores, shared) is not waited for. (Taking runs from one shared queue instead measured ~12%
/// slower: each thread's reads then jump instead of streaming.) Every output is summed by the
/// same kernel whichever thread takes it: the result does not depend on the split.
pub fn gemv_rows(x: &[f32], w: &[f32], y: &mut [f32]) {
    let (k, n) = (x.len(), y.len());
    assert_eq!(w.len(), k * n, "w is [N, K]");
    let kernel = rows_kernel();
    let team = super::team::team();
    let parts = team.size();
    let rows = n.div_ceil(parts).max(1);
    let run = (rows / 16).max(8); // rows taken at a time
    let out = OutPtr(y.as_mut_ptr());
    let compute = |(first, last): (usize, usize)| {
        // Safety: every run of rows is taken from its slab once, by one thread; y outlives
        // `run`.
        let y = unsafe { std::slice::from_raw_parts_mut(out.at(first), last - first) };
        kernel(x, &w[first * k..last * k], y);
    };
    thread_local! {
        // Kept from one product to the next: the decode step allocates nothing here.
        static SLABS: RefCell<Vec<Slab>> = const { RefCell::new(Vec::new()) };
    }
    SLABS.with_borrow_mut(|slabs| {
        slabs.resize_with(parts, || Slab::new(0, 0));
        for (p, slab) in slabs.iter().enumerate() {
            slab.reset((p * rows).min(n), ((p + 1) * rows).min(n));
        }
        team.run(&|part| {
            while let Some(rows) = slabs[part].take_front(run) {
                compute(rows);
            }
            for other in (1..parts).map(|i| (part + i) % parts) {
                while let Some(rows) = slabs[other].take_back(run / 4 + 1) {
                    compute(rows);
                }
            }
        });
    });
}

/// The rows front..back of a slab not yet taken, in one word so that the owner taking from
/// the front and a helper taking from the back never both take a row.
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

    fn take_front(&self, count: usize) -> Option<(usize, usize)> {
        self.take(|front, back| {
            let end = (front + count).min(back);
            ((front, end), Slab::pack(end, back))
        })
    }

    fn take_back(&self, count: usize) -> Option<(usize, usize)> {
        self.take(|front, back| {
            let start = back.saturating_sub(count).max(front);
            ((start, back), Slab::pack(front, start))
        })
    }

    /// Takes the rows `split` chooses, unless none are left.
    fn take(&self, split: impl Fn(usize, usize) -> ((usize, usize), u64)) -> Option<(usize, usize)> {
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

/// y's address, shared with the team's threads (each writes its own rows).
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

// Safety: only used to write disjoint ranges of a slice that outlives the job.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn at(self, i: usize) -> *mut f32 {
        // Safety: i is within the slice the pointer came from (checked by the callers' bounds).
        unsafe { self.0.add(i) }
    }
}

/// y[T, N] = x[T, K] · w[N, K]ᵀ with the one-row kernel for every row of x: each output is
/// summed exactly as `gemv_rows` sums it, so row t of y is bit for bit what `gemv_rows` gives
/// for x[t] (checkpoint 9's invariant: the generation path's last-position logits equal the
/// full logits' last row). w is read in blocks that stay in cache across the rows of x; the
/// rows of x are shared out between the threads.
pub fn gemm_rows(x: ArrayView2<'_, f32>, w: &[f32], y: &mut Array2<f32>) {
    let (k, n) = (x.ncols(), y.ncols());
    assert_eq!(w.len(), k * n, "w is [N, K]");
    assert_eq!(y.nrows(), x.nrows(), "one output row per input row");
    let kernel = block_kernel();
    const BLOCK: usize = 64; // rows of w: 64·K floats, a few hundred KB, stay in L2
    let x = x.as_standard_layout();
    let per_thread = x.nrows().div_ceil(rayon::current_num_threads()).max(1);
    let y = y.as_slice_mut().expect("a fresh output is contiguous");
    let x = x.as_slice().expect("standard layout");
    y.par_chunks_mut(per_thread * n).zip(x.par_chunks(per_thread * k)).for_each(|(y, x)| {
        for first in (0..n).step_by(BLOCK) {
            let last = (first + BLOCK).min(n);
            kernel(x, k, &w[first * k..last * k], y, n, first);
        }
    });
}

/// y = x [M, K] · w [K, N] ([M, N]), for more than one row (a prompt): the `gemm` crate's
/// blocked kernels (AVX2 + FMA; its AVX-512 ones need the crate's nightly feature), on rayon's
/// threads, reading either layout of w (Conv1D weights are held transposed, the lm_head wteᵀ)
/// and writing y in place, whatever its strides.
pub fn gemm(x: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>, mut y: ArrayViewMut2<'_, f32>) {
    let ((m, k), n) = (x.dim(), w.ncols());
    assert_eq!(w.nrows(), k, "inner dimensions");
    assert_eq!(y.dim(), (m, n), "the output's shape");
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // Safety: every pointer comes with the shape and strides of the ndarray view it belongs
    // to, so gemm reads and writes only their elements; y is not aliased.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            y.strides()[1],
            y.strides()[0],
            false,
            x.as_ptr(),
            x.strides()[1],
            x.strides()[0],
            w.as_ptr(),
            w.strides()[1],
            w.strides()[0],
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The plain definition: y[n] = Σ_k w[n, k]·x[k], summed in float64 (for the tests).
#[cfg(test)]
pub fn reference_gemv_rows(x: &[f32], w: &[f32], y: &mut [f32]) {
    let k = x.len();
    for (n, out) in y.iter_mut().enumerate() {
        *out = x.iter().zip(&w[n * k..(n + 1) * k]).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32;
    }
}

/// out[r] = Σ_k x[k]·w[r, k] for a run of rows.
type Rows = fn(&[f32], &[f32], &mut [f32]);
/// `block_body`: many rows of x against a block of rows of w.
type Block = fn(&[f32], usize, &[f32], &mut [f32], usize, usize);

fn block_kernel() -> Block {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
            return |x, k, w, y, n, first| unsafe { block_avx512(x, k, w, y, n, first) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return |x, k, w, y, n, first| unsafe { block_avx2(x, k, w, y, n, first) };
        }
    }
    block_body::<SEPARATE>
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn block_avx512(x: &[f32], k: usize, w: &[f32], y: &mut [f32], n: usize, first: usize) {
    block_body::<FUSED>(x, k, w, y, n, first)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn block_avx2(x: &[f32], k: usize, w: &[f32], y: &mut [f32], n: usize, first: usize) {
    block_body::<FUSED>(x, k, w, y, n, first)
}

fn rows_kernel() -> Rows {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
            return |x, w, out| unsafe { rows_avx512(x, w, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return |x, w, out| unsafe { rows_avx2(x, w, out) };
        }
    }
    rows_portable
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn rows_avx512(x: &[f32], w: &[f32], out: &mut [f32]) {
    rows_body::<FUSED>(x, w, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn rows_avx2(x: &[f32], w: &[f32], out: &mut [f32]) {
    rows_body::<FUSED>(x, w, out)
}

fn rows_portable(x: &[f32], w: &[f32], out: &mut [f32]) {
    rows_body::<SEPARATE>(x, w, out)
}

/// Partial sums per output: the compiler may not reorder a float sum, so the lanes are written
/// out, and added pairwise at the end.
const LANES: usize = 16;

/// Multiply-adds fused (one rounding: the FMA units of AVX2 and AVX-512 CPUs, twice the
/// throughput of a multiply and an add) or separate (the portable kernel, where a fused
/// multiply-add without the hardware is a slow library call). Every kernel of one machine
/// makes the same choice, so the one-row and the many-row products stay bit for bit equal.
const FUSED: bool = true;
const SEPARATE: bool = false;

/// acc + a·b, fused or not.
#[inline(always)]
fn madd<const FUSE: bool>(acc: f32, a: f32, b: f32) -> f32 {
    if FUSE { a.mul_add(b, acc) } else { acc + a * b }
}

#[inline(always)]
fn rows_body<const FUSE: bool>(x: &[f32], w: &[f32], out: &mut [f32]) {
    let k = x.len();
    for (out, row) in out.iter_mut().zip(w.chunks_exact(k)) {
        *out = dot::<FUSE>(x, row);
    }
}

/// Σ x[i]·row[i]: lane i sums elements i, i + LANES, ... in order; then the lanes pairwise; then
/// the tail. `dot_4x2` does exactly these operations for four x and two rows at once.
#[inline(always)]
fn dot<const FUSE: bool>(x: &[f32], row: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (xs, ws) = (x.chunks_exact(LANES), row.chunks_exact(LANES));
    let (x_tail, w_tail) = (xs.remainder(), ws.remainder());
    for (xc, wc) in xs.zip(ws) {
        for i in 0..LANES {
            acc[i] = madd::<FUSE>(acc[i], xc[i], wc[i]);
        }
    }
    finish(acc, x_tail, w_tail)
}

/// `dot` of four x with two rows, sharing every load: bit for bit eight `dot`s, for the
/// product of many rows, where loads are what limits. The accumulators are named one by one:
/// written as nested arrays, LLVM vectorises them two lanes wide.
#[inline(always)]
fn dot_4x2<const FUSE: bool>(x: [&[f32]; 4], rows: [&[f32]; 2]) -> [[f32; 4]; 2] {
    let zero = [0.0f32; LANES];
    let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero); // x[0..4] · rows[0]
    let (mut b0, mut b1, mut b2, mut b3) = (zero, zero, zero, zero); // x[0..4] · rows[1]
    let full = rows[0].len() / LANES * LANES;
    let (x0, x1, x2, x3) = (&x[0][..full], &x[1][..full], &x[2][..full], &x[3][..full]);
    let (r0, r1) = (&rows[0][..full], &rows[1][..full]);
    for at in (0..full).step_by(LANES) {
        let (c0, c1, c2, c3) =
            (&x0[at..at + LANES], &x1[at..at + LANES], &x2[at..at + LANES], &x3[at..at + LANES]);
        let (w0, w1) = (&r0[at..at + LANES], &r1[at..at + LANES]);
        for i in 0..LANES {
            a0[i] = madd::<FUSE>(a0[i], c0[i], w0[i]);
            a1[i] = madd::<FUSE>(a1[i], c1[i], w0[i]);
            a2[i] = madd::<FUSE>(a2[i], c2[i], w0[i]);
            a3[i] = madd::<FUSE>(a3[i], c3[i], w0[i]);
            b0[i] = madd::<FUSE>(b0[i], c0[i], w1[i]);
            b1[i] = madd::<FUSE>(b1[i], c1[i], w1[i]);
            b2[i] = madd::<FUSE>(b2[i], c2[i], w1[i]);
            b3[i] = madd::<FUSE>(b3[i], c3[i], w1[i]);
        }
    }
    let (t0, t1) = (&rows[0][full..], &rows[1][full..]);
    let tail = |j: usize| &x[j][full..];
    [
        [finish(a0, tail(0), t0), finish(a1, tail(1), t0), finish(a2, tail(2), t0), finish(a3, tail(3), t0)],
        [finish(b0, tail(0), t1), finish(b1, tail(1), t1), finish(b2, tail(2), t1), finish(b3, tail(3), t1)],
    ]
}

#[inline(always)]
fn finish(mut acc: [f32; LANES], x_tail: &[f32], w_tail: &[f32]) -> f32 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0] + x_tail.iter().zip(w_tail).map(|(a, b)| a * b).sum::<f32>()
}

/// y[t, first + m] = dot(x[t], w[m]) for the rows t of x (each `k` long) and m of a block of w.
/// Tiles of four rows of x stay in L1 while the block's rows stream past from L2 two at a time
/// (the other way round, every row of w would fetch all of x from L2 and wait on it).
#[inline(always)]
fn block_body<const FUSE: bool>(x: &[f32], k: usize, w: &[f32], y: &mut [f32], n: usize, first: usize) {
    let (t_rows, m_rows) = (x.len() / k, w.len() / k);
    let x_row = |t: usize| &x[t * k..(t + 1) * k];
    let w_row = |m: usize| &w[m * k..(m + 1) * k];
    let mut t = 0;
    while t + 4 <= t_rows {
        let xs = std::array::from_fn(|j| x_row(t + j));
        let mut m = 0;
        while m + 2 <= m_rows {
            let tile = dot_4x2::<FUSE>(xs, [w_row(m), w_row(m + 1)]);
            for (i, column) in tile.into_iter().enumerate() {
                for (j, v) in column.into_iter().enumerate() {
                    y[(t + j) * n + first + m + i] = v;
                }
            }
            m += 2;
        }
        for m in m..m_rows {
            for (j, &x) in xs.iter().enumerate() {
                y[(t + j) * n + first + m] = dot::<FUSE>(x, w_row(m));
            }
        }
        t += 4;
    }
    for t in t..t_rows {
        for m in 0..m_rows {
            y[t * n + first + m] = dot::<FUSE>(x_row(t), w_row(m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, rng: &mut impl Rng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Odd sizes exercise every tail: row counts not a multiple of the slabs, row lengths not
    /// of the lane count.
    #[test]
    fn every_row_of_gemm_rows_is_bit_for_bit_gemv_rows() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (t, k, n) = (5, 100, 333);
        let x = ndarray::Array2::from_shape_vec((t, k), random(t * k, &mut rng)).unwrap();
        let w = random(n * k, &mut rng);
        let mut all = ndarray::Array2::zeros((t, n));
        gemm_rows(x.view(), &w, &mut all);
        for (row, x_row) in all.rows().into_iter().zip(x.rows()) {
            let mut one = vec![0.0; n];
            gemv_rows(x_row.as_slice().unwrap(), &w, &mut one);
            assert_eq!(row.to_vec(), one);
        }
    }

    #[test]
    fn gemm_equals_ndarray_in_either_layout() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        for (m, k, n) in [(2, 3, 5), (7, 64, 129), (128, 768, 300)] {
            let x = ndarray::Array2::from_shape_vec((m, k), random(m * k, &mut rng)).unwrap();
            let w = ndarray::Array2::from_shape_vec((k, n), random(k * n, &mut rng)).unwrap();
            let w_t = w.t().as_standard_layout().into_owned(); // [N, K], viewed back as [K, N]
            let plain = x.dot(&w);
            for w in [w.view(), w_t.t()] {
                let mut ours = ndarray::Array2::zeros((m, n));
                gemm(x.view(), w, ours.view_mut());
                let worst = (&ours - &plain).iter().fold(0.0f32, |m, d| m.max(d.abs()));
                assert!(worst <= 1e-6 * k as f32, "({m}, {k}, {n}): {worst}");
            }
        }
    }

    #[test]
    fn the_fast_kernel_equals_the_reference_to_float32_rounding() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for (k, n) in [(1, 1), (3, 5), (64, 257), (131, 1030), (768, 2304)] {
            let (x, w) = (random(k, &mut rng), random(k * n, &mut rng));
            let (mut fast, mut plain) = (vec![0.0; n], vec![0.0; n]);
            gemv_rows(&x, &w, &mut fast);
            reference_gemv_rows(&x, &w, &mut plain);
            let bound = 1e-6 * k as f32; // |x|, |w| < 1: float32 rounding of a k-term sum
            for j in 0..n {
                assert!((fast[j] - plain[j]).abs() <= bound, "({k}, {n}) [{j}]: {} vs {}", fast[j], plain[j]);
            }
        }
    }
}
