//! Where in a failing tensor the error sits, when it has structure: a kernel bug often leaves
//! one row (a prompt position), one run of columns (a 16-column panel, one head's slice) or one
//! head wrong while the rest is exact, and says more by where it is than by how large it is.
//!
//! Tensors are read by their rank, as the checkpoints lay them out: [X] is columns, [T, X]
//! positions × columns, [H, T, X] heads × positions × columns. An element is wrong when it is
//! outside the checkpoint's tolerance of the reference (masked entries on both sides are
//! right). An error in every row, column and head has no structure and gets no location.

use std::collections::BTreeSet;

use ndarray::{ArrayViewD, Axis, Ix3};

use crate::engine::kv_cache::KEY_BLOCK;
use crate::engine::packed::PANEL;
use crate::validation::compare::{MASK_THRESHOLD, Tolerance};

// The engine's panel width (columns of one packed panel of its matrix kernels) and the key
// block of its attention: a wrong run that starts or ends on these bounds points at them.

/// A sentence saying where the error sits, with a guess at the kernel path it points to; None
/// when the error has no structure (every row, column and head wrong, scattered elements, a
/// few points) or there is none. `n_head` names column runs that are one head's slice of a
/// [T, C] tensor.
pub fn locate(
    ours: ArrayViewD<'_, f32>,
    reference: ArrayViewD<'_, f64>,
    tolerance: Tolerance,
    n_head: usize,
) -> Option<String> {
    if ours.shape() != reference.shape() || ours.is_empty() || ours.ndim() > 3 {
        return None;
    }
    // Every tensor as [H, T, X]: a vector is one row, a matrix one head.
    let shape = ours.shape();
    let as3 = |d: &[usize]| match d.len() {
        1 => [1, 1, d[0]],
        2 => [1, d[0], d[1]],
        _ => [d[0], d[1], d[2]],
    };
    let [h, t, x] = as3(shape);
    let ours3 = ours.to_shape([h, t, x]).ok()?.into_dimensionality::<Ix3>().ok()?;
    let ref3 = reference.to_shape([h, t, x]).ok()?.into_dimensionality::<Ix3>().ok()?;
    let (mut heads, mut rows, mut cols) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let (mut n_wrong, mut all_zero) = (0usize, true);
    for ((i, j, k), &a) in ours3.indexed_iter() {
        if !agrees(a, ref3[[i, j, k]], tolerance) {
            heads.insert(i);
            rows.insert(j);
            cols.insert(k);
            n_wrong += 1;
            all_zero &= a == 0.0;
        }
    }
    if n_wrong == 0 {
        return None;
    }
    // An axis is located when the wrong indices along it are a few runs short of the whole
    // extent; scattered ones (an error everywhere that some elements pass by chance) say
    // nothing about a kernel path.
    let located = |set: &BTreeSet<usize>, extent: usize| {
        let runs = dense_runs(set);
        (runs.len() <= MAX_RUNS && covered(&runs) < extent).then_some(runs)
    };
    let (head_runs, row_runs, col_runs) = (located(&heads, h), located(&rows, t), located(&cols, x));
    // ... the located block must be mostly wrong (the error fills its entries that the mask
    // leaves: a block of keys past the first is a triangle of a causal tensor), and it must
    // span a whole axis of more than one index (whole rows, whole columns, whole heads) or be
    // one run of at least `MIN_RUN` along every located axis (a block; in a single row, a run
    // of columns): a few wrong elements alone are points, not a kernel path.
    let block = unmasked_in_block(&ref3.view(), [&head_runs, &row_runs, &col_runs]);
    let spans_an_axis =
        [(&head_runs, h), (&row_runs, t), (&col_runs, x)].iter().any(|(r, n)| r.is_none() && *n > 1);
    let one_long_run = |runs: &Option<Vec<(usize, usize)>>| {
        runs.as_deref().is_none_or(|runs| runs.len() == 1 && covered(runs) >= MIN_RUN)
    };
    let a_block = [&head_runs, &row_runs, &col_runs].into_iter().all(one_long_run);
    let located_somewhere = head_runs.is_some() || row_runs.is_some() || col_runs.is_some();
    if !located_somewhere || !(spans_an_axis || a_block) || 4 * n_wrong < 3 * block {
        return None;
    }
    let mut parts = Vec::new();
    let mut hints = Vec::new();
    if head_runs.is_some() {
        parts.push(format!("{} of {h}", counted("head", &heads)));
        hints.push("one head's loop bound or offset".to_string());
    }
    if let Some(runs) = &row_runs {
        let last_only = rows.len() == 1 && rows.contains(&(t - 1));
        let what = if last_only { " (the last)" } else { "" };
        parts.push(format!("{}{what} of {t}", counted("position", &rows)));
        // Rows wrong in some columns only follow from the columns (a causal tensor's later
        // key block is wrong in the rows that see it): only whole wrong rows point at rows.
        match runs[..] {
            _ if col_runs.is_some() => {}
            [(_, last)] if last == t - 1 => {
                hints.push("a row remainder of a many-row kernel (the last tile's rows)".into())
            }
            [_] => hints.push("a split of the rows between threads or tiles".into()),
            _ => {}
        }
    }
    if let Some(runs) = &col_runs {
        parts.push(format!("{} of {x}", counted("column", &cols)));
        hints.extend(column_hints(runs, x, (shape.len() == 2).then_some(n_head)));
    }
    let mut sentence = format!("the error sits in {}", parts.join(", "));
    if all_zero {
        sentence.push_str("; ours is zero there");
    } else if let Some(from) = stale_row(&ours3.view(), &ref3.view(), &rows, tolerance) {
        sentence.push_str(&format!("; ours there holds the reference's position {from}"));
    }
    if !hints.is_empty() {
        sentence.push_str(&format!(": {}?", hints.join("; or ")));
    }
    Some(sentence)
}

/// Whether ours agrees with the reference at one element: both masked, or both finite and
/// within the tolerance.
fn agrees(a: f32, b: f64, tolerance: Tolerance) -> bool {
    let a = a as f64;
    (a <= MASK_THRESHOLD && b <= MASK_THRESHOLD)
        || (a.is_finite() && b.is_finite() && (a - b).abs() <= tolerance.allowed(b))
}

/// The indices a list of runs covers.
fn covered(runs: &[(usize, usize)]) -> usize {
    runs.iter().map(|&(a, b)| b - a + 1).sum()
}

/// At most this many runs of wrong indices along an axis make a location.
const MAX_RUNS: usize = 4;

/// The fewest wrong indices in one run along each located axis that make a block (in a single
/// row, a decode step's tensor, a run of columns) when it spans no whole axis: a quarter of a
/// panel.
const MIN_RUN: usize = PANEL / 4;

/// The entries of the block that the runs (None: the whole axis) of heads, rows and columns
/// span which the reference does not mask.
fn unmasked_in_block(
    reference: &ndarray::ArrayView3<'_, f64>,
    runs: [&Option<Vec<(usize, usize)>>; 3],
) -> usize {
    let indices = |axis: usize| -> Vec<usize> {
        match runs[axis] {
            Some(runs) => runs.iter().flat_map(|&(a, b)| a..=b).collect(),
            None => (0..reference.len_of(Axis(axis))).collect(),
        }
    };
    let (heads, rows, cols) = (indices(0), indices(1), indices(2));
    let mut n = 0;
    for &i in &heads {
        for &j in &rows {
            n += cols.iter().filter(|&&k| reference[[i, j, k]] > MASK_THRESHOLD).count();
        }
    }
    n
}

/// The runs of a set, as one span when they fill three quarters of it: a wrong run with
/// holes where ours happens to be right (a zeroed panel where the true value is near zero
/// too) is that run.
fn dense_runs(set: &BTreeSet<usize>) -> Vec<(usize, usize)> {
    match (set.first(), set.last()) {
        (Some(&first), Some(&last)) if 4 * set.len() >= 3 * (last - first + 1) => vec![(first, last)],
        _ => runs(set),
    }
}

/// "position 26", "positions 3, 7", "columns 48–63".
fn counted(noun: &str, set: &BTreeSet<usize>) -> String {
    let runs = runs(set);
    let plural = if set.len() == 1 { "" } else { "s" };
    let shown: Vec<String> =
        runs.iter().take(4).map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}–{b}") }).collect();
    let more = if runs.len() > 4 { format!(" and {} more runs", runs.len() - 4) } else { String::new() };
    format!("{noun}{plural} {}{more}", shown.join(", "))
}

/// Consecutive runs (first, last) of a set of indices.
fn runs(set: &BTreeSet<usize>) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &i in set {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == i => *last = i,
            _ => out.push((i, i)),
        }
    }
    out
}

/// What the runs of wrong columns line up with: one head's slice, key blocks, panels, or the
/// tail past the last whole block. Tensors no wider than a panel have no such paths.
fn column_hints(runs: &[(usize, usize)], width: usize, n_head: Option<usize>) -> Vec<String> {
    let mut hints = Vec::new();
    if width <= PANEL {
        return hints;
    }
    if let Some(nh) = n_head.filter(|&nh| nh > 1 && width.is_multiple_of(nh)) {
        let hd = width / nh;
        if runs.iter().all(|&(a, b)| a % hd == 0 && (b + 1) % hd == 0) {
            let heads: BTreeSet<usize> = runs.iter().flat_map(|&(a, b)| a / hd..=b / hd).collect();
            hints.push(format!(
                "{} of {hd} columns each (the heads' merge or split)",
                counted("head slice", &heads)
            ));
        }
    }
    let aligned = |n: usize| runs.iter().all(|&(a, b)| a % n == 0 && ((b + 1) % n == 0 || b + 1 == width));
    // A run ending at the last column is a whole block when it is more than a panel long:
    // the last partial panel alone is a panel's remainder.
    let beyond_a_panel = runs.iter().all(|&(a, b)| b - a + 1 > PANEL);
    if aligned(KEY_BLOCK) && beyond_a_panel && width > KEY_BLOCK {
        hints.push(format!("whole blocks of {KEY_BLOCK} columns (a key block's bound, or a panel group's)"));
    } else if aligned(PANEL) {
        hints.push(format!(
            "whole {PANEL}-column panels (a panel remainder or a thread's share of the panels)"
        ));
    } else if let [(first, last)] = runs[..]
        && last + 1 == width
    {
        hints.push(format!("the columns from {first} on (a remainder past the last whole block)"));
    }
    hints
}

/// The reference position that ours's wrong rows hold instead of their own, when every wrong
/// row of ours equals (within tolerance, every column and head) one and the same other row of
/// the reference: a stale or misplaced row.
fn stale_row(
    ours: &ndarray::ArrayView3<'_, f32>,
    reference: &ndarray::ArrayView3<'_, f64>,
    rows: &BTreeSet<usize>,
    tolerance: Tolerance,
) -> Option<usize> {
    let t = ours.len_of(Axis(1));
    let equal = |ours_row: usize, ref_row: usize| {
        let (ours, reference) = (ours.index_axis(Axis(1), ours_row), reference.index_axis(Axis(1), ref_row));
        ours.iter().zip(reference.iter()).all(|(&a, &b)| agrees(a, b, tolerance))
    };
    (0..t).filter(|r| !rows.contains(r)).find(|&from| rows.iter().all(|&r| equal(r, from)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array3};

    const TOL: Tolerance = Tolerance::Close { atol: 1e-5, rtol: 1e-5 };

    fn reference(t: usize, c: usize) -> Array2<f64> {
        Array2::from_shape_fn((t, c), |(i, j)| 1.0 + (i * c + j) as f64 * 0.01)
    }

    fn ours_of(r: &Array2<f64>) -> Array2<f32> {
        r.mapv(|v| v as f32)
    }

    #[test]
    fn an_error_everywhere_has_no_location() {
        let r = reference(5, 32);
        let ours = ours_of(&r).mapv(|v| v + 1.0);
        assert_eq!(locate(ours.view().into_dyn(), r.view().into_dyn(), TOL, 4), None);
        assert_eq!(locate(ours_of(&r).view().into_dyn(), r.view().into_dyn(), TOL, 4), None, "no error");
    }

    #[test]
    fn scattered_errors_have_no_location() {
        // Wrong everywhere but in every third element, which passes by chance: no structure.
        let r = reference(4, 64);
        let mut ours = ours_of(&r);
        ours.indexed_iter_mut().filter(|((i, j), _)| (i * 64 + j) % 3 != 0).for_each(|(_, v)| *v += 1.0);
        assert_eq!(locate(ours.view().into_dyn(), r.view().into_dyn(), TOL, 4), None);
        // One row wrong in a third of its columns only: the row is not filled by the error.
        let mut ours = ours_of(&r);
        ours.row_mut(3).iter_mut().step_by(3).for_each(|v| *v += 1.0);
        assert_eq!(locate(ours.view().into_dyn(), r.view().into_dyn(), TOL, 4), None);
    }

    #[test]
    fn one_wrong_element_is_a_point_not_a_location() {
        let r = reference(4, 64);
        let mut ours = ours_of(&r);
        ours[[3, 5]] += 1.0;
        assert_eq!(locate(ours.view().into_dyn(), r.view().into_dyn(), TOL, 4), None);
    }

    #[test]
    fn a_zero_last_row_is_named_as_a_row_remainder() {
        let r = reference(5, 32);
        let mut ours = ours_of(&r);
        ours.row_mut(4).fill(0.0);
        let s = locate(ours.view().into_dyn(), r.view().into_dyn(), TOL, 4).unwrap();
        assert!(s.starts_with("the error sits in position 4 (the last) of 5; ours is zero there"), "{s}");
        assert!(s.contains("row remainder"), "{s}");
    }

    #[test]
    fn a_wrong_panel_and_a_head_slice_are_named() {
        let r = reference(5, 64);
        let mut ours = ours_of(&r);
        ours.slice_mut(ndarray::s![.., 32..48]).mapv_inplace(|v| v * 2.0);
        let s = locate(ours.view().into_dyn(), r.view().into_dyn(), TOL, 4).unwrap();
        assert!(s.starts_with("the error sits in columns 32–47 of 64"), "{s}");
        assert!(s.contains("head slice 2 of 16 columns"), "{s}");
        assert!(s.contains("16-column panels"), "{s}");
    }

    #[test]
    fn a_panel_with_holes_where_ours_is_right_by_chance_is_still_a_panel() {
        let r = reference(3, 64);
        let mut ours = ours_of(&r);
        ours.slice_mut(ndarray::s![.., 16..32]).fill(0.0);
        ours[[0, 20]] = r[[0, 20]] as f32;
        ours[[1, 20]] = r[[1, 20]] as f32;
        ours[[2, 20]] = r[[2, 20]] as f32;
        let s = locate(ours.view().into_dyn(), r.view().into_dyn(), TOL, 4).unwrap();
        assert!(s.starts_with("the error sits in columns 16–19, 21–31 of 64; ours is zero there"), "{s}");
        assert!(s.contains("16-column panels"), "{s}");
    }

    #[test]
    fn a_stale_row_and_one_head_are_named() {
        let r = reference(4, 16);
        let mut ours = ours_of(&r);
        let row1 = ours.row(1).to_owned();
        ours.row_mut(3).assign(&row1);
        let s = locate(ours.view().into_dyn(), r.view().into_dyn(), TOL, 4).unwrap();
        assert!(s.contains("position 3 (the last) of 4; ours there holds the reference's position 1"), "{s}");

        let r3 = Array3::from_shape_fn((4, 3, 8), |(h, i, j)| (h * 24 + i * 8 + j) as f64);
        let mut ours3 = r3.mapv(|v| v as f32);
        ours3.index_axis_mut(Axis(0), 2).fill(7.5);
        let s = locate(ours3.view().into_dyn(), r3.view().into_dyn(), TOL, 4).unwrap();
        assert!(s.starts_with("the error sits in head 2 of 4"), "{s}");
    }

    #[test]
    fn masked_entries_on_both_sides_are_right() {
        // Causal scores: the future entries are −∞ on both sides, and right; column 0 is wrong
        // in every row.
        let r = Array2::from_shape_fn((3, 3), |(i, j)| if j > i { f64::NEG_INFINITY } else { 1.0 });
        let mut ours = r.mapv(|v| v as f32);
        ours.column_mut(0).fill(5.0);
        let s = locate(ours.view().into_dyn(), r.view().into_dyn(), TOL, 1).unwrap();
        assert!(s.starts_with("the error sits in column 0 of 3"), "{s}");
    }
    #[test]
    fn a_later_key_block_of_causal_scores_is_a_block_though_a_triangle() {
        // [T, S] causal scores, T = S = 100: the keys from 64 on are zero in every row that
        // sees them, a triangle of the block rows 64–99 × columns 64–99.
        let (t, block) = (100, KEY_BLOCK);
        let r =
            Array2::from_shape_fn((t, t), |(i, j)| if j > i { f64::NEG_INFINITY } else { 1.0 + j as f64 });
        let mut ours = r.mapv(|v| v as f32);
        ours.indexed_iter_mut().filter(|((i, j), _)| *j >= block && j <= i).for_each(|(_, v)| *v = 0.0);
        let s = locate(ours.view().into_dyn(), r.view().into_dyn(), TOL, 1).unwrap();
        assert!(
            s.starts_with("the error sits in positions 64–99 of 100, columns 64–99 of 100; ours is zero"),
            "{s}"
        );
        assert!(s.contains("blocks of 64 columns"), "{s}");
        assert!(!s.contains("row remainder"), "the rows follow from the columns: {s}");
    }

    #[test]
    fn one_row_with_its_last_partial_panel_wrong_is_located() {
        // A decode step's [C] = 136: the last panel has 8 columns.
        let r = reference(1, 136);
        let mut ours = ours_of(&r);
        ours.slice_mut(ndarray::s![0, 128..]).fill(0.0);
        let s = locate(ours.view().into_dyn(), r.view().into_dyn(), TOL, 2).unwrap();
        assert!(s.starts_with("the error sits in columns 128–135 of 136; ours is zero there"), "{s}");
        assert!(s.contains("16-column panels"), "a panel's remainder, not a key block: {s}");
        // Fewer than a quarter of a panel in one row are points.
        let mut ours = ours_of(&r);
        ours.slice_mut(ndarray::s![0, 130..133]).fill(0.0);
        assert_eq!(locate(ours.view().into_dyn(), r.view().into_dyn(), TOL, 2), None);
    }
}
