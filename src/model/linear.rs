//! HF's `Conv1D`: a linear layer whose weight is stored [in, out] (the transpose of nn.Linear).

use anyhow::Result;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::kernels;
use super::packed::PackedMatrix;
use super::weights::{Orientation, Param, Weights};
use crate::plant::{self, Variant};

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

    /// x [T, in] -> out = x·W [T, out]: a test build's planted bug drops the bias.
    pub fn forward_without_bias(&self, x: ArrayView2<'_, f32>, out: ArrayViewMut2<'_, f32>) {
        matmul(x, &self.weight, None, out)
    }

    /// x [T, C] -> out = x·Wᵀ + b [T, C]: a test build's planted bug reads a square weight as
    /// nn.Linear's [out, in].
    pub fn forward_transposed(&self, x: ArrayView2<'_, f32>, mut out: ArrayViewMut2<'_, f32>) {
        out.assign(&x.dot(&self.weight.to_dense().t()));
        out += &self.bias.view1();
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
    if plant::active(Variant::ReverseOrderMatmul) {
        out.assign(&reverse_order_matmul(x, w.to_dense().view()));
        if let Some(bias) = bias {
            out += &ndarray::ArrayView1::from(bias);
        }
        return;
    }
    if let (1, Some(x_row)) = (x.nrows(), x.as_slice())
        && let Some(y) = out.as_slice_mut()
    {
        return kernels::gemv(x_row, w, bias, y);
    }
    kernels::gemm(x, w, bias, out)
}

/// The correct variant: a plain loop accumulating in float32, k from last to first; another
/// summation order than the kernels', for the test that proves the accuracy verdict passes it.
fn reverse_order_matmul(x: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>) -> Array2<f32> {
    let w_t = w.t().as_standard_layout().into_owned(); // [N, K]: each output one dot product
    Array2::from_shape_fn((x.nrows(), w.ncols()), |(i, j)| {
        let (x_row, column) = (x.row(i), w_t.row(j));
        (0..x_row.len()).rev().fold(0.0f32, |acc, k| acc + x_row[k] * column[k])
    })
}
