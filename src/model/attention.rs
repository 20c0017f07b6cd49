//! Causal multi-head self-attention with a KV cache: c_attn, split into heads, scaled scores,
//! softmax, weighted values, c_proj.

use anyhow::Result;
use ndarray::{Array2, Array3, ArrayView2, Axis, s};

use super::config::Config;
use super::kv_cache::KvCache;
use super::linear::Conv1D;
use super::weights::Weights;
use crate::checkpoint::Checkpoint;
use crate::plant::{self, Variant};
use crate::tape::{Site, Tape, hook};

pub struct Attention {
    c_attn: Conv1D,
    c_proj: Conv1D,
    n_head: usize,
    head_dim: usize,
}

impl Attention {
    pub fn load(weights: &Weights, prefix: &str, config: &Config) -> Result<Attention> {
        let c = config.n_embd;
        Ok(Attention {
            c_attn: Conv1D::load(weights, &format!("{prefix}.c_attn"), c, 3 * c)?,
            c_proj: Conv1D::load(weights, &format!("{prefix}.c_proj"), c, c)?,
            n_head: config.n_head,
            head_dim: config.head_dim(),
        })
    }

    /// x [T, C] at positions cache.len()..cache.len()+T -> [T, C]. Writes this layer's K and V
    /// into the cache; the caller advances the cache once every layer has run.
    pub fn forward(
        &self,
        x: ArrayView2<'_, f32>,
        layer: usize,
        cache: &mut KvCache,
        tape: &mut dyn Tape,
    ) -> Result<Array2<f32>> {
        let (t, c) = x.dim();
        let (nh, hd) = (self.n_head, self.head_dim);
        let past = cache.len();
        let qkv = self.c_attn.forward(x); // [T, 3C]
        // [T, 3C] -> [T, 3, nh, hd] -> [3, nh, T, hd]: HF's split(C) then view(...).transpose(1, 2)
        let qkv = qkv.into_shape_with_order((t, 3, nh, hd)).expect("3C = 3·nh·hd");
        let qkv = qkv.permuted_axes([1, 2, 0, 3]).as_standard_layout().into_owned();
        let (q, k, v) = (qkv.index_axis(Axis(0), 0), qkv.index_axis(Axis(0), 1), qkv.index_axis(Axis(0), 2)); // [nh, T, hd] each
        for (name, tensor) in [("q", q), ("k", k), ("v", v)] {
            hook(tape, Site::new(Checkpoint::Qkv, Some(layer), name), tensor)?;
        }

        let want_scores = tape.wants(Checkpoint::AttnScores, Some(layer));
        let recorded_shape = if want_scores { (nh, t, past + t) } else { (0, 0, 0) };
        let mut scores = Array3::<f32>::zeros(recorded_shape); // [nh, T, past+T] when recorded
        let mut probs = Array3::<f32>::zeros(recorded_shape); // [nh, T, past+T] when recorded
        let mut y = Array2::<f32>::zeros((t, c)); // [T, C], heads merged
        // HF multiplies by head_dim^-0.5, computed in double and applied in float32.
        let scale = (hd as f64).powf(-0.5) as f32;
        for h in 0..nh {
            let (k_all, v_all) =
                cache.append_head(layer, h, k.index_axis(Axis(0), h), v.index_axis(Axis(0), h)); // [past+T, hd]
            let mut att = q.index_axis(Axis(0), h).dot(&k_all.t()); // [T, past+T]
            att *= scale;
            // A test build's planted bug masks as if nothing were cached.
            mask_future(&mut att, if plant::active(Variant::DecodeMaskIgnoresCache) { 0 } else { past });
            if want_scores {
                scores.index_axis_mut(Axis(0), h).assign(&att);
            }
            for mut row in att.rows_mut() {
                softmax_in_place(row.as_slice_mut().expect("rows of a standard-layout array are contiguous"));
            }
            if want_scores {
                probs.index_axis_mut(Axis(0), h).assign(&att);
            }
            let out = att.dot(&v_all); // [T, hd]
            y.slice_mut(s![.., h * hd..(h + 1) * hd]).assign(&out);
        }
        if want_scores {
            hook(tape, Site::new(Checkpoint::AttnScores, Some(layer), "scores"), scores.view())?;
            hook(tape, Site::new(Checkpoint::AttnScores, Some(layer), "attn_probs"), probs.view())?;
        }
        let mut out = self.c_proj.forward(y.view()); // [T, C]
        if plant::active(Variant::AttnOutShift) {
            out += 3e-6;
        }
        hook(tape, Site::new(Checkpoint::AttnOutput, Some(layer), "attn_out"), out.view())?;
        Ok(out)
    }
}

/// The causal mask: query i of a chunk that starts at position `past` sees keys 0..=past+i; the
/// later keys get −∞, so softmax gives them exactly 0 (HF adds the float minimum instead).
fn mask_future(att: &mut Array2<f32>, past: usize) {
    for (i, mut row) in att.rows_mut().into_iter().enumerate() {
        row.slice_mut(s![past + i + 1..]).fill(f32::NEG_INFINITY);
    }
}

/// Numerically stable softmax of one row: exp(x − max) / Σ exp(x − max), the sum in f64.
pub fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x as f64;
    }
    let inv = (1.0 / sum) as f32;
    row.iter_mut().for_each(|x| *x *= inv);
}

#[cfg(test)]
mod tests {
    use super::softmax_in_place;

    #[test]
    fn softmax_sums_to_one_and_survives_large_inputs() {
        let mut row = [1000.0f32, 1001.0, 1002.0];
        softmax_in_place(&mut row);
        let e = [(-2.0f64).exp(), (-1.0f64).exp(), 1.0];
        let total: f64 = e.iter().sum();
        for (got, want) in row.iter().zip(e) {
            assert!((*got as f64 - want / total).abs() < 1e-7);
        }
        let mut masked = [0.0f32, f32::NEG_INFINITY];
        softmax_in_place(&mut masked);
        assert_eq!(masked, [1.0, 0.0]);
    }
}
