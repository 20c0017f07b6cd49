//! Arithmetic shared by the engine's element-wise loops: an exp that vectorises, and running a
//! loop compiled for the widest vector unit the CPU has (chosen at run time, one binary for
//! every x86-64 machine). The kernels' products pick their set by the same units.

use super::paths::reached;

/// The vector units a loop can be compiled for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Simd {
    /// The build's target (SSE2 on x86-64).
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The unit `Simd::best` returns, set once.
static IN_USE: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();

impl Simd {
    /// Every unit this CPU runs, narrowest first (the tests compare them).
    pub fn available() -> Vec<Simd> {
        let mut all = vec![Simd::Baseline];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            // F16C too: the AVX2 kernels widen halves with it (every AVX2 CPU has it).
            if has!("avx2") && has!("fma") && has!("f16c") {
                all.push(Simd::Avx2);
            }
            if has!("avx512f") && has!("fma") {
                all.push(Simd::Avx512);
            }
        }
        all
    }

    /// The unit every kernel of this process runs: the widest this CPU has, unless `choose`
    /// picked another first.
    pub fn best() -> Simd {
        *IN_USE.get_or_init(|| *Simd::available().last().expect("the baseline runs anywhere"))
    }

    /// Runs every kernel of this process on `unit` (`--kernels`): one machine can then show
    /// what its other kernel sets compute. Before any kernel has run; the CPU must have it.
    pub fn choose(unit: Simd) -> anyhow::Result<()> {
        anyhow::ensure!(
            Simd::available().contains(&unit),
            "this CPU has no {} kernels (it has {})",
            unit.name(),
            Simd::available().iter().map(|u| u.name()).collect::<Vec<_>>().join(", ")
        );
        let chosen = *IN_USE.get_or_init(|| unit);
        anyhow::ensure!(chosen == unit, "the {} kernels had already run", chosen.name());
        Ok(())
    }

    /// The kernel set's name, as --kernels takes it.
    pub fn name(self) -> &'static str {
        match self {
            Simd::Baseline => "portable",
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => "avx512",
        }
    }

    /// Runs `work` inlined into a function compiled for this unit, so that LLVM vectorises its
    /// loops for it. Mark the closure `#[inline(always)]` (and what it calls): code LLVM does
    /// not inline into the unit's function is compiled for the baseline.
    #[inline(always)]
    pub fn run<R>(self, work: impl FnOnce() -> R) -> R {
        match self {
            Simd::Baseline => work(),
            // Safety: `available` lists a unit only when the CPU has its features.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe { x86::avx2(work) },
            // Safety: as for AVX2.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => unsafe { x86::avx512(work) },
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2<R>(work: impl FnOnce() -> R) -> R {
        work()
    }

    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn avx512<R>(work: impl FnOnce() -> R) -> R {
        work()
    }
}

/// Σ term(v) over `values` in float64, in `LANES` interleaved partial sums added in a fixed
/// order at the end: the loop vectorises (one running sum would be a chain of dependent adds),
/// and the result is the same for every vector unit.
#[inline(always)]
pub fn sum_f64(values: &[f32], term: impl Fn(f64) -> f64) -> f64 {
    const LANES: usize = 8;
    let (blocks, rest) = values.as_chunks::<LANES>();
    let mut sums = [0.0f64; LANES];
    for block in blocks {
        sums.iter_mut().zip(block).for_each(|(sum, &v)| *sum += term(v as f64));
    }
    reached!(SumTail if !rest.is_empty());
    sums.iter().sum::<f64>() + rest.iter().map(|&v| term(v as f64)).sum::<f64>()
}

/// e^z for float64 without a library call, so that a loop of it vectorises: z = n·ln 2 + r with
/// |r| ≤ ln 2 / 2, e^r by its Taylor series to r¹¹/11! (relative error < 1e-13), 2ⁿ built in
/// the exponent bits. z is clamped to ±700 (e^±700 is still a normal float64, and beyond it
/// every use here rounds to the same float32); NaN stays NaN.
#[inline(always)]
pub fn exp(z: f64) -> f64 {
    const LN2_HI: f64 = 0.693_147_180_369_123_8; // ln 2 split so that n·LN2_HI is exact
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5·2⁵²: adding it rounds to an integer
    let z = z.clamp(-700.0, 700.0);
    let shifted = z * std::f64::consts::LOG2_E + ROUND;
    let n = shifted - ROUND; // round(z / ln 2)
    let r = (z - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 39_916_800.0; // 1/11!
    for factorial in [3_628_800.0, 362_880.0, 40_320.0, 5_040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0] {
        p = p * r + 1.0 / factorial;
    }
    // n sits in the low bits of `shifted`; 2ⁿ is n + 1023 in the exponent field.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    p * f64::from_bits(n_bits.wrapping_add(1023) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_f64_adds_every_term_once() {
        for n in [0, 1, 7, 8, 9, 100] {
            let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let want = (0..n).map(|i| (i * i) as f64).sum::<f64>();
            assert_eq!(sum_f64(&values, |v| v * v), want, "n = {n}");
        }
    }

    #[test]
    fn the_polynomial_exp_is_the_library_exp_to_1e_13() {
        for i in -6990..=6990 {
            let z = i as f64 * 0.1 + 0.0123;
            let relative = (exp(z) - z.exp()).abs() / z.exp();
            assert!(relative < 1e-13, "e^{z}: {} vs {}", exp(z), z.exp());
        }
        assert!(exp(f64::NAN).is_nan());
        assert_eq!(exp(f64::NEG_INFINITY) as f32, 0.0);
    }
}
