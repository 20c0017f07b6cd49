//! HF's `Conv1D`: a linear layer whose weight is stored [in, out] (the transpose of nn.Linear).

use anyhow::Result;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::kernels;
use super::weights::{Param, Weights};
use crate::plant::{self, Variant};

pub struct Conv1D {
    /// W [in, out] as HF stores it, held transposed [out, in]: the decode step's one-row
    /// product then streams every output's weights as one contiguous row.
    weight_t: Param,
    bias: Param, // [out]
    n_out: usize,
}

impl Conv1D {
    pub fn load(weights: &Weights, prefix: &str, n_in: usize, n_out: usize) -> Result<Conv1D> {
        Ok(Conv1D {
            weight_t: weights.get_aligned(&format!("{prefix}.weight"), [n_in, n_out], true)?,
            bias: weights.get(&format!("{prefix}.bias"), &[n_out])?,
            n_out,
        })
    }

    pub fn n_out(&self) -> usize {
        self.n_out
    }

    /// W [in, out].
    fn weight(&self) -> ArrayView2<'_, f32> {
        self.weight_t.view2().reversed_axes()
    }

    /// x [T, in] -> out = x·W + b [T, out]
    pub fn forward(&self, x: ArrayView2<'_, f32>, mut out: ArrayViewMut2<'_, f32>) {
        matmul(x, self.weight(), out.view_mut());
        out += &self.bias.view1();
    }

    /// x [T, in] -> out = x·W [T, out]: a test build's planted bug drops the bias.
    pub fn forward_without_bias(&self, x: ArrayView2<'_, f32>, out: ArrayViewMut2<'_, f32>) {
        matmul(x, self.weight(), out)
    }

    /// x [T, C] -> out = x·Wᵀ + b [T, C]: a test build's planted bug reads a square weight as
    /// nn.Linear's [out, in].
    pub fn forward_transposed(&self, x: ArrayView2<'_, f32>, mut out: ArrayViewMut2<'_, f32>) {
        matmul(x, self.weight().t(), out.view_mut());
        out += &self.bias.view1();
    }
}

/// out = x [T, K] · w [K, N] ([T, N]): every product with a weight matrix goes through here. One
/// row (the decode step, the last position's logits) of a weight held transposed (Conv1D's,
/// and the tied lm_head wteᵀ) streams it through the one-row kernel; more rows go to
/// the blocked GEMM of the `gemm` crate, which reads either layout. One row allocates nothing.
pub fn matmul(x: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>, mut out: ArrayViewMut2<'_, f32>) {
    if plant::active(Variant::ReverseOrderMatmul) {
        return out.assign(&reverse_order_matmul(x, w));
    }
    if let (1, Some(x_row), Some(w_t)) = (x.nrows(), x.as_slice(), w.t().as_slice())
        && let Some(y) = out.as_slice_mut()
    {
        return kernels::gemv_rows(x_row, w_t, y);
    }
    kernels::gemm(x, w, out)
}

/// x [T, K] · w [K, N] -> [T, N] for a w held transposed (wteᵀ), every row summed exactly as
/// `matmul` sums a single row: the full logits' last row is then bit for bit the last-position
/// logits of generation (checkpoint 9's invariant), by construction.
pub fn matmul_by_rows(x: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>) -> Array2<f32> {
    if plant::active(Variant::ReverseOrderMatmul) {
        return reverse_order_matmul(x, w);
    }
    let w_t = w.t();
    let rows = w_t.as_slice().expect("matmul_by_rows takes a weight held transposed");
    let mut y = Array2::<f32>::zeros((x.nrows(), w.ncols())); // [T, N]
    kernels::gemm_rows(x, rows, &mut y);
    y
}

/// The correct variant: a plain loop accumulating in float32, k from last to first; another
/// summation order than the blocked kernel's, for the test that proves the accuracy verdict
/// passes it.
fn reverse_order_matmul(x: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>) -> Array2<f32> {
    let (t, k) = x.dim();
    let n = w.ncols();
    let mut y = Array2::<f32>::zeros((t, n));
    if let Some(w_t) = w.t().as_slice() {
        // w is a transposed row-major matrix (the tied lm_head, wteᵀ): its columns are
        // contiguous, so each output is one dot product over k.
        for i in 0..t {
            let x_row = x.row(i);
            for j in 0..n {
                let col = &w_t[j * k..(j + 1) * k];
                y[[i, j]] = (0..k).rev().fold(0.0f32, |acc, kk| acc + x_row[kk] * col[kk]);
            }
        }
        return y;
    }
    for i in 0..t {
        let mut row = y.row_mut(i);
        for kk in (0..k).rev() {
            let a = x[[i, kk]];
            row.zip_mut_with(&w.row(kk), |y, &b| *y += a * b);
        }
    }
    y
}
