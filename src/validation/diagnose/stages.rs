//! GPT-2's stages in float64, plain and readable, each with the knobs a classic mistake turns:
//! the diagnosis runs them on the reference's own stage inputs to see which mistake reproduces
//! our tensor. No code here is shared with the engine: a hypothesis must not inherit the bug it
//! is meant to name.

use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayView3, Axis, s};

/// A masked score: the engine writes −∞ (HF the float minimum).
pub const MASKED: f64 = f64::NEG_INFINITY;

/// LayerNorm over the last axis, as torch.nn.LayerNorm when `unbiased` and `rms_only` are
/// false. `unbiased` divides by C − 1; `rms_only` does not subtract the mean (RMSNorm).
pub fn layer_norm(
    x: ArrayView2<'_, f64>,
    weight: ArrayView1<'_, f64>,
    bias: ArrayView1<'_, f64>,
    eps: f64,
    unbiased: bool,
    rms_only: bool,
) -> Array2<f64> {
    let c = x.ncols() as f64;
    let mut y = x.to_owned(); // [T, C]
    for mut row in y.rows_mut() {
        let mean = if rms_only { 0.0 } else { row.sum() / c };
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / if unbiased { c - 1.0 } else { c };
        let inv = 1.0 / (var + eps).sqrt();
        row.iter_mut().zip(weight.iter().zip(&bias)).for_each(|(v, (w, b))| *v = (*v - mean) * inv * w + b);
    }
    y
}

/// x [T, in] · w [in, out] (+ b [out]).
pub fn linear(x: ArrayView2<'_, f64>, w: ArrayView2<'_, f64>, b: Option<ArrayView1<'_, f64>>) -> Array2<f64> {
    let mut y = x.dot(&w); // [T, out]
    if let Some(b) = b {
        y += &b;
    }
    y
}

/// The weight's memory read as nn.Linear's [out, in] and applied as x·Wᵀ: what a loader that
/// forgets Conv1D's [in, out] layout computes.
pub fn linear_read_transposed(
    x: ArrayView2<'_, f64>,
    w: ArrayView2<'_, f64>,
    b: ArrayView1<'_, f64>,
) -> Array2<f64> {
    let (n_in, n_out) = w.dim();
    let as_linear =
        w.as_standard_layout().into_owned().into_shape_with_order((n_out, n_in)).expect("same size"); // [out, in]
    let mut y = x.dot(&as_linear.t()); // [T, out]
    y += &b;
    y
}

/// GELU's tanh approximation with cubic coefficient `a` (GPT-2: 0.044715).
pub fn gelu_tanh(x: f64, a: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + a * x.powi(3))).tanh())
}

/// The exact GELU, 0.5·x·(1 + erf(x/√2)).
pub fn gelu_erf(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// The sigmoid approximation x·σ(1.702x).
pub fn gelu_sigmoid(x: f64) -> f64 {
    x / (1.0 + (-1.702 * x).exp())
}

/// The tanh GELU's cubic coefficient that maps `x` to `y`, estimated over the elements where
/// it is well conditioned (1 ≤ |x| ≤ 3, away from saturation); None if there are too few.
pub fn fit_gelu_coefficient(x: &[f64], y: &[f64]) -> Option<f64> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let mut estimates: Vec<f64> = x
        .iter()
        .zip(y)
        .filter(|(x, _)| (1.0..=3.0).contains(&x.abs()))
        .filter_map(|(&x, &y)| {
            let t = 2.0 * y / x - 1.0; // tanh(c·(x + a·x³))
            (t.abs() < 0.999).then(|| (t.atanh() / c - x) / x.powi(3))
        })
        .collect();
    if estimates.len() < 8 {
        return None;
    }
    estimates.sort_by(f64::total_cmp);
    Some(estimates[estimates.len() / 2])
}

/// How c_attn's [T, 3C] output is cut into q, k, v heads.
#[derive(Clone, Copy)]
pub enum QkvLayout {
    /// HF: [T, 3, H, D], q then k then v, each head's D channels together.
    Hf,
    /// [T, H, 3, D]: q, k, v interleaved per head.
    PerHead,
    /// [T, 3, D, H]: each head's channels strided by H.
    Strided,
}

/// Third `which` (0 q, 1 k, 2 v) of qkv [T, 3C] as [H, T, D].
pub fn split_heads(qkv: ArrayView2<'_, f64>, n_head: usize, which: usize, layout: QkvLayout) -> Array3<f64> {
    let t = qkv.nrows();
    let d = qkv.ncols() / 3 / n_head;
    let mut out = Array3::<f64>::zeros((n_head, t, d)); // [H, T, D]
    for ti in 0..t {
        for h in 0..n_head {
            for di in 0..d {
                let col = match layout {
                    QkvLayout::Hf => which * n_head * d + h * d + di,
                    QkvLayout::PerHead => h * 3 * d + which * d + di,
                    QkvLayout::Strided => which * n_head * d + di * n_head + h,
                };
                out[[h, ti, di]] = qkv[[ti, col]];
            }
        }
    }
    out
}

/// y [H, T, D] -> [T, C]: HF puts head h's channels at h·D..(h+1)·D; `strided` at d·H + h.
pub fn merge_heads(y: ArrayView3<'_, f64>, strided: bool) -> Array2<f64> {
    let (nh, t, d) = y.dim();
    let mut out = Array2::<f64>::zeros((t, nh * d)); // [T, C]
    for h in 0..nh {
        for ti in 0..t {
            for di in 0..d {
                let col = if strided { di * nh + h } else { h * d + di };
                out[[ti, col]] = y[[h, ti, di]];
            }
        }
    }
    out
}

/// q [H, T, D] · k [H, S, D]ᵀ · scale -> [H, T, S]; query i (at position S − T + i) sees the
/// keys before `visible(i)`, the others are masked.
pub fn scores(
    q: ArrayView3<'_, f64>,
    k: ArrayView3<'_, f64>,
    scale: f64,
    visible: impl Fn(usize) -> usize,
) -> Array3<f64> {
    let (nh, t, _) = q.dim();
    let keys = k.len_of(Axis(1));
    let mut out = Array3::<f64>::zeros((nh, t, keys)); // [H, T, S]
    for h in 0..nh {
        let mut att = out.index_axis_mut(Axis(0), h);
        att.assign(&(q.index_axis(Axis(0), h).dot(&k.index_axis(Axis(0), h).t()) * scale));
        for (i, mut row) in att.rows_mut().into_iter().enumerate() {
            let end = visible(i).min(keys);
            row.slice_mut(s![end..]).fill(MASKED);
        }
    }
    out
}

/// Softmax along `axis` of [H, T, S] scores; masked entries get 0.
pub fn softmax(scores: ArrayView3<'_, f64>, axis: usize) -> Array3<f64> {
    let mut out = scores.to_owned();
    for mut lane in out.lanes_mut(Axis(axis)) {
        let max = lane.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        lane.mapv_inplace(|x| (x - max).exp());
        let sum = lane.sum();
        lane.mapv_inplace(|x| x / sum);
    }
    out
}

/// probs [H, T, S] · v [H, S, D] -> [H, T, D].
pub fn weighted_values(probs: ArrayView3<'_, f64>, v: ArrayView3<'_, f64>) -> Array3<f64> {
    let (nh, t, _) = probs.dim();
    let mut out = Array3::<f64>::zeros((nh, t, v.len_of(Axis(2))));
    for h in 0..nh {
        out.index_axis_mut(Axis(0), h).assign(&probs.index_axis(Axis(0), h).dot(&v.index_axis(Axis(0), h)));
    }
    out
}

/// wte[ids] + wpe[positions] (either table left out when None) -> [T, C].
pub fn embeddings(
    wte: Option<ArrayView2<'_, f64>>,
    wpe: Option<ArrayView2<'_, f64>>,
    ids: &[u32],
    positions: &[usize],
) -> Array2<f64> {
    let c = wte.or(wpe).map_or(0, |w| w.ncols());
    let mut out = Array2::<f64>::zeros((ids.len(), c)); // [T, C]
    for (i, mut row) in out.rows_mut().into_iter().enumerate() {
        if let Some(wte) = wte {
            row += &wte.row(ids[i] as usize);
        }
        if let Some(wpe) = wpe {
            row += &wpe.row(positions[i]);
        }
    }
    out
}

/// softmax(warp(logits)) with HF's warpers in `generate`'s order: temperature, top-k (ties
/// with the k-th kept), top-p (ascending cumulative probability ≤ 1 − p removed, the most
/// likely token always kept).
pub fn sampling_probs(
    logits: &[f64],
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
) -> Vec<f64> {
    let mut x: Vec<f64> = logits.iter().map(|l| l / temperature).collect();
    if let Some(k) = top_k {
        let mut sorted = x.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[k.clamp(1, sorted.len()) - 1];
        x.iter_mut().filter(|v| **v < kth).for_each(|v| *v = f64::NEG_INFINITY);
    }
    if let Some(p) = top_p.filter(|&p| p < 1.0) {
        let mut order: Vec<usize> = (0..x.len()).collect();
        order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
        let probs = softmax_slice(&order.iter().map(|&i| x[i]).collect::<Vec<_>>());
        let mut cumulative = 0.0;
        let last = order.len() - 1;
        for (rank, &i) in order.iter().enumerate() {
            cumulative += probs[rank];
            if cumulative <= 1.0 - p && rank != last {
                x[i] = f64::NEG_INFINITY;
            }
        }
    }
    softmax_slice(&x)
}

fn softmax_slice(x: &[f64]) -> Vec<f64> {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// Row `i` of a [T, V] array as [V].
pub fn row(a: ArrayView2<'_, f64>, i: usize) -> Array1<f64> {
    a.row(i).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn the_gelu_coefficient_is_recovered_from_its_outputs() {
        let x: Vec<f64> = (0..200).map(|i| -3.0 + 0.03 * i as f64).collect();
        let y: Vec<f64> = x.iter().map(|&x| gelu_tanh(x, 0.0447)).collect();
        let a = fit_gelu_coefficient(&x, &y).unwrap();
        assert!((a - 0.0447).abs() < 1e-9, "{a}");
    }

    #[test]
    fn the_three_qkv_layouts_pick_different_channels() {
        // T = 1, H = 2, D = 1: c_attn's output [q0 q1 k0 k1 v0 v1] as numbers 0..6.
        let qkv = array![[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]];
        let k = |layout| split_heads(qkv.view(), 2, 1, layout).iter().copied().collect::<Vec<_>>();
        assert_eq!(k(QkvLayout::Hf), vec![2.0, 3.0]);
        assert_eq!(k(QkvLayout::PerHead), vec![1.0, 4.0]);
        assert_eq!(k(QkvLayout::Strided), vec![2.0, 3.0]); // D = 1: strided equals HF
        let y = array![[[1.0, 2.0]], [[3.0, 4.0]]]; // [H=2, T=1, D=2]
        assert_eq!(merge_heads(y.view(), false).row(0).to_vec(), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(merge_heads(y.view(), true).row(0).to_vec(), vec![1.0, 3.0, 2.0, 4.0]);
    }
}
