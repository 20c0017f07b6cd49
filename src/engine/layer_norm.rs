//! LayerNorm over the channel dimension, as torch.nn.LayerNorm (biased variance).

use anyhow::Result;
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2};

use super::math::{Simd, sum_f64};
use super::team::team;
use super::weights::{Param, Weights};

pub struct LayerNorm {
    weight: Param, // [C]
    bias: Param,   // [C]
    eps: f64,
}

impl LayerNorm {
    pub fn load(weights: &Weights, prefix: &str, n_embd: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: weights.get(&format!("{prefix}.weight"), &[n_embd])?,
            bias: weights.get(&format!("{prefix}.bias"), &[n_embd])?,
            eps,
        })
    }

    /// x [T, C] -> out [T, C]
    pub fn forward(&self, x: ArrayView2<'_, f32>, out: ArrayViewMut2<'_, f32>) {
        layer_norm(x, self.weight.view1(), self.bias.view1(), self.eps, out)
    }
}

/// (x − mean) / sqrt(var + eps) · weight + bias, row by row. x [T, C], weight and bias [C].
pub fn layer_norm(
    x: ArrayView2<'_, f32>,
    weight: ArrayView1<'_, f32>,
    bias: ArrayView1<'_, f32>,
    eps: f64,
    mut y: ArrayViewMut2<'_, f32>, // [T, C]
) {
    let c = x.ncols();
    let x = x.as_standard_layout(); // [T, C], a view unless x was not contiguous
    let x = x.as_slice().expect("standard layout");
    let (weight, bias) = (weight.as_standard_layout(), bias.as_standard_layout());
    let (weight, bias) =
        (weight.as_slice().expect("standard layout"), bias.as_slice().expect("standard layout"));
    let y = y.as_slice_mut().expect("the output is a contiguous [T, C]");
    let simd = Simd::best();
    // A prompt's rows are shared out on the team; a decode step's one row runs here.
    team().for_each_chunk(y, ROWS_PER_CHUNK * c, &|chunk, y| {
        let x = &x[chunk * ROWS_PER_CHUNK * c..];
        simd.run(
            #[inline(always)]
            || {
                for (y, x) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                    normalise_row(x, weight, bias, eps, y);
                }
            },
        )
    });
}

/// Rows of a prompt per chunk of the team's work.
const ROWS_PER_CHUNK: usize = 8;

/// One row: the statistics are accumulated in float64, so they are as exact as float32 inputs
/// allow (torch's float32 kernel approaches the same values from below).
#[inline(always)]
fn normalise_row(x: &[f32], weight: &[f32], bias: &[f32], eps: f64, y: &mut [f32]) {
    let n = x.len() as f64;
    let mean = sum_f64(x, |v| v) / n;
    let var = sum_f64(x, |v| (v - mean) * (v - mean)) / n;
    let inv_std = 1.0 / (var + eps).sqrt();
    for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(weight).zip(bias) {
        *y = ((x as f64 - mean) * inv_std) as f32 * w + b;
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    #[test]
    fn normalises_rows_then_scales_and_shifts() {
        // Row [1, 2, 3, 4]: mean 2.5, biased variance 1.25.
        let x = array![[1.0f32, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]];
        let (w, b) = (array![1.0f32, 1.0, 2.0, 2.0], array![0.0f32, 0.5, 0.0, 0.5]);
        let mut y = ndarray::Array2::zeros(x.raw_dim());
        super::layer_norm(x.view(), w.view(), b.view(), 1e-5, y.view_mut());
        let s = 1.0 / (1.25f64 + 1e-5).sqrt();
        let expected = [-1.5 * s, -0.5 * s + 0.5, 2.0 * 0.5 * s, 2.0 * 1.5 * s + 0.5];
        for (got, want) in y.row(0).iter().zip(expected) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
        // A constant row normalises to zero: only the bias is left.
        assert_eq!(y.row(1).to_vec(), vec![0.0, 0.5, 0.0, 0.5]);
    }
}
