//! The micro-kernel: a tile of rows of x against a few panels of W, every output summed over k
//! in order in blocks of `BLOCK`, the bias added as the sums are stored; and the loops that run
//! tiles over a run of panels and every row.

use std::ops::Range;

use super::driver::{Out, Rows};
use super::lanes::Lanes;
use super::widen::Widen;
use crate::engine::packed::{PANEL, PackedMatrix, line_offset};
use crate::engine::paths::reached;

/// The runs of `NP` panels in `panels`, each against every row of x, `MR` rows at a time, W's
/// lines widened from format `F`.
///
/// Safety: x holds `x.rows` rows of W's K floats; y has room for those rows of W's N floats;
/// W is packed in `F::FORMAT`.
#[inline(always)]
pub(super) unsafe fn panels<V: Lanes, F: Widen, const NP: usize, const MR: usize>(
    x: Rows,
    w: &PackedMatrix,
    panels: Range<usize>,
    y: Out,
) {
    debug_assert_eq!(w.format(), F::FORMAT, "the kernel set is the matrix's format's");
    let mut p = panels.start;
    while p + NP <= panels.end {
        // Safety: the caller's x and y; panels p..p + NP are W's.
        unsafe { rows::<V, F, NP, MR>(x, w, p, y) };
        p += NP;
    }
    reached!(PanelRunTail if p < panels.end);
    for p in p..panels.end {
        // Safety: the caller's x and y; panel p is W's.
        unsafe { rows::<V, F, 1, MR>(x, w, p, y) };
    }
}

/// Panels p..p + NP against every row of x: tiles of MR rows, the rest in tiles of 8, 4, 2, 1.
/// While x goes past these panels (in cache after the first tile), the tiles share out the
/// prefetching of the next NP panels from memory, which would otherwise hold up the first tile
/// of the next run.
#[inline(always)]
unsafe fn rows<V: Lanes, F: Widen, const NP: usize, const MR: usize>(
    x: Rows,
    w: &PackedMatrix,
    p: usize,
    y: Out,
) {
    let tiles = x.rows.div_ceil(MR);
    let next = w.bytes_of((p + NP).min(w.panels())..(p + 2 * NP).min(w.panels()));
    let share = next.len().div_ceil(CACHE_LINE).div_ceil(tiles) * CACHE_LINE;
    let ahead = |tile: usize| {
        let bytes = if tiles > 1 { next.chunks(share.max(1)).nth(tile).unwrap_or(&[]) } else { &[] };
        Ahead { at: bytes.as_ptr(), lines: bytes.len().div_ceil(CACHE_LINE) }
    };
    let mut t = 0;
    reached!(WholeRowTiles if MR > 1 && x.rows >= MR);
    while t + MR <= x.rows {
        // Safety: rows t..t + MR of x and y exist (the loop's bound).
        unsafe { tile::<V, F, MR, NP>(x, w, p, t, y, ahead(t / MR)) };
        t += MR;
    }
    macro_rules! rest {
        ($($rows:literal $path:ident),*) => {$(
            if $rows < MR && x.rows - t >= $rows {
                reached!($path);
                // Safety: rows t..t + $rows of x and y exist (the condition).
                unsafe { tile::<V, F, $rows, NP>(x, w, p, t, y, ahead(tiles - 1)) };
                t += $rows;
            }
        )*};
    }
    rest!(8 RowTail8, 4 RowTail4, 2 RowTail2, 1 RowTail1);
    debug_assert_eq!(t, x.rows);
}

/// Cache lines of the next panels to fetch during a tile, spread over its steps of k.
#[derive(Clone, Copy)]
struct Ahead {
    at: *const u8,
    lines: usize,
}

const CACHE_LINE: usize = 64;

/// How far ahead in its own panels the one-row tile prefetches, in bytes.
const STREAM_AHEAD: usize = 1024;

/// Steps of k summed in an accumulator of their own before it is added to the output's sum: a
/// float32 sum of K terms in one accumulator has rounding errors growing with K; in blocks they
/// grow with BLOCK + K / BLOCK, for one extra add per output and block. Measured on the
/// GPT-2-small shape against the float64 truth (rms error over PyTorch's, per checkpoint): 1.9
/// to 3.5 with one accumulator, 0.6 to 1.0 in blocks of 64.
pub(super) const BLOCK: usize = 64;

/// y[t..t + MR, panels p..p + NP] = x[t..t + MR]·W[.., those panels]: MR·NP accumulators, each
/// 16 outputs, summing over k in order in blocks of `BLOCK`. The same arithmetic for every
/// output whatever MR and NP, hence bit for bit the same result.
#[inline(always)]
unsafe fn tile<V: Lanes, F: Widen, const MR: usize, const NP: usize>(
    x: Rows,
    w: &PackedMatrix,
    p: usize,
    t: usize,
    y: Out,
    ahead: Ahead,
) {
    let k = w.k();
    reached!(ShortSumBlock if !k.is_multiple_of(BLOCK));
    let panel: [*const u8; NP] = std::array::from_fn(|j| w.bytes_of(p + j..p + j + 1).as_ptr());
    // Safety: rows t..t + MR of x exist (the callers' loops), each K floats.
    let xs: [*const f32; MR] = std::array::from_fn(|r| unsafe { x.at.add((t + r) * x.stride) });
    // Sums of the finished blocks of k, and of the block being summed.
    // Safety: the kernel set runs on a CPU with the lanes' unit (`Lanes`'s contract).
    let mut sum = [[unsafe { V::zero() }; NP]; MR];
    // One prefetch every `every` steps of k, spread over the whole tile.
    let every = (k / ahead.lines.max(1)).max(1);
    let (mut countdown, mut fetched) = (0, 0);
    // Safety: as `sum`.
    let mut groups = [unsafe { V::zero() }; NP];
    const { assert!(BLOCK.is_multiple_of(F::GROUP), "a group never spans two blocks") };
    for block in (0..k).step_by(BLOCK) {
        // Safety: as `sum`.
        let mut acc = [[unsafe { V::zero() }; NP]; MR];
        for i in block..(block + BLOCK).min(k) {
            if MR == 1 && i.is_multiple_of(F::PER_CACHE_LINE) {
                for &panel in &panel {
                    // Safety: a prefetch reads nothing, whatever the address.
                    unsafe { V::prefetch(panel.wrapping_add(line_offset(F::FORMAT, i).0 + STREAM_AHEAD)) };
                }
            }
            if i.is_multiple_of(F::GROUP) {
                // Safety: line i of each panel is within its K lines, in F's format.
                groups = std::array::from_fn(|j| unsafe { F::group::<V>(panel[j], i) });
            }
            // Safety: as for the groups.
            let lines: [V; NP] = std::array::from_fn(|j| unsafe { F::line::<V>(panel[j], i, groups[j]) });
            if countdown == 0 {
                if fetched < ahead.lines {
                    // Safety: `fetched` counts lines of `ahead`.
                    unsafe { V::prefetch(ahead.at.add(fetched * CACHE_LINE)) };
                    fetched += 1;
                }
                countdown = every;
            }
            countdown -= 1;
            for r in 0..MR {
                // Safety: x[t + r, i] is within row t + r; the lanes' unit is there.
                let xv = unsafe { V::splat(*xs[r].add(i)) };
                for j in 0..NP {
                    // Safety: registers only, on the lanes' unit.
                    acc[r][j] = unsafe { acc[r][j].madd(xv, lines[j]) };
                }
            }
        }
        for (sum, acc) in sum.iter_mut().zip(&acc) {
            for (sum, acc) in sum.iter_mut().zip(acc) {
                // Safety: registers only, on the lanes' unit.
                *sum = unsafe { sum.add(*acc) };
            }
        }
    }
    for (r, sums) in sum.iter().enumerate() {
        for (j, sum) in sums.iter().enumerate() {
            let column = (p + j) * PANEL;
            // Safety: row t + r of y and the bias have N floats; the last panel's padding
            // columns are not stored.
            unsafe {
                let to = y.at.add((t + r) * y.stride + column);
                let valid = w.n() - column;
                if valid >= PANEL {
                    if y.bias.is_null() { *sum } else { sum.add(V::load(y.bias.add(column))) }.store(to);
                } else {
                    reached!(PartialPanelNoBias if y.bias.is_null());
                    reached!(PartialPanelBias if !y.bias.is_null());
                    let mut line = [0.0f32; PANEL];
                    sum.store(line.as_mut_ptr());
                    if !y.bias.is_null() {
                        let bias = std::slice::from_raw_parts(y.bias.add(column), valid);
                        line.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                    }
                    std::ptr::copy_nonoverlapping(line.as_ptr(), to, valid);
                }
            }
        }
    }
}
