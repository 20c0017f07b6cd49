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
//! The module is split by job, as gemm's and ggml's kernels are: `lanes` (16 float32 lanes:
//! portable, AVX2, AVX-512), `tile` (the micro-kernel: a tile of rows × panels summed in
//! blocks), `driver` (the panels shared out on the team's threads, each thread's slab claimed
//! from its front, others' from the back). This file holds the entries and the table of kernel
//! sets.
//!
//! SIMD is chosen at run time: AVX-512, AVX2 (both with fused multiply-adds), or portable code
//! (separate multiply and add) that LLVM vectorises for the baseline target. One machine makes
//! the same choice for every product. `reference_matmul` beside it is the plain definition the
//! kernels are tested against, as llm.c keeps its reference kernels.

mod driver;
mod lanes;
mod tile;
mod widen;

use std::ops::Range;

use ndarray::{ArrayView2, ArrayViewMut2};

use super::format::WeightFormat;
use super::math::Simd;
use super::packed::PackedMatrix;
use driver::{Out, Rows, bias_of, share_out};
use lanes::Portable;
use tile::panels;
use widen::Widen;

/// y[N] = x[K]·W (+ bias[N]): the decode step's product. Allocates nothing.
pub fn gemv(x: &[f32], w: &PackedMatrix, bias: Option<&[f32]>, y: &mut [f32]) {
    gemv_with(Kernels::detect(w.format()).one_row, x, w, bias, y)
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
    gemm_with(Kernels::detect(w.format()).many_rows, x, w, bias, y)
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

/// y[.., panels] = x·W[.., panels] for every row of x.
type Kernel = unsafe fn(Rows, &PackedMatrix, Range<usize>, Out);

/// A set of kernels for one row and for many, compiled for one kind of CPU and one weight
/// format.
#[derive(Clone, Copy)]
struct Kernels {
    one_row: Kernel,
    many_rows: Kernel,
}

impl Kernels {
    /// The fastest set this CPU runs for matrices in `format`.
    fn detect(format: WeightFormat) -> Kernels {
        Kernels::for_unit(Simd::best(), format)
    }

    /// The set compiled for a vector unit (`math::Simd` knows which units the CPU runs; the
    /// tests check every one) and a weight format.
    fn for_unit(unit: Simd, format: WeightFormat) -> Kernels {
        match format {
            WeightFormat::F32 => Kernels::widening::<widen::F32>(unit),
            WeightFormat::Bf16 => Kernels::widening::<widen::Bf16>(unit),
            WeightFormat::F16 => Kernels::widening::<widen::F16>(unit),
            WeightFormat::Q8_0 => Kernels::widening::<widen::Q8_0>(unit),
        }
    }

    fn widening<F: Widen>(unit: Simd) -> Kernels {
        match unit {
            Simd::Baseline => Kernels { one_row: one_row_portable::<F>, many_rows: many_rows_portable::<F> },
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => Kernels { one_row: x86::one_row_avx2::<F>, many_rows: x86::many_rows_avx2::<F> },
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => {
                Kernels { one_row: x86::one_row_avx512::<F>, many_rows: x86::many_rows_avx512::<F> }
            }
        }
    }
}

/// Rows of x in the many-row tile of the kernel set compiled for `unit` (the rest go in tiles
/// of 8, 4, 2, 1 rows).
pub fn tile_rows(unit: Simd) -> usize {
    match unit {
        Simd::Baseline => PORTABLE_ROWS,
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => x86::AVX2_ROWS,
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => x86::AVX512_ROWS,
    }
}

const PORTABLE_ROWS: usize = 4;

unsafe fn one_row_portable<F: Widen>(x: Rows, w: &PackedMatrix, run: Range<usize>, y: Out) {
    // Safety: the kernel's own contract (the driver's x, y and run of panels), on its unit.
    unsafe { panels::<Portable, F, 2, 1>(x, w, run, y) }
}

unsafe fn many_rows_portable<F: Widen>(x: Rows, w: &PackedMatrix, run: Range<usize>, y: Out) {
    // Safety: the kernel's own contract (the driver's x, y and run of panels), on its unit.
    unsafe { panels::<Portable, F, 1, PORTABLE_ROWS>(x, w, run, y) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The kernels compiled for x86-64's vector units. The tile shapes fill the register file:
    //! AVX-512 has 32 registers of 16 floats (12 rows × 2 panels = 24 accumulators, two lines,
    //! one broadcast), AVX2 16 of 8 (6 rows × 1 panel × 2 halves = 12 accumulators). AVX2's
    //! sets need F16C for the halves (every AVX2 CPU has it; `math::Simd` checks).
    use std::ops::Range;

    use super::driver::{Out, Rows};
    use super::lanes::x86::{Avx2, Avx512};
    use super::tile::panels;
    use super::widen::Widen;
    use crate::engine::packed::PackedMatrix;

    pub const AVX512_ROWS: usize = 12;
    pub const AVX2_ROWS: usize = 6;

    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn one_row_avx512<F: Widen>(x: Rows, w: &PackedMatrix, run: Range<usize>, y: Out) {
        // Safety: the kernel's own contract (the driver's x, y and run of panels), on its unit.
        unsafe { panels::<Avx512, F, 4, 1>(x, w, run, y) }
    }

    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn many_rows_avx512<F: Widen>(x: Rows, w: &PackedMatrix, run: Range<usize>, y: Out) {
        // Safety: the kernel's own contract (the driver's x, y and run of panels), on its unit.
        unsafe { panels::<Avx512, F, 2, AVX512_ROWS>(x, w, run, y) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn one_row_avx2<F: Widen>(x: Rows, w: &PackedMatrix, run: Range<usize>, y: Out) {
        // Safety: the kernel's own contract (the driver's x, y and run of panels), on its unit.
        unsafe { panels::<Avx2, F, 2, 1>(x, w, run, y) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn many_rows_avx2<F: Widen>(x: Rows, w: &PackedMatrix, run: Range<usize>, y: Out) {
        // Safety: the kernel's own contract (the driver's x, y and run of panels), on its unit.
        unsafe { panels::<Avx2, F, 1, AVX2_ROWS>(x, w, run, y) }
    }
}

/// The plain definition: y[t, n] = Σ_k x[t, k]·W[k, n], summed in float64 (for the tests).
#[cfg(test)]
pub fn reference_matmul(x: ArrayView2<'_, f32>, w: &PackedMatrix) -> ndarray::Array2<f32> {
    let dense = w.to_dense().mapv(f64::from);
    x.mapv(f64::from).dot(&dense).mapv(|v| v as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, rng: &mut impl Rng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn matrix(k: usize, n: usize, format: WeightFormat, rng: &mut impl Rng) -> PackedMatrix {
        let values = random(k * n, rng);
        PackedMatrix::from_fn(k, n, format, |i, j| values[i * n + j], |_| {}).unwrap()
    }

    /// The formats that can hold a matrix of K inputs (Q8_0 needs whole blocks of 32).
    fn formats_for(k: usize) -> impl Iterator<Item = WeightFormat> {
        WeightFormat::ALL.into_iter().filter(move |f| f.refuses(k).is_none())
    }

    /// Odd sizes exercise every tail: rows not a multiple of any tile, columns not of a panel,
    /// panels not of a run; K not a multiple of the sums' block (and, for Q8_0, several blocks).
    #[test]
    fn every_row_of_gemm_is_bit_for_bit_gemv() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for unit in Simd::available() {
            for (t, k, n) in [(29, 200, 333), (29, 224, 333), (2, 7, 16), (13, 64, 1), (3, 96, 50)] {
                for format in formats_for(k) {
                    let kernels = Kernels::for_unit(unit, format);
                    let x = Array2::from_shape_vec((t, k), random(t * k, &mut rng)).unwrap();
                    let w = matrix(k, n, format, &mut rng);
                    let bias = random(n, &mut rng);
                    for bias in [None, Some(&bias[..])] {
                        let mut all = Array2::zeros((t, n));
                        gemm_with(kernels.many_rows, x.view(), &w, bias, all.view_mut());
                        for (row, x_row) in all.rows().into_iter().zip(x.rows()) {
                            let mut one = vec![0.0; n];
                            gemv_with(kernels.one_row, x_row.as_slice().unwrap(), &w, bias, &mut one);
                            assert_eq!(row.to_vec(), one, "{unit:?} {format} ({t}, {k}, {n})");
                        }
                    }
                }
            }
        }
    }

    /// A format's kernels widen each weight exactly and then compute as the F32 kernels do: the
    /// same result, bit for bit, as the F32 set on a matrix holding the rounded weights. (The
    /// engine in a format is the F32 engine on rounded weights; references rely on it.)
    #[test]
    fn every_format_computes_as_f32_on_its_rounded_weights() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (t, k, n) = (17, 160, 70);
        let x = Array2::from_shape_vec((t, k), random(t * k, &mut rng)).unwrap();
        for unit in Simd::available() {
            for format in WeightFormat::ALL {
                let w = matrix(k, n, format, &mut rng);
                let dense = w.to_dense();
                let rounded =
                    PackedMatrix::from_fn(k, n, WeightFormat::F32, |i, j| dense[[i, j]], |_| {}).unwrap();
                for rows in [1, t] {
                    let x = x.slice(ndarray::s![..rows, ..]);
                    let (mut ours, mut f32s) = (Array2::zeros((rows, n)), Array2::zeros((rows, n)));
                    let (kernels, plain) =
                        (Kernels::for_unit(unit, format), Kernels::for_unit(unit, WeightFormat::F32));
                    gemm_with(kernels.many_rows, x, &w, None, ours.view_mut());
                    gemm_with(plain.many_rows, x, &rounded, None, f32s.view_mut());
                    assert_eq!(ours, f32s, "{unit:?} {format}, {rows} rows");
                }
            }
        }
    }

    #[test]
    fn the_kernels_equal_the_reference_to_float32_rounding() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for (t, k, n) in [
            (1, 1, 1),
            (1, 3, 5),
            (1, 768, 2304),
            (3, 64, 257),
            (30, 131, 1030),
            (128, 768, 300),
            (5, 32, 17),
        ] {
            for format in formats_for(k) {
                let x = Array2::from_shape_vec((t, k), random(t * k, &mut rng)).unwrap();
                let w = matrix(k, n, format, &mut rng);
                let plain = reference_matmul(x.view(), &w);
                for unit in Simd::available() {
                    let kernels = Kernels::for_unit(unit, format);
                    let mut fast = Array2::zeros((t, n));
                    if t == 1 {
                        gemv_with(
                            kernels.one_row,
                            x.as_slice().unwrap(),
                            &w,
                            None,
                            fast.as_slice_mut().unwrap(),
                        );
                    } else {
                        gemm_with(kernels.many_rows, x.view(), &w, None, fast.view_mut());
                    }
                    let bound = 1e-6 * k as f32; // |x|, |w| < 1: float32 rounding of a k-term sum
                    let worst = (&fast - &plain).iter().fold(0.0f32, |m, d| m.max(d.abs()));
                    assert!(worst <= bound, "{unit:?} {format} ({t}, {k}, {n}): {worst}");
                }
            }
        }
    }

    /// The bias is added as the sums are stored: the same float32 addition as adding it after
    /// the product, every column (the last panel's partial one too), every kernel set.
    #[test]
    fn the_fused_bias_is_the_bias_added_afterwards() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let (t, k, n) = (15, 64, 37);
        let x = Array2::from_shape_vec((t, k), random(t * k, &mut rng)).unwrap();
        let bias = random(n, &mut rng);
        for format in WeightFormat::ALL {
            let w = matrix(k, n, format, &mut rng);
            for unit in Simd::available() {
                let kernels = Kernels::for_unit(unit, format);
                let mut fused = Array2::zeros((t, n));
                gemm_with(kernels.many_rows, x.view(), &w, Some(&bias), fused.view_mut());
                let mut after = Array2::zeros((t, n));
                gemm_with(kernels.many_rows, x.view(), &w, None, after.view_mut());
                after += &ndarray::ArrayView1::from(&bias[..]);
                assert_eq!(fused, after, "{unit:?} {format}");
            }
        }
    }

    #[test]
    fn gemm_writes_into_a_view_with_a_row_stride_and_nothing_else() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let (t, k, n) = (5, 40, 20);
        let x = Array2::from_shape_vec((t, k), random(t * k, &mut rng)).unwrap();
        let w = matrix(k, n, WeightFormat::F32, &mut rng);
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
