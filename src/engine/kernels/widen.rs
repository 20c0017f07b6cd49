//! A line of a panel in each weight format, widened to 16 float32 lanes as the tile goes down
//! K: the weights stay in their format in memory (the decode step's time is reading them) and
//! become float32 only in registers. The layout is `packed::line_offset`'s.

use super::lanes::Lanes;
use crate::engine::format::{Q8_0_BLOCK, WeightFormat};
use crate::engine::packed::line_offset;

/// One weight format's lines. A tile calls `group` at every `GROUP`-th line of K and hands what
/// it returned to the next `GROUP` lines' `line`: Q8_0's scales are widened once per block of 32
/// lines, not once a line.
///
/// Safety of both: `panel` is the start of a panel of a matrix packed in `FORMAT`, `k` one of
/// its K lines (for `group`, the first of a group), and the CPU has the lanes' unit.
pub(super) trait Widen {
    const FORMAT: WeightFormat;
    const GROUP: usize;
    /// Lines per cache line (64 bytes): 1 for F32, 2 for the halves, 4 for Q8_0's int8.
    const PER_CACHE_LINE: usize;
    #[inline(always)]
    unsafe fn group<V: Lanes>(_panel: *const u8, _k: usize) -> V {
        // Safety: the caller's unit (the trait's contract); registers only.
        unsafe { V::zero() }
    }
    unsafe fn line<V: Lanes>(panel: *const u8, k: usize, group: V) -> V;
}

/// The group of the formats without one: once per block of the sums, never read.
const NO_GROUP: usize = super::tile::BLOCK;

pub(super) struct F32;
pub(super) struct Bf16;
pub(super) struct F16;
pub(super) struct Q8_0;

impl Widen for F32 {
    const FORMAT: WeightFormat = WeightFormat::F32;
    const GROUP: usize = NO_GROUP;
    const PER_CACHE_LINE: usize = 1;
    #[inline(always)]
    unsafe fn line<V: Lanes>(panel: *const u8, k: usize, _: V) -> V {
        // Safety: the trait's contract; the offset is within the panel.
        unsafe { V::load(panel.add(line_offset(Self::FORMAT, k).0).cast()) }
    }
}

impl Widen for Bf16 {
    const FORMAT: WeightFormat = WeightFormat::Bf16;
    const GROUP: usize = NO_GROUP;
    const PER_CACHE_LINE: usize = 2;
    #[inline(always)]
    unsafe fn line<V: Lanes>(panel: *const u8, k: usize, _: V) -> V {
        // Safety: the trait's contract; the offset is within the panel.
        unsafe { V::load_bf16(panel.add(line_offset(Self::FORMAT, k).0).cast()) }
    }
}

impl Widen for F16 {
    const FORMAT: WeightFormat = WeightFormat::F16;
    const GROUP: usize = NO_GROUP;
    const PER_CACHE_LINE: usize = 2;
    #[inline(always)]
    unsafe fn line<V: Lanes>(panel: *const u8, k: usize, _: V) -> V {
        // Safety: the trait's contract; the offset is within the panel.
        unsafe { V::load_f16(panel.add(line_offset(Self::FORMAT, k).0).cast()) }
    }
}

impl Widen for Q8_0 {
    const FORMAT: WeightFormat = WeightFormat::Q8_0;
    const GROUP: usize = Q8_0_BLOCK;
    const PER_CACHE_LINE: usize = 4;
    /// The block's 16 scales, widened from F16.
    #[inline(always)]
    unsafe fn group<V: Lanes>(panel: *const u8, k: usize) -> V {
        let (_, scales) = line_offset(Self::FORMAT, k);
        // Safety: the trait's contract; the offset is within the panel.
        unsafe { V::load_f16(panel.add(scales).cast()) }
    }
    #[inline(always)]
    unsafe fn line<V: Lanes>(panel: *const u8, k: usize, scales: V) -> V {
        let (line, _) = line_offset(Self::FORMAT, k);
        // Safety: the trait's contract; the offset is within the panel.
        unsafe { V::load_q8(panel.add(line).cast(), scales) }
    }
}
