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
        let gelu = if plant::active(Variant::ErfGelu) { gelu_erf } else { gelu_new };
        // Evaluated in float64 (a tanh each): worth both cores for a prompt, not for one token.
        match h.as_slice_mut() {
            Some(values) if values.len() >= 1 << 16 => {
                values.par_chunks_mut(1 << 14).for_each(|chunk| chunk.iter_mut().for_each(|v| *v = gelu(*v)));
            }
            _ => h.mapv_inplace(gelu),
        }
        stage(tape, Site::new(Checkpoint::Ffn, Some(layer), "gelu"), h.view_mut())?;
        self.c_proj.forward(h.view(), out.view_mut()); // [T, C]
        stage(tape, Site::new(Checkpoint::Ffn, Some(layer), "mlp_out"), out)
    }
}

/// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), HF's `NewGELUActivation`.
/// Evaluated in f64 and rounded once, so the only error left is float32's final rounding; as
/// x / (1 + e^(−2u)), the same function (0.5·(1 + tanh u) = σ(2u)) at the cost of one exp
/// instead of a tanh, which matters on a prompt (a third of the pass went to tanh).
pub fn gelu_new(x: f32) -> f32 {
    if plant::active(Variant::F32Gelu) {
        let inner = (2.0f32 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
        return 0.5 * x * (1.0 + inner.tanh());
    }
    let coefficient = if plant::active(Variant::GeluCoefficient) { 0.0447 } else { 0.044715 };
    let x = x as f64;
    let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + coefficient * x.powi(3));
    (x / (1.0 + (-2.0 * inner).exp())) as f32
}

/// 0.5·x·(1 + erf(x/√2)), the exact GELU: a test build's planted bug, GPT-2 uses the tanh form.
fn gelu_erf(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
}

#[cfg(test)]
mod tests {
    use super::gelu_new;

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
}
