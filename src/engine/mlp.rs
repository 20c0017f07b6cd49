//! The GPT-2 MLP: c_fc, the tanh-approximated GELU ("gelu_new"), c_proj.

use anyhow::Result;
use ndarray::{ArrayView2, ArrayViewMut2};

use super::checkpoint::Checkpoint;
use super::config::Config;
use super::linear::Conv1D;
use super::math::{Simd, exp};
use super::scratch::{contiguous, view2};
use super::tape::{Site, Tape, stage};
use super::team::team;
use super::weights::Weights;

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
        self.c_fc.forward(x, h.view_mut());
        gelu_in_place(contiguous(&mut h));
        stage(tape, Site::new(Checkpoint::Ffn, Some(layer), "gelu"), h.view_mut())?;
        self.c_proj.forward(h.view(), out.view_mut()); // [T, C]
        stage(tape, Site::new(Checkpoint::Ffn, Some(layer), "mlp_out"), out)
    }
}

/// HF's `NewGELUActivation` on every value: branch-free float64 arithmetic that LLVM vectorises
/// (compiled for AVX-512 or AVX2 when the CPU has them), both cores for a prompt.
fn gelu_in_place(values: &mut [f32]) {
    let simd = Simd::best();
    team().for_each_chunk(values, GELU_CHUNK, &|_, chunk| {
        simd.run(
            #[inline(always)]
            || chunk.iter_mut().for_each(|v| *v = gelu_new(*v)),
        )
    });
}

/// Values per chunk the team's threads take: a decode step's 3072 are one, a prompt's split.
const GELU_CHUNK: usize = 1 << 13;

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

#[cfg(test)]
mod tests {
    use super::{Simd, gelu_in_place, gelu_new};

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
        for simd in Simd::available() {
            let mut other = values.clone();
            simd.run(
                #[inline(always)]
                || other.iter_mut().for_each(|v| *v = gelu_new(*v)),
            );
            assert!(other == fast, "the {simd:?} build differs");
        }
    }
}
