//! Causal multi-head self-attention with a KV cache: c_attn, split into heads, scaled scores,
//! softmax, weighted values, c_proj.

use anyhow::Result;
use ndarray::{ArrayView2, ArrayViewMut2, Axis, s};

use super::checkpoint::Checkpoint;
use super::config::Config;
use super::kv_cache::{KEY_BLOCK, KvCache};
use super::linear::Conv1D;
use super::math::{Simd, exp, sum_f64};
use super::paths::reached;
use super::scratch::{AttnScratch, contiguous, view2, view3};
use super::tape::{Site, Tape, stage};
use super::team::team;
use super::weights::Weights;

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

    /// x [T, C] at positions cache.seq_len()..cache.seq_len()+T -> out [T, C]. Writes this layer's K
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
        let past = cache.seq_len();
        let mut qkv = view2(&mut s.qkv, (t, 3 * c)); // [T, 3C]
        self.c_attn.forward(x, qkv.view_mut());
        // [T, 3C] -> [T, 3, nh, hd] -> [3, nh, T, hd]: HF's split(C) then view(...).transpose(1, 2),
        // as a view of qkv (head h of q is qkv[:, h·hd..(h + 1)·hd]), nothing copied.
        let mut heads =
            qkv.into_shape_with_order((t, 3, nh, hd)).expect("3C = 3·nh·hd").permuted_axes([1, 2, 0, 3]); // [3, nh, T, hd]: q, k, v by head
        for (at, name) in ["q", "k", "v"].into_iter().enumerate() {
            stage(tape, Site::new(Checkpoint::Qkv, Some(layer), name), heads.index_axis_mut(Axis(0), at))?;
        }
        let heads = heads.view();
        let (q, k, v) =
            (heads.index_axis(Axis(0), 0), heads.index_axis(Axis(0), 1), heads.index_axis(Axis(0), 2)); // [nh, T, hd] each
        let (k_t, v_all) = cache.append(layer, k, v); // [nh, hd, ≥S] keys as columns, [nh, S, hd]
        let s_len = past + t;

        // The heads run on the team's threads, each a chunk of the buffers, in three rounds
        // because a tape may look at (or, isolating a stage, replace) the scores and the
        // probabilities in between.
        let (team, simd) = (team(), Simd::best());
        // HF multiplies by head_dim^-0.5, computed in double and applied in float32.
        let scale = (hd as f64).powf(-0.5) as f32;
        let mut scores = view3(&mut s.scores, (nh, t, s_len)); // [nh, T, S]
        team.for_each_chunk(contiguous(&mut scores), t * s_len, &|h, att| {
            simd.run(
                #[inline(always)]
                || query_key(q.index_axis(Axis(0), h), k_t.index_axis(Axis(0), h), past, scale, att),
            )
        });
        stage(tape, Site::new(Checkpoint::AttnScores, Some(layer), "scores"), scores.view_mut())?;
        let mut probs = scores; // [nh, T, S], softmax in place
        team.for_each_chunk(contiguous(&mut probs), t * s_len, &|_, rows| {
            simd.run(
                #[inline(always)]
                || rows.chunks_exact_mut(s_len).for_each(softmax_in_place),
            )
        });
        stage(tape, Site::new(Checkpoint::AttnScores, Some(layer), "attn_probs"), probs.view_mut())?;

        let mut context = view3(&mut s.context, (nh, t, hd)); // [nh, T, hd]
        let probs = probs.view();
        team.for_each_chunk(contiguous(&mut context), t * hd, &|h, out| {
            simd.run(
                #[inline(always)]
                || weighted_values(probs.index_axis(Axis(0), h), v_all.index_axis(Axis(0), h), out),
            )
        });
        let mut merged = view2(&mut s.merged, (t, c)); // [T, C], heads side by side: [:, h·hd + d]
        for (h, head) in context.outer_iter().enumerate() {
            merged.slice_mut(s![.., h * hd..(h + 1) * hd]).assign(&head);
        }
        self.c_proj.forward(merged.view(), out.view_mut()); // [T, C]
        stage(tape, Site::new(Checkpoint::AttnOutput, Some(layer), "attn_out"), out)
    }
}

/// One head's scaled scores: att[i, s] = scale · Σ_d q[i, d]·k[s, d] for the keys query i sees,
/// −∞ for the others (the causal mask: softmax gives them exactly 0; HF adds the float minimum
/// instead). q [T, hd], k_t [hd, ≥S] the keys as columns, padded to whole `KEY_BLOCK`s; att
/// [T, S]. Each dot product is summed over d in order; `KEY_BLOCK` of them at a time, so that
/// they vectorise across the keys. Rows of a prompt are summed as a decode step's one row.
#[inline(always)]
fn query_key(q: ArrayView2<'_, f32>, k_t: ArrayView2<'_, f32>, past: usize, scale: f32, att: &mut [f32]) {
    let s_len = att.len() / q.nrows();
    let keys = k_t.as_slice().expect("the cache is contiguous"); // [hd, ≥S]
    let stride = k_t.ncols();
    for (i, (row, q)) in att.chunks_exact_mut(s_len).zip(q.rows()).enumerate() {
        let seen = visible_keys(past, i, s_len);
        for block in (0..seen).step_by(KEY_BLOCK) {
            reached!(LaterKeyBlock if block > 0);
            let mut sums = [0.0f32; KEY_BLOCK];
            for (d, &q) in q.iter().enumerate() {
                let k = &keys[d * stride + block..][..KEY_BLOCK];
                sums.iter_mut().zip(k).for_each(|(sum, &k)| *sum += q * k);
            }
            let end = (block + KEY_BLOCK).min(seen);
            reached!(PartialKeyBlock if end - block < KEY_BLOCK);
            row[block..end].iter_mut().zip(sums).for_each(|(score, sum)| *score = sum * scale);
        }
        row[seen..].fill(f32::NEG_INFINITY);
    }
}

/// The keys query i of a chunk starting at position `past` sees: 0..=past+i, of `s_len` cached.
fn visible_keys(past: usize, i: usize, s_len: usize) -> usize {
    (past + i + 1).min(s_len)
}

/// One head's output: out[i, :] = Σ_s p[i, s]·v[s, :], p [T, S], v [S, hd], out [T, hd]; summed
/// over s in order, up to the row's last nonzero probability (the masked keys add nothing).
#[inline(always)]
fn weighted_values(p: ArrayView2<'_, f32>, v: ArrayView2<'_, f32>, out: &mut [f32]) {
    let hd = v.ncols();
    let values = v.as_slice().expect("the cache's rows are contiguous"); // [S, hd]
    for (out, p) in out.chunks_exact_mut(hd).zip(p.rows()) {
        let p = p.as_slice().expect("a scratch view is contiguous");
        let seen = p.iter().rposition(|&p| p != 0.0).map_or(0, |last| last + 1);
        out.fill(0.0);
        // Blocks of the head's dimensions small enough to sum in registers.
        for (d, out) in (0..hd).step_by(VALUE_BLOCK).zip(out.chunks_mut(VALUE_BLOCK)) {
            if let Ok(out) = <&mut [f32; VALUE_BLOCK]>::try_from(&mut *out) {
                // A whole block: its sums stay in registers.
                reached!(WholeValueBlock);
                reached!(LaterWholeValueBlock if d > 0);
                let mut sums = [0.0f32; VALUE_BLOCK];
                for (s, &p) in p[..seen].iter().enumerate() {
                    let v = &values[s * hd + d..][..VALUE_BLOCK];
                    sums.iter_mut().zip(v).for_each(|(sum, &v)| *sum += p * v);
                }
                *out = sums;
            } else {
                reached!(PartialValueBlock);
                for (s, &p) in p[..seen].iter().enumerate() {
                    let v = &values[s * hd + d..][..out.len()];
                    out.iter_mut().zip(v).for_each(|(sum, &v)| *sum += p * v);
                }
            }
        }
    }
}

/// Dimensions of a head summed together in `weighted_values`: GPT-2's heads have 64.
const VALUE_BLOCK: usize = 64;

/// Numerically stable softmax of one row: exp(x − max) / Σ exp(x − max), each exp computed in
/// float64 and rounded (no library call), the sum in float64. Every loop vectorises: the max
/// (as the sum, `sum_f64`) runs in `LANES` interleaved partial results, combined at the end in
/// a fixed order, so the result does not depend on the vector unit.
#[inline(always)]
pub fn softmax_in_place(row: &mut [f32]) {
    const LANES: usize = 8;
    let (blocks, rest) = row.as_chunks::<LANES>();
    let mut maxes = [f32::NEG_INFINITY; LANES];
    for block in blocks {
        maxes.iter_mut().zip(block).for_each(|(m, &x)| *m = if x > *m { x } else { *m });
    }
    reached!(SumTail if !rest.is_empty());
    let max = maxes.iter().chain(rest).copied().fold(f32::NEG_INFINITY, f32::max);
    // The masked keys at the end of a prompt's row (−∞: probability 0) skip the exps.
    let seen = row.iter().rposition(|&x| x != f32::NEG_INFINITY).map_or(0, |last| last + 1);
    row[seen..].fill(0.0);
    row[..seen].iter_mut().for_each(|x| {
        let z = (*x - max) as f64;
        // Below e^−87 float32 has only subnormals, whose rounding costs the CPU a slow assist
        // per vector: those probabilities (< 1.2e-38) are 0. Written so that NaN stays NaN.
        let e = exp(if z < -87.0 { -87.0 } else { z }) as f32;
        *x = if z < -87.0 { 0.0 } else { e };
    });
    let inv = (1.0 / sum_f64(row, |p| p)) as f32;
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
