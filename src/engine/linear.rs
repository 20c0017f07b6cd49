//! HF's `Conv1D`: a linear layer whose weight is stored [in, out] (the transpose of nn.Linear).

use anyhow::Result;
use ndarray::{ArrayView2, ArrayViewMut2};

use super::kernels;
use super::packed::PackedMatrix;
use super::weights::{Orientation, Param, Weights};

pub struct Conv1D {
    /// W [in, out] as HF stores it, laid out in panels for the kernels.
    weight: PackedMatrix,
    bias: Param, // [out]
}

impl Conv1D {
    pub fn load(weights: &Weights, prefix: &str, n_in: usize, n_out: usize) -> Result<Conv1D> {
        Ok(Conv1D {
            weight: weights.get_packed(&format!("{prefix}.weight"), [n_in, n_out], Orientation::AsIs)?,
            bias: weights.get(&format!("{prefix}.bias"), &[n_out])?,
        })
    }

    pub fn n_out(&self) -> usize {
        self.weight.n()
    }

    /// x [T, in] -> out = x·W + b [T, out]
    pub fn forward(&self, x: ArrayView2<'_, f32>, out: ArrayViewMut2<'_, f32>) {
        matmul(x, &self.weight, Some(self.bias.values()), out);
    }
}

/// out = x [T, K] · W [K, N] (+ bias [N] on every row) ([T, N]): every product with a weight
/// matrix goes through here. One row (the decode step, the last position's logits) goes to the
/// one-row kernel, which allocates nothing; more rows to the many-row one. Both sum every
/// output the same way, so the rows of a prompt's product are bit for bit one-row products.
pub fn matmul(
    x: ArrayView2<'_, f32>,
    w: &PackedMatrix,
    bias: Option<&[f32]>,
    mut out: ArrayViewMut2<'_, f32>,
) {
    if let (1, Some(x_row)) = (x.nrows(), x.as_slice())
        && let Some(y) = out.as_slice_mut()
    {
        return kernels::gemv(x_row, w, bias, y);
    }
    kernels::gemm(x, w, bias, out)
}
