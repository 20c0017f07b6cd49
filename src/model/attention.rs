//! Causal multi-head self-attention with a KV cache: c_attn, split into heads, scaled scores,
//! softmax, weighted values, c_proj.

use anyhow::Result;
use ndarray::{ArrayView2, ArrayViewMut2, Axis, s};

use super::config::Config;
use super::kv_cache::KvCache;
use super::linear::Conv1D;
use super::scratch::{AttnScratch, view2, view3, view4};
use super::weights::Weights;
use crate::checkpoint::Checkpoint;
use crate::plant::{self, Variant};
use crate::tape::{Site, Tape, stage};

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
    /// x [T, C] at positions cache.len()..cache.len()+T -> out [T, C]. Writes this layer's K
    /// and V into the cache; the caller advances the cache once every layer has run. `s` holds
    /// the intermediate tensors.
    pub fn forward(
        &self,
        x: ArrayView2<'_, f32>,
        layer: usize,
        cache: &mut KvCache,
        tape: &mut dyn Tape,
        s: &mut AttnScratch,
        mut out: ArrayViewMut2<'_, f32>,
    ) -> Result<()> {
        let (t, c) = x.dim();
        let (nh, hd) = (self.n_head, self.head_dim);
        let past = cache.len();
        let mut qkv = view2(&mut s.qkv, (t, 3 * c)); // [T, 3C]
        self.c_attn.forward(x, qkv.view_mut());
        // [T, 3C] -> [T, 3, nh, hd] -> [3, nh, T, hd]: HF's split(C) then view(...).transpose(1, 2)
        let split = qkv.view().into_shape_with_order((t, 3, nh, hd)).expect("3C = 3·nh·hd"); // [T, 3, nh, hd]
        let mut heads = view4(&mut s.heads, (3, nh, t, hd)); // [3, nh, T, hd]: q, k, v by head
        heads.assign(&split.permuted_axes([1, 2, 0, 3]));
        // A test build's planted bug takes q and k from each other's thirds of c_attn.
        let (q_at, k_at) = if plant::active(Variant::QkSwapped) { (1, 0) } else { (0, 1) };
        for (name, at) in [("q", q_at), ("k", k_at), ("v", 2)] {
            stage(tape, Site::new(Checkpoint::Qkv, Some(layer), name), heads.index_axis_mut(Axis(0), at))?;
        }
        let (q, k, v) =
            (heads.index_axis(Axis(0), q_at), heads.index_axis(Axis(0), k_at), heads.index_axis(Axis(0), 2)); // [nh, T, hd] each
        let (k_all, v_all) = cache.append(layer, k, v); // [nh, S, hd], S = past + T

        // HF multiplies by head_dim^-0.5, computed in double and applied in float32.
        let scale =
            if plant::active(Variant::MissingAttnScale) { 1.0 } else { (hd as f64).powf(-0.5) as f32 };
        let mut scores = view3(&mut s.scores, (nh, t, past + t)); // [nh, T, S]
        for h in 0..nh {
            let mut att = scores.index_axis_mut(Axis(0), h); // [T, S]
            query_key(q.index_axis(Axis(0), h), k_all.index_axis(Axis(0), h), att.view_mut());
            att *= scale;
            mask_future(att, past);
        }
        stage(tape, Site::new(Checkpoint::AttnScores, Some(layer), "scores"), scores.view_mut())?;
        let mut probs = scores; // [nh, T, S], softmax in place
        for mut row in probs.rows_mut() {
            softmax_in_place(row.as_slice_mut().expect("rows of a standard-layout array are contiguous"));
        }
        stage(tape, Site::new(Checkpoint::AttnScores, Some(layer), "attn_probs"), probs.view_mut())?;

        let mut merged = view2(&mut s.merged, (t, c)); // [T, C], heads side by side: [:, h·hd + d]
        for h in 0..nh {
            // A test build's planted bug merges as [T, hd, nh]: merged[:, d·nh + h].
            let columns = if plant::active(Variant::HeadMergeOrder) {
                s![.., h..;nh]
            } else {
                s![.., h * hd..(h + 1) * hd]
            };
            weighted_values(
                probs.index_axis(Axis(0), h),
                v_all.index_axis(Axis(0), h),
                merged.slice_mut(columns),
            ); // [T, hd]
        }
        if plant::active(Variant::AttnProjTransposed) {
            self.c_proj.forward_transposed(merged.view(), out.view_mut());
        } else {
            self.c_proj.forward(merged.view(), out.view_mut());
        } // [T, C]
        if plant::active(Variant::AttnOutShift) {
            out += 3e-6;
        }
        stage(tape, Site::new(Checkpoint::AttnOutput, Some(layer), "attn_out"), out)
    }
}

/// att = q [T, hd] · k [S, hd]ᵀ ([T, S]). One query (the decode step) as plain dot products:
/// ndarray's blocked product (matrixmultiply) would spend more on packing than on the product.
fn query_key(q: ArrayView2<'_, f32>, k: ArrayView2<'_, f32>, mut att: ArrayViewMut2<'_, f32>) {
    if q.nrows() == 1 {
        let query = q.row(0);
        for (score, key) in att.row_mut(0).iter_mut().zip(k.rows()) {
            *score = query.dot(&key);
        }
    } else {
        att.assign(&q.dot(&k.t()));
    }
}

/// out = p [T, S] · v [S, hd] ([T, hd]); one query as a sum of value rows, in place, as above.
fn weighted_values(p: ArrayView2<'_, f32>, v: ArrayView2<'_, f32>, mut out: ArrayViewMut2<'_, f32>) {
    if p.nrows() == 1 {
        let mut out = out.row_mut(0);
        out.fill(0.0);
        for (&weight, value) in p.row(0).iter().zip(v.rows()) {
            out.scaled_add(weight, &value);
        }
    } else {
        out.assign(&p.dot(&v));
    }
}

/// The causal mask: query i of a chunk that starts at position `past` sees keys 0..=past+i; the
/// later keys get −∞, so softmax gives them exactly 0 (HF adds the float minimum instead).
fn mask_future(mut att: ArrayViewMut2<'_, f32>, past: usize) {
    // Test builds' planted bugs: a mask that ignores the cached positions (the decode step's
    // query sees only the first key), or one that lets each query see the next key too.
    let past = if plant::active(Variant::DecodeMaskIgnoresCache) { 0 } else { past };
    let seen = if plant::active(Variant::MaskOffByOne) { 2 } else { 1 };
    for (i, mut row) in att.rows_mut().into_iter().enumerate() {
        let end = (past + i + seen).min(row.len());
        row.slice_mut(s![end..]).fill(f32::NEG_INFINITY);
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
