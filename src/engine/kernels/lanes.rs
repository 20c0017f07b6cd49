//! 16 float32 lanes, one column of a panel each: what a tile computes with, for each vector
//! unit the kernels are compiled for, and the widening of a line of weights in each format to
//! them (exact: every BF16, F16 and Q8_0 value is a float32).

use crate::engine::format::{bf16_value, f16_value};
use crate::engine::packed::PANEL;

/// 16 float32 lanes, one column of a panel each: the operations of a tile.
///
/// Safety, for every method: the CPU has the vector unit the implementation is compiled for
/// (the kernel sets are chosen by run-time detection, `math::Simd`), and a pointer points at 16
/// floats that may be read (or written, for `store`).
pub(super) trait Lanes: Copy {
    unsafe fn zero() -> Self;
    /// 16 floats: a line of a panel (on a 64-byte boundary), or of the bias (anywhere).
    unsafe fn load(line: *const f32) -> Self;
    /// 16 bfloat16 (32 bytes), widened: each the top half of a float32.
    unsafe fn load_bf16(line: *const u16) -> Self;
    /// 16 IEEE halves (32 bytes), widened.
    unsafe fn load_f16(line: *const u16) -> Self;
    /// 16 int8 quants (16 bytes) times their columns' scales (widened from F16 once per block):
    /// Q8_0's d·q, exact.
    unsafe fn load_q8(line: *const i8, scales: Self) -> Self;
    unsafe fn splat(value: f32) -> Self;
    /// self + a·b
    unsafe fn madd(self, a: Self, b: Self) -> Self;
    unsafe fn add(self, other: Self) -> Self;
    unsafe fn store(self, to: *mut f32);
    /// Starts fetching the cache line at `line` (a hint: nothing is read).
    unsafe fn prefetch(_line: *const u8) {}
}

/// The baseline target's lanes: multiply and add separate (a fused multiply-add without the
/// hardware is a slow library call); LLVM vectorises the loops for what the target has.
#[derive(Clone, Copy)]
pub(super) struct Portable([f32; PANEL]);

impl Lanes for Portable {
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; PANEL])
    }
    #[inline(always)]
    unsafe fn load(line: *const f32) -> Self {
        // Safety: the caller's pointer holds 16 floats (the trait's contract).
        Portable(unsafe { line.cast::<[f32; PANEL]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn load_bf16(line: *const u16) -> Self {
        // Safety: the caller's pointer holds 16 halves (the trait's contract).
        let bits = unsafe { line.cast::<[u16; PANEL]>().read_unaligned() };
        Portable(bits.map(bf16_value))
    }
    #[inline(always)]
    unsafe fn load_f16(line: *const u16) -> Self {
        // Safety: the caller's pointer holds 16 halves (the trait's contract).
        let bits = unsafe { line.cast::<[u16; PANEL]>().read_unaligned() };
        Portable(bits.map(f16_value))
    }
    #[inline(always)]
    unsafe fn load_q8(line: *const i8, scales: Self) -> Self {
        // Safety: the caller's pointer holds 16 quants (the trait's contract).
        let quants = unsafe { line.cast::<[i8; PANEL]>().read_unaligned() };
        Portable(std::array::from_fn(|i| scales.0[i] * f32::from(quants[i])))
    }
    #[inline(always)]
    unsafe fn splat(value: f32) -> Self {
        Portable([value; PANEL])
    }
    #[inline(always)]
    unsafe fn madd(self, a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] + a.0[i] * b.0[i]))
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] + other.0[i]))
    }
    #[inline(always)]
    unsafe fn store(self, to: *mut f32) {
        // Safety: the caller's pointer holds 16 floats (the trait's contract).
        unsafe { to.cast::<[f32; PANEL]>().write_unaligned(self.0) }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    //! The x86-64 lanes: AVX-512, one register of 16 floats; AVX2, two of 8.
    use std::arch::x86_64::*;

    use super::Lanes;

    #[derive(Clone, Copy)]
    pub struct Avx512(__m512);

    impl Lanes for Avx512 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            // Safety: the CPU has the unit (the trait's contract); registers only.
            Avx512(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn load(line: *const f32) -> Self {
            // Safety: the CPU has the unit and the pointer holds 16 floats (the trait's contract).
            Avx512(unsafe { _mm512_loadu_ps(line) })
        }
        #[inline(always)]
        unsafe fn load_bf16(line: *const u16) -> Self {
            // Safety: the CPU has the unit and the pointer holds 16 halves (the trait's
            // contract); zero-extended to 32 bits and shifted into the top half.
            unsafe {
                let halves = _mm256_loadu_si256(line.cast());
                Avx512(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(halves))))
            }
        }
        #[inline(always)]
        unsafe fn load_f16(line: *const u16) -> Self {
            // Safety: the CPU has the unit (AVX-512F converts halves) and the pointer holds 16
            // halves (the trait's contract).
            unsafe { Avx512(_mm512_cvtph_ps(_mm256_loadu_si256(line.cast()))) }
        }
        #[inline(always)]
        unsafe fn load_q8(line: *const i8, scales: Self) -> Self {
            // Safety: the CPU has the unit and the pointer holds 16 quants (the trait's
            // contract).
            unsafe {
                let quants = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(line.cast())));
                Avx512(_mm512_mul_ps(quants, scales.0))
            }
        }
        #[inline(always)]
        unsafe fn splat(value: f32) -> Self {
            // Safety: the CPU has the unit (the trait's contract); registers only.
            Avx512(unsafe { _mm512_set1_ps(value) })
        }
        #[inline(always)]
        unsafe fn madd(self, a: Self, b: Self) -> Self {
            // Safety: the CPU has the unit (the trait's contract); registers only.
            Avx512(unsafe { _mm512_fmadd_ps(a.0, b.0, self.0) })
        }
        #[inline(always)]
        unsafe fn add(self, other: Self) -> Self {
            // Safety: the CPU has the unit (the trait's contract); registers only.
            Avx512(unsafe { _mm512_add_ps(self.0, other.0) })
        }
        #[inline(always)]
        unsafe fn store(self, to: *mut f32) {
            // Safety: the CPU has the unit and the pointer holds 16 floats (the trait's contract).
            unsafe { _mm512_storeu_ps(to, self.0) }
        }
        #[inline(always)]
        unsafe fn prefetch(line: *const u8) {
            // Safety: a prefetch reads nothing, whatever the address; SSE is part of x86-64.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.cast::<i8>()) }
        }
    }

    #[derive(Clone, Copy)]
    pub struct Avx2(__m256, __m256);

    impl Lanes for Avx2 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            // Safety: the CPU has the unit (the trait's contract); registers only.
            unsafe { Avx2(_mm256_setzero_ps(), _mm256_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn load(line: *const f32) -> Self {
            // Safety: the CPU has the unit and the pointer holds 16 floats (the trait's contract).
            unsafe { Avx2(_mm256_loadu_ps(line), _mm256_loadu_ps(line.add(8))) }
        }
        #[inline(always)]
        unsafe fn load_bf16(line: *const u16) -> Self {
            // Safety: the CPU has the unit and the pointer holds 16 halves (the trait's
            // contract); each 8 zero-extended to 32 bits and shifted into the top half.
            unsafe {
                let widen = |at: *const u16| {
                    let halves = _mm_loadu_si128(at.cast());
                    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(halves)))
                };
                Avx2(widen(line), widen(line.add(8)))
            }
        }
        #[inline(always)]
        unsafe fn load_f16(line: *const u16) -> Self {
            // Safety: the CPU has the unit with F16C (the AVX2 kernel sets require it) and the
            // pointer holds 16 halves (the trait's contract).
            unsafe {
                let widen = |at: *const u16| _mm256_cvtph_ps(_mm_loadu_si128(at.cast()));
                Avx2(widen(line), widen(line.add(8)))
            }
        }
        #[inline(always)]
        unsafe fn load_q8(line: *const i8, scales: Self) -> Self {
            // Safety: the CPU has the unit and the pointer holds 16 quants (the trait's
            // contract).
            unsafe {
                let quants = _mm_loadu_si128(line.cast());
                let low = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(quants));
                let high = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(quants)));
                Avx2(_mm256_mul_ps(low, scales.0), _mm256_mul_ps(high, scales.1))
            }
        }
        #[inline(always)]
        unsafe fn splat(value: f32) -> Self {
            // Safety: the CPU has the unit (the trait's contract); registers only.
            unsafe { Avx2(_mm256_set1_ps(value), _mm256_set1_ps(value)) }
        }
        #[inline(always)]
        unsafe fn madd(self, a: Self, b: Self) -> Self {
            // Safety: the CPU has the unit (the trait's contract); registers only.
            unsafe { Avx2(_mm256_fmadd_ps(a.0, b.0, self.0), _mm256_fmadd_ps(a.1, b.1, self.1)) }
        }
        #[inline(always)]
        unsafe fn add(self, other: Self) -> Self {
            // Safety: the CPU has the unit (the trait's contract); registers only.
            unsafe { Avx2(_mm256_add_ps(self.0, other.0), _mm256_add_ps(self.1, other.1)) }
        }
        #[inline(always)]
        unsafe fn store(self, to: *mut f32) {
            // Safety: the CPU has the unit and the pointer holds 16 floats (the trait's contract).
            unsafe {
                _mm256_storeu_ps(to, self.0);
                _mm256_storeu_ps(to.add(8), self.1);
            }
        }
        #[inline(always)]
        unsafe fn prefetch(line: *const u8) {
            // Safety: a prefetch reads nothing, whatever the address; SSE is part of x86-64.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.cast::<i8>()) }
        }
    }
}
