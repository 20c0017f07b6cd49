//! Element-wise comparison of two tensors: statistics and the verdict. Knows nothing about
//! models, checkpoints or sources: it is handed two arrays (float32 or float64, compared in
//! float64), a tolerance and a mask.

use std::fmt;

use anyhow::{Result, ensure};
use ndarray::ArrayViewD;
use rayon::prelude::*;
use serde::Serialize;

/// How close two tensors must be: pass when |a − b| ≤ atol + rtol·|b| for every element (NaN and
/// Inf never pass), or bit-for-bit / value-for-value equality.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tolerance {
    Close { atol: f64, rtol: f64 },
    Exact,
}

impl Tolerance {
    /// The largest difference allowed against a reference value `r`.
    pub fn allowed(&self, r: f64) -> f64 {
        match *self {
            Tolerance::Close { atol, rtol } => atol + rtol * r.abs(),
            Tolerance::Exact => 0.0,
        }
    }
}

/// 1e-5 as "1e-5", float32's epsilon as "1.2e-7": one digit where that is the value.
fn short(x: f64) -> String {
    let one = format!("{x:.0e}");
    if one.parse::<f64>() == Ok(x) { one } else { format!("{x:.1e}") }
}

/// JSON: `{"atol": .., "rtol": ..}` or `{"exact": true}`.
impl Serialize for Tolerance {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        match *self {
            Tolerance::Close { atol, rtol } => {
                m.serialize_entry("atol", &atol)?;
                m.serialize_entry("rtol", &rtol)?;
            }
            Tolerance::Exact => m.serialize_entry("exact", &true)?,
        }
        m.end()
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Tolerance::Close { atol, rtol: 0.0 } => write!(f, "atol {}", short(atol)),
            Tolerance::Close { atol, rtol } => write!(f, "atol {} rtol {}", short(atol), short(rtol)),
            Tolerance::Exact => write!(f, "exact"),
        }
    }
}

/// An element type a comparison reads: float32 (our engine, float32 dumps) or float64 (the
/// float64 truth). Every comparison is done in float64, so a float64 reference keeps its digits.
pub trait Element: Copy + Into<f64> + Send + Sync {}
impl<T: Copy + Into<f64> + Send + Sync> Element for T {}

/// At or below this a score is masked: HF adds the float minimum (−3.4e38 in float32, −1.8e308
/// in float64), we write −∞.
pub const MASK_THRESHOLD: f64 = -1e30;

/// Which elements take part. Attention scores compare causal entries only: the future ones are
/// masked (HF fills them with the float minimum, we never compute them).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mask {
    All,
    /// Shape [.., T_q, T_k] with query i at key position T_k − T_q + i: keys after it excluded.
    Causal,
}

/// What the diff of one tensor came to. Indices are in the tensor's own coordinates.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    /// Elements compared (after the mask).
    pub compared: usize,
    /// Future entries (excluded by the mask) that one side left unmasked: each a mismatch.
    pub unmasked: usize,
    /// Elements excluded by the mask.
    pub masked: usize,
    pub max_abs: f64,
    /// max |ours − ref| / |ref| over elements whose reference is not 0.
    pub max_rel: f64,
    pub mean_abs: f64,
    pub rms: f64,
    /// The magnitude of the second source ("reference") over the compared finite elements:
    /// max |ref| and rms(ref). The accuracy verdict's floor scales with them.
    pub ref_max_abs: f64,
    pub ref_rms: f64,
    /// Elements outside atol + rtol·|ref| (non-finite ones included).
    pub mismatches: usize,
    /// Elements where ours or the reference is NaN or ±Inf.
    pub non_finite: usize,
    /// The element that is furthest outside its tolerance (or the largest diff when all pass).
    pub worst_index: Vec<usize>,
    pub worst_ours: f64,
    pub worst_ref: f64,
    pub cosine: f64,
    /// The first few elements out of tolerance, in memory order.
    pub first_mismatches: Vec<Mismatch>,
    /// Compared elements by |ours − ref|: [= 0, < 1e-9, [1e-9, 1e-8), ..., [1e-1, 1), ≥ 1 or
    /// not finite]; see `DECADE_LABELS`.
    pub diff_decades: [usize; 12],
}

#[derive(Clone, Debug, Serialize)]
pub struct Mismatch {
    pub index: Vec<usize>,
    pub ours: f64,
    pub reference: f64,
}

/// How many mismatching elements `Stats::first_mismatches` keeps.
pub const MISMATCHES_KEPT: usize = 5;

pub const DECADE_LABELS: [&str; 12] =
    ["0", "<1e-9", "1e-9", "1e-8", "1e-7", "1e-6", "1e-5", "1e-4", "1e-3", "1e-2", "1e-1", ">=1"];

/// The `diff_decades` bucket of |d|.
fn decade(d: f64) -> usize {
    if d == 0.0 {
        0
    } else if !d.is_finite() || d >= 1.0 {
        11
    } else if d < 1e-9 {
        1
    } else {
        // 1e-9 <= d < 1: bucket 2 for [1e-9, 1e-8) up to 10 for [1e-1, 1). Comparisons, not a
        // log10 per element: that was a third of a full-size validation's time.
        const LOWER: [f64; 8] = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1];
        2 + LOWER.iter().take_while(|&&bound| d >= bound).count()
    }
}

impl Stats {
    pub fn passed(&self) -> bool {
        self.mismatches == 0 && self.non_finite == 0
    }

    pub fn mismatch_percent(&self) -> f64 {
        if self.compared == 0 { 0.0 } else { 100.0 * self.mismatches as f64 / self.compared as f64 }
    }
}

/// Compares `ours` with `reference` element by element, in float64. Shapes must match exactly.
/// "ours" is the first source of a pair, "reference" the second, whose magnitude the rtol term
/// scales with.
pub fn compare<A: Element, B: Element>(
    ours: ArrayViewD<'_, A>,
    reference: ArrayViewD<'_, B>,
    tolerance: Tolerance,
    mask: Mask,
) -> Result<Stats> {
    ensure!(
        ours.shape() == reference.shape(),
        "shape mismatch: ours {:?}, reference {:?}",
        ours.shape(),
        reference.shape()
    );
    let shape = ours.shape().to_vec();
    let included = |flat: usize| -> bool {
        match mask {
            Mask::All => true,
            Mask::Causal => {
                let (tq, tk) = (shape[shape.len() - 2], shape[shape.len() - 1]);
                let (q, k) = ((flat / tk) % tq, flat % tk);
                k <= tk - tq + q
            }
        }
    };
    let (ours_std, ref_std) = (ours.as_standard_layout(), reference.as_standard_layout());
    let (a, b) =
        (ours_std.as_slice().expect("standard layout"), ref_std.as_slice().expect("standard layout"));
    // Fixed stretches scanned on all cores and merged in order: the same sums on any machine.
    let scanned: Vec<Partial> = a
        .par_chunks(STRETCH)
        .zip(b.par_chunks(STRETCH))
        .enumerate()
        .map(|(i, (a, b))| Partial::scan(a, b, i * STRETCH, tolerance, &included, &shape))
        .collect();
    let p = scanned.into_iter().reduce(Partial::then).unwrap_or_else(Partial::empty);

    let finite = (p.compared - p.non_finite - p.unmasked) as f64;
    let mut s = Stats {
        compared: p.compared,
        unmasked: p.unmasked,
        masked: p.masked,
        max_abs: p.max_abs,
        max_rel: p.max_rel,
        mean_abs: if finite > 0.0 { p.sum_abs / finite } else { 0.0 },
        rms: if finite > 0.0 { (p.sum_sq / finite).sqrt() } else { 0.0 },
        ref_max_abs: p.ref_max_abs,
        ref_rms: if finite > 0.0 { (p.norm_b / finite).sqrt() } else { 0.0 },
        mismatches: p.mismatches,
        non_finite: p.non_finite,
        worst_index: vec![0; shape.len()],
        worst_ours: a.first().map_or(0.0, |&x| x.into()),
        worst_ref: b.first().map_or(0.0, |&x| x.into()),
        cosine: if p.norm_a == 0.0 && p.norm_b == 0.0 {
            1.0
        } else if p.norm_a == 0.0 || p.norm_b == 0.0 {
            0.0
        } else {
            p.dot / (p.norm_a.sqrt() * p.norm_b.sqrt())
        },
        first_mismatches: p.first_mismatches,
        diff_decades: p.decades,
    };
    if s.compared > 0 {
        s.worst_index = unravel(p.worst_flat, &shape);
        s.worst_ours = a[p.worst_flat].into();
        s.worst_ref = b[p.worst_flat].into();
    }
    Ok(s)
}

/// Elements per stretch of a parallel comparison.
const STRETCH: usize = 1 << 16;

/// The running totals of one stretch of elements.
struct Partial {
    compared: usize,
    unmasked: usize,
    masked: usize,
    mismatches: usize,
    non_finite: usize,
    max_abs: f64,
    max_rel: f64,
    ref_max_abs: f64,
    sum_abs: f64,
    sum_sq: f64,
    dot: f64,
    norm_a: f64,
    norm_b: f64,
    decades: [usize; 12],
    first_mismatches: Vec<Mismatch>,
    /// How far the worst element is outside its allowance: |d| / allowed (∞ for non-finite).
    worst_excess: f64,
    worst_flat: usize,
}

impl Partial {
    fn empty() -> Partial {
        Partial {
            compared: 0,
            unmasked: 0,
            masked: 0,
            mismatches: 0,
            non_finite: 0,
            max_abs: 0.0,
            max_rel: 0.0,
            ref_max_abs: 0.0,
            sum_abs: 0.0,
            sum_sq: 0.0,
            dot: 0.0,
            norm_a: 0.0,
            norm_b: 0.0,
            decades: [0; 12],
            first_mismatches: Vec::new(),
            worst_excess: f64::NEG_INFINITY,
            worst_flat: 0,
        }
    }

    /// Elements `start..start + a.len()` of the flattened tensors.
    fn scan<A: Element, B: Element>(
        a: &[A],
        b: &[B],
        start: usize,
        tolerance: Tolerance,
        included: &impl Fn(usize) -> bool,
        shape: &[usize],
    ) -> Partial {
        let mut p = Partial::empty();
        p.worst_flat = start;
        for (offset, (&x, &r)) in a.iter().zip(b).enumerate() {
            let flat = start + offset;
            let (x64, r64): (f64, f64) = (x.into(), r.into());
            let inside = included(flat);
            if !inside {
                // A future key must be masked on both sides; a value there means it was seen.
                if x64 <= MASK_THRESHOLD && r64 <= MASK_THRESHOLD {
                    p.masked += 1;
                    continue;
                }
                p.unmasked += 1;
            }
            p.compared += 1;
            let excess = if !inside || !x64.is_finite() || !r64.is_finite() {
                p.non_finite += usize::from(inside);
                p.mismatches += 1;
                p.decades[11] += 1;
                if p.first_mismatches.len() < MISMATCHES_KEPT {
                    p.first_mismatches.push(Mismatch {
                        index: unravel(flat, shape),
                        ours: x64,
                        reference: r64,
                    });
                }
                f64::INFINITY
            } else {
                let d = (x64 - r64).abs();
                p.sum_abs += d;
                p.sum_sq += d * d;
                p.dot += x64 * r64;
                p.norm_a += x64 * x64;
                p.norm_b += r64 * r64;
                p.ref_max_abs = p.ref_max_abs.max(r64.abs());
                p.max_abs = p.max_abs.max(d);
                // Divisions only where they can change the answer: this loop sees every element.
                if r64 != 0.0 && d > p.max_rel * r64.abs() {
                    p.max_rel = d / r64.abs();
                }
                p.decades[decade(d)] += 1;
                let allowed = tolerance.allowed(r64);
                if d > allowed {
                    p.mismatches += 1;
                    if p.first_mismatches.len() < MISMATCHES_KEPT {
                        p.first_mismatches.push(Mismatch {
                            index: unravel(flat, shape),
                            ours: x64,
                            reference: r64,
                        });
                    }
                }
                if allowed > 0.0 {
                    if d > p.worst_excess * allowed { d / allowed } else { p.worst_excess }
                } else if d > 0.0 {
                    f64::INFINITY
                } else {
                    0.0
                }
            };
            if excess > p.worst_excess {
                p.worst_excess = excess;
                p.worst_flat = flat;
            }
        }
        p
    }

    /// This stretch followed by the `next`: on a tie the earlier worst element stays.
    fn then(mut self, next: Partial) -> Partial {
        self.compared += next.compared;
        self.unmasked += next.unmasked;
        self.masked += next.masked;
        self.mismatches += next.mismatches;
        self.non_finite += next.non_finite;
        self.max_abs = self.max_abs.max(next.max_abs);
        self.max_rel = self.max_rel.max(next.max_rel);
        self.ref_max_abs = self.ref_max_abs.max(next.ref_max_abs);
        self.sum_abs += next.sum_abs;
        self.sum_sq += next.sum_sq;
        self.dot += next.dot;
        self.norm_a += next.norm_a;
        self.norm_b += next.norm_b;
        self.decades.iter_mut().zip(next.decades).for_each(|(a, b)| *a += b);
        self.first_mismatches.extend(next.first_mismatches);
        self.first_mismatches.truncate(MISMATCHES_KEPT);
        if next.worst_excess > self.worst_excess {
            self.worst_excess = next.worst_excess;
            self.worst_flat = next.worst_flat;
        }
        self
    }
}

/// Flat index -> multi-index in a standard-layout array of `shape`.
pub fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (slot, &dim) in index.iter_mut().zip(shape).rev() {
        *slot = flat % dim;
        flat /= dim;
    }
    index
}

/// Bit-for-bit equality of two tensors of our own (invariants such as "the cache holds exactly
/// the K that checkpoint 2 computed"). Returns the first differing index, if any.
pub fn first_bitwise_difference(
    a: ArrayViewD<'_, f32>,
    b: ArrayViewD<'_, f32>,
) -> Result<Option<Vec<usize>>> {
    ensure!(a.shape() == b.shape(), "shape mismatch: {:?} vs {:?}", a.shape(), b.shape());
    let shape = a.shape().to_vec();
    let position = a
        .as_standard_layout()
        .iter()
        .zip(b.as_standard_layout().iter())
        .position(|(x, y)| x.to_bits() != y.to_bits());
    Ok(position.map(|flat| unravel(flat, &shape)))
}

/// |a − b| of one pair over a tensor, max-pooled to small grids ("panels"): one per attention
/// head for [H, T, T'] tensors (the heads with the largest differences), one for an activation
/// [T, C], one for a vector folded into rows.
#[derive(Clone, Debug)]
pub struct Heatmap {
    pub panels: Vec<Panel>,
}

#[derive(Clone, Debug)]
pub struct Panel {
    /// "head 3", or "" for a tensor of one panel.
    pub label: String,
    /// The panel's extent in tensor elements (rows × columns) and in cells.
    pub extent: (usize, usize),
    pub cells: (usize, usize),
    /// Row-major, the max |diff| of each cell's elements; NaN where every element is masked,
    /// +∞ where one is not finite.
    pub values: Vec<f64>,
}

/// |a − b| over a tensor max-pooled into at most `max_cells` (rows, columns) per panel, for the
/// HTML report: [H, R, C] tensors give a panel per leading index (the `max_panels` with the
/// largest differences, labelled "head h"), [R, C] one panel, a vector [N] one panel of rows
/// of 256. A cell holds the largest |diff| of its elements; masked elements (a future key on
/// both sides) count for nothing, and a cell of masked elements only is NaN.
pub fn heatmap<A: Element, B: Element>(
    a: ArrayViewD<'_, A>,
    b: ArrayViewD<'_, B>,
    mask: Mask,
    max_panels: usize,
    max_cells: (usize, usize),
) -> Heatmap {
    let shape = a.shape().to_vec();
    let (a, b) = (a.as_standard_layout(), b.as_standard_layout());
    let (a, b) = (a.as_slice().expect("standard layout"), b.as_slice().expect("standard layout"));
    let (panels, rows, cols) = match shape[..] {
        [n] => (1, n.div_ceil(256), n.min(256)),
        [r, c] => (1, r, c),
        [h, r, c] => (h, r, c),
        _ => (1, 1, a.len()),
    };
    // Query r sits at key position cols − rows + r: later keys are its future.
    let causal = |r: usize, c: usize| mask == Mask::Causal && shape.len() >= 2 && c + rows > cols + r;
    let cells = (rows.min(max_cells.0).max(1), cols.min(max_cells.1).max(1));
    let mut out: Vec<(f64, Panel)> = (0..panels)
        .map(|p| {
            let mut values = vec![f64::NAN; cells.0 * cells.1];
            let mut worst = 0.0f64;
            for r in 0..rows {
                for c in 0..cols {
                    let flat = (p * rows + r) * cols + c;
                    if flat >= a.len() || causal(r, c) {
                        continue;
                    }
                    let (x, y): (f64, f64) = (a[flat].into(), b[flat].into());
                    let d = if x == y { 0.0 } else { (x - y).abs() };
                    let d = if d.is_finite() { d } else { f64::INFINITY };
                    let cell = &mut values[(r * cells.0 / rows) * cells.1 + c * cells.1 / cols];
                    *cell = if cell.is_nan() { d } else { cell.max(d) };
                    worst = worst.max(d);
                }
            }
            let label = if panels > 1 { format!("head {p}") } else { String::new() };
            (worst, Panel { label, extent: (rows, cols), cells, values })
        })
        .collect();
    if out.len() > max_panels {
        // The panels with the largest differences, kept in their own order.
        let mut order: Vec<usize> = (0..out.len()).collect();
        order.sort_by(|&i, &j| out[j].0.total_cmp(&out[i].0));
        let mut keep = order[..max_panels].to_vec();
        keep.sort_unstable();
        out = keep.into_iter().map(|i| out[i].clone()).collect();
    }
    Heatmap { panels: out.into_iter().map(|(_, panel)| panel).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn, array};

    const TOL: Tolerance = Tolerance::Close { atol: 1e-3, rtol: 0.0 };

    #[test]
    fn identical_tensors_pass_with_zero_error() {
        let a = array![[1.0f32, -2.0], [3.0, 4.0]].into_dyn();
        let s = compare(a.view(), a.view(), TOL, Mask::All).unwrap();
        assert!(s.passed());
        assert_eq!((s.max_abs, s.rms, s.mismatches, s.compared), (0.0, 0.0, 0, 4));
        assert!((s.cosine - 1.0).abs() < 1e-12);
    }

    #[test]
    fn finds_the_worst_element_and_counts_mismatches() {
        let r = array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]].into_dyn();
        let mut o = r.clone();
        o[[0, 1]] += 0.0005; // within atol
        o[[1, 2]] += 0.01; // outside
        let s = compare(o.view(), r.view(), TOL, Mask::All).unwrap();
        assert!(!s.passed());
        assert_eq!(s.mismatches, 1);
        assert_eq!(s.worst_index, vec![1, 2]);
        assert_eq!((s.worst_ours, s.worst_ref), (6.01f32 as f64, 6.0));
        assert!((s.max_abs - 0.01).abs() < 1e-6);
        assert!((s.max_rel - 0.01 / 6.0).abs() < 1e-6);
    }

    #[test]
    fn relative_tolerance_admits_large_values() {
        let r = array![1000.0f32].into_dyn();
        let o = array![1000.01f32].into_dyn();
        let abs_only =
            compare(o.view(), r.view(), Tolerance::Close { atol: 1e-3, rtol: 0.0 }, Mask::All).unwrap();
        let with_rel =
            compare(o.view(), r.view(), Tolerance::Close { atol: 1e-3, rtol: 1e-4 }, Mask::All).unwrap();
        assert!(!abs_only.passed());
        assert!(with_rel.passed());
    }

    #[test]
    fn nan_and_inf_never_pass() {
        let r = array![1.0f32, 2.0].into_dyn();
        for bad in [f32::NAN, f32::INFINITY] {
            let o = array![1.0f32, bad].into_dyn();
            let s =
                compare(o.view(), r.view(), Tolerance::Close { atol: 1e9, rtol: 1e9 }, Mask::All).unwrap();
            assert!(!s.passed());
            assert_eq!((s.non_finite, s.worst_index.clone()), (1, vec![1]));
            // ... also when the NaN is on the reference side.
            let s = compare(r.view(), o.view(), TOL, Mask::All).unwrap();
            assert!(!s.passed());
        }
    }

    #[test]
    fn causal_mask_skips_future_keys() {
        // [1 head, T=2, T=2]: entry (q 0, k 1) is the future and may hold anything.
        let r = ArrayD::from_shape_vec(IxDyn(&[1, 2, 2]), vec![0.5f32, -3.4e38, 0.1, 0.2]).unwrap();
        let o = ArrayD::from_shape_vec(IxDyn(&[1, 2, 2]), vec![0.5f32, f32::NEG_INFINITY, 0.1, 0.2]).unwrap();
        let s = compare(o.view(), r.view(), TOL, Mask::Causal).unwrap();
        assert!(s.passed());
        assert_eq!((s.compared, s.masked), (3, 1));
        // A future key that one side leaves unmasked was seen: a mismatch, whatever its value.
        let seen = ArrayD::from_shape_vec(IxDyn(&[1, 2, 2]), vec![0.5f32, 0.3, 0.1, 0.2]).unwrap();
        let s = compare(seen.view(), r.view(), TOL, Mask::Causal).unwrap();
        assert!(!s.passed());
        assert_eq!((s.compared, s.masked, s.unmasked, s.mismatches), (4, 0, 1, 1));
        assert_eq!(s.worst_index, vec![0, 0, 1]);
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let a = array![1.0f32, 2.0].into_dyn();
        let b = array![1.0f32, 2.0, 3.0].into_dyn();
        assert!(compare(a.view(), b.view(), TOL, Mask::All).is_err());
    }

    #[test]
    fn diffs_land_in_their_decades() {
        assert_eq!(decade(0.0), 0);
        assert_eq!(decade(1e-12), 1);
        assert_eq!(decade(2e-9), 2);
        assert_eq!(decade(5e-7), 4);
        assert_eq!(decade(0.5), 10);
        assert_eq!(decade(3.0), 11);
        assert_eq!(decade(f64::NAN), 11);
        let r = array![1.0f32, 1.0, 1.0].into_dyn();
        let o = array![1.0f32, 1.000_001, 2.0].into_dyn();
        let s = compare(o.view(), r.view(), TOL, Mask::All).unwrap();
        assert_eq!(s.diff_decades.iter().sum::<usize>(), 3);
        assert_eq!((s.diff_decades[0], s.diff_decades[4], s.diff_decades[11]), (1, 1, 1));
        assert_eq!(s.first_mismatches.len(), 1);
        assert_eq!(s.first_mismatches[0].index, vec![2]);
    }

    #[test]
    fn a_float64_reference_is_compared_in_float64() {
        // 0.1 is not a float32 value: ours (the float32 nearest to 0.1) is 1.5e-9 from the
        // float64 0.1, a difference a float32 reference could not show.
        let ours = array![0.1f32].into_dyn();
        let truth = array![0.1f64].into_dyn();
        let s = compare(ours.view(), truth.view(), TOL, Mask::All).unwrap();
        assert!((s.max_abs - (0.1f32 as f64 - 0.1).abs()).abs() < 1e-18);
        assert!(s.max_abs > 1e-9 && s.max_abs < 2e-9, "{}", s.max_abs);
    }

    #[test]
    fn tolerance_rule_scales_with_reference() {
        let t = Tolerance::Close { atol: 1e-4, rtol: 1e-5 };
        assert_eq!(t.allowed(0.0), 1e-4);
        assert!((t.allowed(-100.0) - 1.1e-3).abs() < 1e-12);
        assert_eq!(Tolerance::Exact.allowed(5.0), 0.0);
    }

    #[test]
    fn unravel_gives_row_major_coordinates() {
        assert_eq!(unravel(0, &[2, 3, 4]), vec![0, 0, 0]);
        assert_eq!(unravel(23, &[2, 3, 4]), vec![1, 2, 3]);
        assert_eq!(unravel(5, &[2, 3, 4]), vec![0, 1, 1]);
    }

    #[test]
    fn bitwise_difference_is_located() {
        let a = array![[1.0f32, 2.0], [3.0, 4.0]].into_dyn();
        let mut b = a.clone();
        assert_eq!(first_bitwise_difference(a.view(), b.view()).unwrap(), None);
        b[[1, 0]] = 3.0000002;
        assert_eq!(first_bitwise_difference(a.view(), b.view()).unwrap(), Some(vec![1, 0]));
    }

    #[test]
    fn a_heatmap_pools_the_largest_difference_and_leaves_masked_cells_empty() {
        // [1 head, 4 queries, 4 keys], a causal mask: the upper triangle is never compared.
        let a = ArrayD::<f32>::zeros(vec![1, 4, 4]);
        let mut b = a.clone();
        b[[0, 3, 0]] = 0.5;
        b[[0, 0, 3]] = 9.0; // a future key: masked, counts for nothing
        let h = heatmap(a.view(), b.view(), Mask::Causal, 4, (2, 2));
        let p = &h.panels[0];
        assert_eq!((p.extent, p.cells), ((4, 4), (2, 2)));
        // Cell (1, 0) holds rows 2-3, keys 0-1: the 0.5; cell (0, 1), rows 0-1 and keys 2-3,
        // is masked whole.
        assert_eq!(p.values[2], 0.5);
        assert!(p.values[1].is_nan());
        assert_eq!(p.values[0], 0.0);
    }

    #[test]
    fn a_heatmap_keeps_the_heads_that_differ_most() {
        let a = ArrayD::<f32>::zeros(vec![3, 2, 2]);
        let mut b = a.clone();
        b[[0, 0, 0]] = 1.0;
        b[[2, 1, 1]] = 2.0;
        let h = heatmap(a.view(), b.view(), Mask::All, 2, (8, 8));
        let labels: Vec<&str> = h.panels.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["head 0", "head 2"]);
    }
}
