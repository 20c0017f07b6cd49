//! HF's `Conv1D`: a linear layer whose weight is stored [in, out] (the transpose of nn.Linear).

use anyhow::Result;
use ndarray::{Array2, ArrayView2};

use super::weights::{Param, Weights};

pub struct Conv1D {
    weight: Param, // [in, out]
    bias: Param,   // [out]
}

impl Conv1D {
    pub fn load(weights: &Weights, prefix: &str, n_in: usize, n_out: usize) -> Result<Conv1D> {
        Ok(Conv1D {
            weight: weights.get(&format!("{prefix}.weight"), &[n_in, n_out])?,
            bias: weights.get(&format!("{prefix}.bias"), &[n_out])?,
        })
    }

    /// x [T, in] -> x·W + b [T, out]
    pub fn forward(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        let mut y = x.dot(&self.weight.view2()); // [T, out]
        y += &self.bias.view1();
        y
    }
}
