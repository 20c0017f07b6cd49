//! Systematic error: a bias far below the float32 noise that max and RMS cannot see.
//!
//! Float32 rounding error is close to unbiased and uncorrelated with the value it rounds; a
//! wrong constant's error (GELU's 0.04472 for 0.044715, a scale off by a few ulps) is a smooth
//! function of the stage's value, always the same sign where the value is the same. So the
//! elements are grouped by the float64 truth's value (equal-count bins) and the mean of
//! ours − peer taken in each: noise averages out of a bin's mean as 1/√n, a bias does not.
//!
//! The difference is taken against the peer, not the truth, and only where ours and the peer
//! computed the stage from the same input (isolated mode): there the error both inherit from
//! the input (the larger part of each's error against the truth, and correlated across the
//! tensor: a logit row is lm_head's image of 64 shared LayerNorm errors) cancels, and what is
//! left is the two stages' own arithmetic. Three questions judge it:
//!
//! - `chi2`, Σ_b (mean_b / se_b)², which is χ² with `bins` degrees of freedom when the
//!   difference is unbiased noise: is there a bias at all?
//! - `bias_rms`, the RMS of the bins' means less their noise: how large is it? Two correct
//!   float32 formulas may differ by a bias of a fraction of an ulp (a tanh that rounds one way
//!   more often); a wrong constant moves a stage by ulps.
//! - whose is it? The same bins' means of ours − truth and of peer − truth: both carry the
//!   error inherited from the input, and the one biased itself is the farther from the truth.
//!
//! Knows nothing about models or sources: it is handed three arrays and a mask.

use anyhow::{Result, ensure};
use ndarray::ArrayViewD;
use serde::Serialize;

use super::compare::{Element, MASK_THRESHOLD, Mask};

/// Bins a tensor's elements are grouped into, by the truth's value.
pub const BINS: usize = 8;

/// Rows (independent units of the noise) a tensor needs for a bias to be told from noise.
pub const MIN_ROWS: usize = 8;

/// Elements per bin at least: below it the bins are fewer.
const MIN_PER_BIN: usize = 16;

/// One bin: the truth's values it spans and the mean difference in it.
#[derive(Clone, Debug, Serialize)]
pub struct Bin {
    /// The truth's least and largest value in the bin.
    pub from: f64,
    pub to: f64,
    pub count: usize,
    /// mean(ours − peer) over the bin, and its standard error from the spread of the rows'
    /// means (at least what two float32 roundings' noise gives).
    pub mean: f64,
    pub se: f64,
    /// mean(ours − truth) and mean(peer − truth) over the bin: which of the two is biased.
    pub ours_mean: f64,
    pub peer_mean: f64,
}

impl Bin {
    /// The bin's mean in units of its standard error (0 in a bin of zeros).
    pub fn z(&self) -> f64 {
        if self.se > 0.0 { self.mean / self.se } else { 0.0 }
    }
}

/// What the bins of one tensor came to.
#[derive(Clone, Debug, Serialize)]
pub struct Bias {
    /// Elements grouped (compared, finite in all three sources), and the rows they lie in.
    pub compared: usize,
    pub rows: usize,
    pub bins: usize,
    /// Σ_b z_b²: about χ²(bins) when ours − peer is unbiased noise.
    pub chi2: f64,
    /// √(Σ_b n_b·max(0, mean_b² − se_b²) / N): the bias's RMS over the tensor, its noise taken
    /// out.
    pub bias_rms: f64,
    /// rms of the truth, the scale the bias is measured in (ulps of a typical value).
    pub truth_rms: f64,
    /// √(Σ_b n_b·mean_b² / N) of ours − truth and of peer − truth, in the same bins: the error
    /// both inherit from the input is in both; a bias of ours − peer is ours's when ours's is
    /// the larger.
    pub ours_bias_rms: f64,
    pub peer_bias_rms: f64,
    /// The bin whose mean is furthest from zero in its standard errors.
    pub worst: Bin,
}

impl Bias {
    /// The bias in float32 epsilons of the truth's RMS: about ulps of a typical value.
    pub fn in_epsilons(&self) -> f64 {
        if self.truth_rms > 0.0 { self.bias_rms / (f32::EPSILON as f64 * self.truth_rms) } else { 0.0 }
    }
}

/// One element: its row, the truth's value, ours and the peer.
struct Point {
    row: usize,
    truth: f64,
    ours: f64,
    peer: f64,
}

impl Point {
    fn diff(&self) -> f64 {
        self.ours - self.peer
    }
}

/// Groups the elements by the truth's value into up to `BINS` equal-count bins and measures the
/// mean of ours − peer in each. The noise of a bin's mean is measured across rows (every axis
/// but the last: a position, or one head's query), not elements: float32 error is correlated
/// within a row (a LayerNorm's statistics, a softmax's sum, round once per row), so a row
/// counts once. None when there are fewer than `MIN_ROWS` rows (a decode step's single row) or
/// too few elements to bin. Shapes must match.
pub fn bias<A: Element, B: Element, C: Element>(
    ours: ArrayViewD<'_, A>,
    peer: ArrayViewD<'_, B>,
    truth: ArrayViewD<'_, C>,
    mask: Mask,
) -> Result<Option<Bias>> {
    ensure!(
        ours.shape() == peer.shape() && peer.shape() == truth.shape(),
        "shape mismatch: ours {:?}, peer {:?}, truth {:?}",
        ours.shape(),
        peer.shape(),
        truth.shape()
    );
    let shape = ours.shape();
    let row_len = shape.last().copied().unwrap_or(1).max(1);
    let rows = ours.len() / row_len;
    let tq_tk = (shape.len() >= 2).then(|| (shape[shape.len() - 2], shape[shape.len() - 1]));
    let mut points: Vec<Point> = Vec::with_capacity(ours.len());
    for (flat, ((o, p), t)) in ours.iter().zip(peer.iter()).zip(truth.iter()).enumerate() {
        let (o, p, t): (f64, f64, f64) = ((*o).into(), (*p).into(), (*t).into());
        if let (Mask::Causal, Some((tq, tk))) = (mask, tq_tk) {
            let (q, k) = ((flat / tk) % tq, flat % tk);
            if k > tk - tq + q {
                continue;
            }
        }
        if !(o.is_finite() && p.is_finite() && t.is_finite()) || t <= MASK_THRESHOLD {
            continue;
        }
        points.push(Point { row: flat / row_len, truth: t, ours: o, peer: p });
    }
    let n = points.len();
    let bins = BINS.min(n / MIN_PER_BIN);
    if bins < 2 || rows < MIN_ROWS {
        return Ok(None);
    }
    points.sort_by(|a, b| a.truth.total_cmp(&b.truth));
    let truth_rms = (points.iter().map(|p| p.truth * p.truth).sum::<f64>() / n as f64).sqrt();
    let measured: Vec<Bin> =
        (0..bins).map(|b| bin(&points[b * n / bins..(b + 1) * n / bins], rows)).collect();
    let chi2 = measured.iter().map(|b| b.z().powi(2)).sum::<f64>();
    let excess =
        measured.iter().map(|b| b.count as f64 * (b.mean.powi(2) - b.se.powi(2)).max(0.0)).sum::<f64>();
    let against_truth = |mean: fn(&Bin) -> f64| {
        (measured.iter().map(|b| b.count as f64 * mean(b).powi(2)).sum::<f64>() / n as f64).sqrt()
    };
    let (ours_bias_rms, peer_bias_rms) = (against_truth(|b| b.ours_mean), against_truth(|b| b.peer_mean));
    let worst = measured
        .iter()
        .max_by(|a, b| a.z().abs().total_cmp(&b.z().abs()))
        .cloned()
        .expect("at least two bins");
    Ok(Some(Bias {
        compared: n,
        rows,
        bins,
        chi2,
        bias_rms: (excess / n as f64).sqrt(),
        truth_rms,
        ours_bias_rms,
        peer_bias_rms,
        worst,
    }))
}

/// One bin's mean and its cluster-robust standard error: the rows' sums of deviations from the
/// bin's mean, squared and added, as if each row were one draw (with the small-sample factor
/// R/(R − 1) for the R rows the bin has elements in).
fn bin(part: &[Point], rows: usize) -> Bin {
    let count = part.len() as f64;
    let mean_of = |f: &dyn Fn(&Point) -> f64| part.iter().map(f).sum::<f64>() / count;
    let mean = mean_of(&|p| p.diff());
    let (ours_mean, peer_mean) = (mean_of(&|p| p.ours - p.truth), mean_of(&|p| p.peer - p.truth));
    let mut per_row = vec![0.0f64; rows];
    for p in part {
        per_row[p.row] += p.diff() - mean;
    }
    let present = part.iter().map(|p| p.row).collect::<std::collections::BTreeSet<_>>().len() as f64;
    let clustered = per_row.iter().map(|s| s * s).sum::<f64>() / (count * count)
        * if present > 1.0 { present / (present - 1.0) } else { f64::INFINITY };
    let (from, to) = (part[0].truth, part[part.len() - 1].truth);
    // Two float32 roundings of one value differ with a variance of at least ulp²/6 (each
    // uniform within half an ulp) unless they agree: a bin whose differences are all one ulp is
    // not infinitely significant.
    let ulp = f32::EPSILON as f64 * from.abs().max(to.abs());
    let quantisation = ulp * ulp / 6.0 / count;
    Bin { from, to, count: part.len(), mean, se: clustered.max(quantisation).sqrt(), ours_mean, peer_mean }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array1, ArrayD, IxDyn};

    use super::*;

    /// A deterministic pseudo-random stream in [-0.5, 0.5): the tests need noise, not a crate.
    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect()
    }

    /// The values as 64 rows.
    fn tensor(values: Vec<f64>) -> ArrayD<f64> {
        let n = values.len();
        Array1::from(values).into_shape_with_order(IxDyn(&[64, n / 64])).unwrap()
    }

    #[test]
    fn unbiased_noise_stays_near_its_degrees_of_freedom() {
        let n = 4096;
        let truth: Vec<f64> = noise(n, 1).iter().map(|x| 4.0 * x).collect();
        let peer: Vec<f64> = truth.iter().zip(noise(n, 2)).map(|(t, e)| t + 1e-7 * e).collect();
        let ours: Vec<f64> = truth.iter().zip(noise(n, 3)).map(|(t, e)| t + 1e-7 * e).collect();
        let b =
            bias(tensor(ours).view(), tensor(peer).view(), tensor(truth).view(), Mask::All).unwrap().unwrap();
        assert_eq!(b.bins, BINS);
        assert!(b.chi2 < 3.0 * BINS as f64, "chi2 {}", b.chi2);
        // The noise's RMS is 1e-7·√(2/12) = 4e-8; what is left of it in the bins' means is far
        // less.
        assert!(b.bias_rms < 5e-9, "bias {}", b.bias_rms);
    }

    #[test]
    fn a_bias_far_below_the_noise_stands_out() {
        let n = 16384;
        let truth: Vec<f64> = noise(n, 1).iter().map(|x| 4.0 * x).collect();
        // Noise of a few ulps of the values (ulp(2) = 2.4e-7): RMS 1e-6·√(2/12) = 4.1e-7 ...
        let peer: Vec<f64> = truth.iter().zip(noise(n, 2)).map(|(t, e)| t + 1e-6 * e).collect();
        // ... and a scale off by 5e-8: at most 1e-7, a quarter of it, and an RMS of 5.8e-8.
        let ours: Vec<f64> =
            truth.iter().zip(noise(n, 3)).map(|(t, e)| t * (1.0 + 5e-8) + 1e-6 * e).collect();
        let b =
            bias(tensor(ours).view(), tensor(peer).view(), tensor(truth).view(), Mask::All).unwrap().unwrap();
        assert!(b.chi2 > 2.0 * crate::validation::spec::chi2_limit(b.bins), "chi2 {}", b.chi2);
        // What the bins see of it: the bins' means of t·5e-8 (the spread within a bin is lost).
        let expected = 5e-8 * b.truth_rms;
        assert!((b.bias_rms - expected).abs() < 0.2 * expected, "bias {} vs {expected}", b.bias_rms);
        // Ours, not the peer, is the farther from the truth in the bins.
        assert!(b.ours_bias_rms > 2.0 * b.peer_bias_rms, "{} vs {}", b.ours_bias_rms, b.peer_bias_rms);
        // The worst bin is at an end, where the scale moves the values most.
        assert!(b.worst.from > 1.0 || b.worst.to < -1.0, "{:?}", b.worst);
    }

    #[test]
    fn noise_shared_by_a_row_is_not_a_bias() {
        // Each of the 64 rows scaled by its own factor, as a float32 LayerNorm's statistics or a
        // softmax's sum scale a row: 40 times the independent noise, correlated within the row,
        // unbiased across rows. Counted per element it would look like a bias of many sigmas.
        let n = 4096;
        let truth: Vec<f64> = noise(n, 1).iter().map(|x| 4.0 * x).collect();
        let per_row = noise(64, 7);
        let peer: Vec<f64> = truth.iter().zip(noise(n, 2)).map(|(t, e)| t + 1e-7 * e).collect();
        let ours: Vec<f64> = truth
            .iter()
            .zip(noise(n, 3))
            .enumerate()
            .map(|(i, (t, e))| t * (1.0 + 2e-8 * per_row[i / 64]) + 1e-7 * e)
            .collect();
        let b =
            bias(tensor(ours).view(), tensor(peer).view(), tensor(truth).view(), Mask::All).unwrap().unwrap();
        assert_eq!(b.rows, 64);
        assert!(b.chi2 < 3.0 * BINS as f64, "chi2 {}", b.chi2);
    }

    #[test]
    fn masked_and_too_few_elements_are_left_out() {
        // [T_q = 2, T_k = 2] causal: entry (0, 1) is masked, 3 elements left.
        let t = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, -3.4e38, 2.0, 3.0]).unwrap();
        assert!(bias(t.view(), t.view(), t.view(), Mask::Causal).unwrap().is_none());
        // Enough elements, too few rows: one row's own rounding cannot be told from a bias.
        let one_row = ArrayD::from_shape_vec(IxDyn(&[1, 4096]), noise(4096, 5)).unwrap();
        assert!(bias(one_row.view(), one_row.view(), one_row.view(), Mask::All).unwrap().is_none());
        let wrong = ArrayD::<f64>::zeros(IxDyn(&[3]));
        assert!(bias(t.view(), t.view(), wrong.view(), Mask::All).is_err());
    }
}
