//! A line of a panel in each weight format, widened to 16 float32 lanes as the tile goes down
//! K: the weights stay in their format in memory (the decode step's time is reading them) and
//! become float32 only in registers. The layout is `packed::line_offset`'s.

use super::lanes::Lanes;
use crate::engine::format::WeightFormat;
use crate::engine::packed::line_offset;

/// One weight format's lines.
///
/// Safety of `line`: `panel` is the start of a panel of a matrix packed in `FORMAT`, `k` one of
/// its K lines, and the CPU has the lanes' unit.
pub(super) trait Widen {
    const FORMAT: WeightFormat;
    unsafe fn line<V: Lanes>(panel: *const u8, k: usize) -> V;
}

pub(super) struct F32;
pub(super) struct Bf16;
pub(super) struct F16;
pub(super) struct Q8_0;

impl Widen for F32 {
    const FORMAT: WeightFormat = WeightFormat::F32;
    #[inline(always)]
    unsafe fn line<V: Lanes>(panel: *const u8, k: usize) -> V {
        // Safety: the trait's contract; the offset is within the panel.
        unsafe { V::load(panel.add(line_offset(Self::FORMAT, k).0).cast()) }
    }
}

impl Widen for Bf16 {
    const FORMAT: WeightFormat = WeightFormat::Bf16;
    #[inline(always)]
    unsafe fn line<V: Lanes>(panel: *const u8, k: usize) -> V {
        // Safety: the trait's contract; the offset is within the panel.
        unsafe { V::load_bf16(panel.add(line_offset(Self::FORMAT, k).0).cast()) }
    }
}

impl Widen for F16 {
    const FORMAT: WeightFormat = WeightFormat::F16;
    #[inline(always)]
    unsafe fn line<V: Lanes>(panel: *const u8, k: usize) -> V {
        // Safety: the trait's contract; the offset is within the panel.
        unsafe { V::load_f16(panel.add(line_offset(Self::FORMAT, k).0).cast()) }
    }
}

impl Widen for Q8_0 {
    const FORMAT: WeightFormat = WeightFormat::Q8_0;
    #[inline(always)]
    unsafe fn line<V: Lanes>(panel: *const u8, k: usize) -> V {
        let (line, scales) = line_offset(Self::FORMAT, k);
        // Safety: the trait's contract; both offsets are within the panel.
        unsafe { V::load_q8(panel.add(line).cast(), panel.add(scales).cast()) }
    }
}
