//! The GPT-2 MLP: c_fc, the tanh-approximated GELU ("gelu_new"), c_proj.

use anyhow::Result;
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::config::Config;
use super::linear::Conv1D;
use super::scratch::view2;
use super::weights::Weights;
use crate::checkpoint::Checkpoint;
use crate::plant::{self, Variant};
use crate::tape::{Site, Tape, stage};

pub struct Mlp {
    c_fc: Conv1D,
    c_proj: Conv1D,
}

impl Mlp {
    pub fn load(weights: &Weights, prefix: &str, config: &Config) -> Result<Mlp> {
        let (c, inner) = (config.n_embd, config.n_inner);
        Ok(Mlp {
            c_fc: Conv1D::load(weights, &format!("{prefix}.c_fc"), c, inner)?,
            c_proj: Conv1D::load(weights, &format!("{prefix}.c_proj"), inner, c)?,
        })
    }

    /// x [T, C] -> out [T, C]; `fc` holds the hidden activations [T, 4C].
    pub fn forward(
        &self,
        x: ArrayView2<'_, f32>,
        layer: usize,
        tape: &mut dyn Tape,
        fc: &mut Vec<f32>,
        mut out: ArrayViewMut2<'_, f32>,
    ) -> Result<()> {
        let mut h = view2(fc, (x.nrows(), self.c_fc.n_out())); // [T, 4C]
        if plant::active(Variant::MlpBiasDropped) {
            self.c_fc.forward_without_bias(x, h.view_mut());
        } else {
            self.c_fc.forward(x, h.view_mut());
        }
        gelu_in_place(h.as_slice_mut().expect("a scratch view is contiguous"));
        stage(tape, Site::new(Checkpoint::Ffn, Some(layer), "gelu"), h.view_mut())?;
        self.c_proj.forward(h.view(), out.view_mut()); // [T, C]
        stage(tape, Site::new(Checkpoint::Ffn, Some(layer), "mlp_out"), out)
    }
}

/// HF's `NewGELUActivation` on every value: branch-free float64 arithmetic that LLVM vectorises
/// (compiled for AVX-512 or AVX2 when the CPU has them), both cores for a prompt. A test build's
/// planted variants take the scalar path.
fn gelu_in_place(values: &mut [f32]) {
    if plant::active(Variant::ErfGelu)
        || plant::active(Variant::F32Gelu)
        || plant::active(Variant::GeluCoefficient)
    {
        let gelu = if plant::active(Variant::ErfGelu) { gelu_erf } else { planted_gelu_new };
        return values.iter_mut().for_each(|v| *v = gelu(*v));
    }
    let gelu_all = gelu_all_kernel();
    if values.len() >= 1 << 16 {
        values.par_chunks_mut(1 << 14).for_each(gelu_all);
    } else {
        gelu_all(values);
    }
}

fn gelu_all_kernel() -> fn(&mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512dq") {
            // Safety: the CPU has the features the function is compiled for.
            return |values| unsafe { gelu_all_avx512(values) };
        }
        if has!("avx2") {
            return |values| unsafe { gelu_all_avx2(values) };
        }
    }
    |values| values.iter_mut().for_each(|v| *v = gelu_new(*v))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
fn gelu_all_avx512(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = gelu_new(*v))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gelu_all_avx2(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = gelu_new(*v))
}

/// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), HF's `NewGELUActivation`, as x / (1 + e^(−2u)):
/// the same function (0.5·(1 + tanh u) = σ(2u)) with one exp instead of a tanh. Evaluated in
/// float64 and rounded once, so the only error left is float32's final rounding (the exp's
/// polynomial is good to ~1e-13, far below it).
#[inline(always)]
pub fn gelu_new(x: f32) -> f32 {
    let x = x as f64;
    let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
    (x / (1.0 + exp(-2.0 * u))) as f32
}

/// e^z for float64 without a library call, so that a loop of it vectorises: z = n·ln 2 + r with
/// |r| ≤ ln 2 / 2, e^r by its Taylor series to r¹¹/11! (relative error < 1e-13), 2ⁿ built in
/// the exponent bits. z is clamped to ±700 (e^700 ≈ 1e304: 1 + e^z is still finite; beyond,
/// the GELU is x or 0 to float32 anyway).
#[inline(always)]
fn exp(z: f64) -> f64 {
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

/// The planted variants of the tanh GELU in a test build: computed in float32, or with a
/// wrong coefficient.
fn planted_gelu_new(x: f32) -> f32 {
    if plant::active(Variant::F32Gelu) {
        let inner = (2.0f32 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
        return 0.5 * x * (1.0 + inner.tanh());
    }
    let x = x as f64;
    let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.0447 * x.powi(3));
    (x / (1.0 + (-2.0 * inner).exp())) as f32
}

/// 0.5·x·(1 + erf(x/√2)), the exact GELU: a test build's planted bug, GPT-2 uses the tanh form.
fn gelu_erf(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
}

#[cfg(test)]
mod tests {
    use super::{exp, gelu_in_place, gelu_new};

    #[test]
    fn gelu_new_matches_known_values() {
        // Reference values from Python's math module evaluating the same formula in double
        // precision: this guards the constants and the shape of the expression.
        assert_eq!(gelu_new(0.0), 0.0);
        assert!((gelu_new(1.0) - 0.841192).abs() < 1e-6);
        assert!((gelu_new(-1.0) + 0.158808).abs() < 1e-6);
        assert!((gelu_new(3.0) - 2.996363).abs() < 1e-6);
        // Far out it becomes the identity on the right and zero on the left.
        assert_eq!(gelu_new(20.0), 20.0);
        assert!(gelu_new(-20.0).abs() < 1e-30);
    }

    #[test]
    fn the_polynomial_exp_is_the_library_exp_to_1e_13() {
        for i in -6990..=6990 {
            let z = i as f64 * 0.1 + 0.0123;
            let relative = (exp(z) - z.exp()).abs() / z.exp();
            assert!(relative < 1e-13, "e^{z}: {} vs {}", exp(z), z.exp());
        }
    }

    #[test]
    fn the_vectorised_gelu_rounds_the_float64_formula() {
        // Every float32 of a dense grid through the kernel this machine uses, against the formula
        // with the library's exp: equal, or one float32 step apart where the float64 value lies
        // within the polynomial's error of a rounding boundary.
        let values: Vec<f32> = (-200_000..200_000).map(|i| i as f32 * 1e-4).collect();
        let mut fast = values.clone();
        gelu_in_place(&mut fast);
        let mut off = 0;
        for (&x, &y) in values.iter().zip(&fast) {
            let xd = x as f64;
            let u = (2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd * xd * xd);
            let exact = (xd / (1.0 + (-2.0 * u).exp())) as f32;
            if y != exact {
                assert!((y - exact).abs() <= exact.abs() * f32::EPSILON, "gelu({x}): {y} vs {exact}");
                off += 1;
            }
        }
        assert!(off < values.len() / 10_000, "{off} of {} values one step off", values.len());
        // The builds for other CPUs (where this one can run them) compute the same values.
        let mut portable = values.clone();
        portable.iter_mut().for_each(|v| *v = gelu_new(*v));
        assert!(portable == fast, "the portable build differs");
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let mut avx2 = values.clone();
            unsafe { super::gelu_all_avx2(&mut avx2) };
            assert!(avx2 == fast, "the AVX2 build differs");
        }
    }
}
