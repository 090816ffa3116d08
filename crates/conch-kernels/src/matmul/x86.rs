//! AVX2 and AVX-512 kernels.
//!
//! Kernel bodies are generic `#[inline(always)]` functions over the integer-dot instructions
//! ([`IntDot`]), the float vector width ([`FVec`]) and the weight layout; the `#[target_feature]`
//! entry points at the bottom instantiate them per level, so the intrinsics inline with the
//! right features enabled. Every entry computes one weight row against `T <= 4` activation rows,
//! decoding each weight block once for all of them.
//!
//! Quantized 32-value blocks are dotted with the 8-bit activations by unsigned×signed byte
//! dots (`vpmaddubsw`, or VNNI's `vpdpbusd`), one per block and token, then scaled in f32.
//! Weights with an offset (`value = d·(u - 2^s)`) or signed weights enter as magnitudes `|w|`
//! with the activations' signs flipped where `w < 0`; weights with a minimum
//! (`value = d·u + m`) add `m·Σq` from the activation block sums. The AVX-512 level handles two
//! blocks per 512-bit instruction. K-quants accumulate their sub-block scales in integers
//! (`vpmaddwd` / `vpdpwssd`) and convert to f32 once per 256 values.

use std::arch::x86_64::*;

use super::act::Act;
use super::scalar::k4_scales_mins;
use super::RowKernel;
use crate::cpu::Isa;
use crate::quant::DType;

/// The integer dot-product instructions of a level.
trait IntDot {
    /// Per i32 lane, the sum of four adjacent `u8 × i8` products.
    unsafe fn dot(u: __m256i, q: __m256i) -> __m256i;
    /// `acc` plus, per i32 lane, `Σ (u·q)` over four bytes weighted by the i16 lanes of `scale`
    /// (products summed in pairs, each pair multiplied by its i16 scale). Needs `u·q` pair sums
    /// to fit in i16, true for unsigned weights below 64.
    unsafe fn dot_scaled(acc: __m256i, u: __m256i, q: __m256i, scale: __m256i) -> __m256i;
}

struct Avx2;
struct Vnni;

impl IntDot for Avx2 {
    #[inline(always)]
    unsafe fn dot(u: __m256i, q: __m256i) -> __m256i {
        // Pair sums of u8·i8 stay within i16 for the weights used here: below 64, or
        // magnitudes up to 128 (2·128·127 < 2^15).
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, q), _mm256_set1_epi16(1))
    }
    #[inline(always)]
    unsafe fn dot_scaled(acc: __m256i, u: __m256i, q: __m256i, scale: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, q), scale))
    }
}

impl IntDot for Vnni {
    #[inline(always)]
    unsafe fn dot(u: __m256i, q: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, q)
    }
    #[inline(always)]
    unsafe fn dot_scaled(acc: __m256i, u: __m256i, q: __m256i, scale: __m256i) -> __m256i {
        _mm256_dpwssd_epi32(acc, _mm256_maddubs_epi16(u, q), scale)
    }
}

#[inline(always)]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
        std::ptr::read_unaligned(p as *const u16) as i32,
    )))
}

/// How far ahead of the bytes being decoded weights are prefetched. The hardware prefetcher
/// alone left GEMV at a fraction of the memory bandwidth on the target machine.
const PREFETCH_AHEAD: usize = 2048;

/// Prefetches the cache lines `PREFETCH_AHEAD` bytes after `[p, p + len)`.
#[inline(always)]
pub(super) unsafe fn prefetch(p: *const u8, len: usize) {
    let mut off = 0;
    while off < len {
        // Prefetching never faults, so running past the end of the matrix is harmless.
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD + off) as *const i8);
        off += 64;
    }
}

#[inline(always)]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[inline(always)]
pub(super) unsafe fn load256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// The 16 packed nibbles at `p` as 32 bytes: low nibbles first, then high nibbles (ggml's order).
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let b = _mm_loadu_si128(p as *const __m128i);
    let m = _mm_set1_epi8(0xF);
    _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m), _mm_and_si128(b, m))
}

/// Byte `i` is 0xFF where bit `i` of `bits` is set, else 0.
#[inline(always)]
unsafe fn bits_to_bytes(bits: u32) -> __m256i {
    let v = _mm256_set1_epi32(bits as i32);
    let byte_of_bit = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_cmpeq_epi8(
        _mm256_and_si256(_mm256_shuffle_epi8(v, byte_of_bit), bit),
        bit,
    )
}

/// Every i16 lane set to lane `i` (< 8) of `v`, whose two 128-bit halves are equal.
#[inline(always)]
unsafe fn broadcast_i16(v: __m256i, i: usize) -> __m256i {
    let (lo, hi) = (2 * i as i8, 2 * i as i8 + 1);
    _mm256_shuffle_epi8(
        v,
        _mm256_setr_epi8(
            lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi,
            lo, hi, lo, hi, lo, hi, lo, hi, lo, hi,
        ),
    )
}

/// A weight format of 32-value blocks.
pub(super) trait Block32 {
    const BYTES: usize;
    /// `decode` returns signed bytes (Q8_0) instead of unsigned ones.
    const SIGNED: bool;
    /// log2 of the offset subtracted from the unsigned bytes (0: none).
    const OFFSET_SHIFT: i32;
    /// Whether blocks have a minimum added to every value (Q4_1).
    const HAS_MIN: bool;
    /// Where the f16 minimum sits in a block (when `HAS_MIN`).
    const MIN_AT: usize = 0;
    /// The block at `p` as (bytes `u`, scale `d`, minimum `m`) with
    /// `value = d·(u - 2^OFFSET_SHIFT) + m`.
    unsafe fn decode(p: *const u8) -> (__m256i, f32, f32);
    /// The bytes of the blocks at `p` and `p + BYTES`, 32 each (scales: [`pair_f16`]).
    unsafe fn decode_pair(p: *const u8) -> __m512i;
}

/// The 16 packed nibbles at `p` and those at `q` as 64 bytes, in [`nibbles`] order.
#[inline(always)]
unsafe fn nibbles_pair(p: *const u8, q: *const u8) -> __m512i {
    let both = _mm512_castsi256_si512(_mm256_set_m128i(
        _mm_loadu_si128(q as *const __m128i),
        _mm_loadu_si128(p as *const __m128i),
    ));
    // 128-bit lanes [p, p, q, q], the second of each pair shifted to expose the high nibbles.
    let spread = _mm512_shuffle_i64x2::<0b01_01_00_00>(both, both);
    let shifted = _mm512_srlv_epi64(spread, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4));
    _mm512_and_si512(shifted, _mm512_set1_epi8(0xF))
}

/// The f16 at `p + at` in lanes 0-7 and the one at `p + stride + at` in lanes 8-15, as f32.
#[inline(always)]
unsafe fn pair_f16(p: *const u8, at: usize, stride: usize) -> __m512 {
    let h0 = std::ptr::read_unaligned(p.add(at) as *const u16) as u32;
    let h1 = std::ptr::read_unaligned(p.add(stride + at) as *const u16) as u32;
    let two = _mm_cvtph_ps(_mm_cvtsi32_si128((h0 | h1 << 16) as i32));
    _mm512_permutexvar_ps(pair_index(), _mm512_castps128_ps512(two))
}

/// Lane index vector selecting element 0 for lanes 0-7 and element 1 for lanes 8-15.
#[inline(always)]
unsafe fn pair_index() -> __m512i {
    _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
}

pub(super) struct Q4_0;
pub(super) struct Q4_1;
pub(super) struct Q5_0;
pub(super) struct Q5_1;
pub(super) struct Q8_0;

impl Block32 for Q4_0 {
    const BYTES: usize = 18;
    const SIGNED: bool = false;
    const OFFSET_SHIFT: i32 = 3;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> (__m256i, f32, f32) {
        (nibbles(p.add(2)), f16_at(p), 0.0)
    }
    #[inline(always)]
    unsafe fn decode_pair(p: *const u8) -> __m512i {
        nibbles_pair(p.add(2), p.add(Self::BYTES + 2))
    }
}

impl Block32 for Q4_1 {
    const BYTES: usize = 20;
    const SIGNED: bool = false;
    const OFFSET_SHIFT: i32 = 0;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> (__m256i, f32, f32) {
        (nibbles(p.add(4)), f16_at(p), f16_at(p.add(2)))
    }
    const MIN_AT: usize = 2;
    #[inline(always)]
    unsafe fn decode_pair(p: *const u8) -> __m512i {
        nibbles_pair(p.add(4), p.add(Self::BYTES + 4))
    }
}

impl Block32 for Q5_0 {
    const BYTES: usize = 22;
    const SIGNED: bool = false;
    const OFFSET_SHIFT: i32 = 4;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> (__m256i, f32, f32) {
        let high = _mm256_and_si256(
            bits_to_bytes(std::ptr::read_unaligned(p.add(2) as *const u32)),
            _mm256_set1_epi8(0x10),
        );
        (_mm256_or_si256(nibbles(p.add(6)), high), f16_at(p), 0.0)
    }
    #[inline(always)]
    unsafe fn decode_pair(p: *const u8) -> __m512i {
        let bits = |q: *const u8| std::ptr::read_unaligned(q.add(2) as *const u32) as u64;
        let high: __mmask64 = bits(p) | bits(p.add(Self::BYTES)) << 32;
        let low = nibbles_pair(p.add(6), p.add(Self::BYTES + 6));
        _mm512_mask_add_epi8(low, high, low, _mm512_set1_epi8(0x10))
    }
}

impl Block32 for Q5_1 {
    const BYTES: usize = 24;
    const SIGNED: bool = false;
    const OFFSET_SHIFT: i32 = 0;
    const HAS_MIN: bool = true;
    const MIN_AT: usize = 2;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> (__m256i, f32, f32) {
        let high = _mm256_and_si256(
            bits_to_bytes(std::ptr::read_unaligned(p.add(4) as *const u32)),
            _mm256_set1_epi8(0x10),
        );
        (
            _mm256_or_si256(nibbles(p.add(8)), high),
            f16_at(p),
            f16_at(p.add(2)),
        )
    }
    #[inline(always)]
    unsafe fn decode_pair(p: *const u8) -> __m512i {
        let bits = |q: *const u8| std::ptr::read_unaligned(q.add(4) as *const u32) as u64;
        let high: __mmask64 = bits(p) | bits(p.add(Self::BYTES)) << 32;
        let low = nibbles_pair(p.add(8), p.add(Self::BYTES + 8));
        _mm512_mask_add_epi8(low, high, low, _mm512_set1_epi8(0x10))
    }
}

impl Block32 for Q8_0 {
    const BYTES: usize = 34;
    const SIGNED: bool = true;
    const OFFSET_SHIFT: i32 = 0;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> (__m256i, f32, f32) {
        (load256(p.add(2)), f16_at(p), 0.0)
    }
    #[inline(always)]
    unsafe fn decode_pair(p: *const u8) -> __m512i {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(load256(p.add(2))),
            load256(p.add(Self::BYTES + 2)),
        )
    }
}

/// Dots of one row of 32-value blocks with `T` activation rows.
#[inline(always)]
unsafe fn q32_dot<I: IntDot, B: Block32, const T: usize>(
    row: *const u8,
    blocks: usize,
    acts: &[Act; T],
) -> [f32; T] {
    // Even and odd blocks accumulate separately so consecutive FMAs do not wait on each other.
    let mut even = [_mm256_setzero_ps(); T];
    let mut odd = [_mm256_setzero_ps(); T];
    let mut b = 0;
    while b + 2 <= blocks {
        q32_block::<I, B, T>(row, b, acts, &mut even);
        q32_block::<I, B, T>(row, b + 1, acts, &mut odd);
        b += 2;
    }
    if b < blocks {
        q32_block::<I, B, T>(row, b, acts, &mut even);
    }
    std::array::from_fn(|t| hsum_ps(_mm256_add_ps(even[t], odd[t])))
}

/// [`q32_dot`] for VNNI with 512-bit vectors: two blocks per instruction.
#[inline(always)]
unsafe fn q32_dot_wide<B: Block32, const T: usize>(
    row: *const u8,
    blocks: usize,
    acts: &[Act; T],
) -> [f32; T] {
    let mut even = [_mm512_setzero_ps(); T];
    let mut odd = [_mm512_setzero_ps(); T];
    let mut b = 0;
    while b + 4 <= blocks {
        q32_pair::<B, T>(row, b, acts, &mut even);
        q32_pair::<B, T>(row, b + 2, acts, &mut odd);
        b += 4;
    }
    if b + 2 <= blocks {
        q32_pair::<B, T>(row, b, acts, &mut even);
        b += 2;
    }
    let mut rest = [_mm256_setzero_ps(); T];
    if b < blocks {
        q32_block::<Vnni, B, T>(row, b, acts, &mut rest);
    }
    std::array::from_fn(|t| _mm512_reduce_add_ps(_mm512_add_ps(even[t], odd[t])) + hsum_ps(rest[t]))
}

/// Adds blocks `b` and `b + 1` of `row` times the activations to `acc` (lanes 0-7: block `b`).
#[inline(always)]
unsafe fn q32_pair<B: Block32, const T: usize>(
    row: *const u8,
    b: usize,
    acts: &[Act; T],
    acc: &mut [__m512; T],
) {
    let p = row.add(b * B::BYTES);
    prefetch(p, 2 * B::BYTES);
    let w = B::decode_pair(p);
    let d = pair_f16(p, 0, B::BYTES);
    if B::HAS_MIN {
        // value = d·u + m: the minimum multiplies the activation block sums (lanes 0 and 8).
        let m = pair_f16(p, B::MIN_AT, B::BYTES);
        for t in 0..T {
            let a = &acts[t];
            let q = _mm512_loadu_si512(a.qs.add(b * 32) as *const _);
            let sumi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, q);
            let sums = _mm512_castsi128_si512(_mm_loadl_epi64(a.sums.add(b) as *const __m128i));
            let block_sums = _mm512_maskz_permutexvar_epi32(0x0101, pair_index(), sums);
            let sumf = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(block_sums),
                m,
                _mm512_mul_ps(_mm512_cvtepi32_ps(sumi), d),
            );
            acc[t] = _mm512_fmadd_ps(sumf, pair_dx(a, b), acc[t]);
        }
    } else {
        // Signed weights as |w| times q negated where w < 0 (vpdpbusd wants unsigned × signed);
        // the sign mask and magnitudes are shared by all tokens.
        let signed = if B::SIGNED {
            w
        } else {
            _mm512_sub_epi8(w, _mm512_set1_epi8(1 << B::OFFSET_SHIFT))
        };
        let (magnitude, negative) = (_mm512_abs_epi8(signed), _mm512_movepi8_mask(signed));
        for t in 0..T {
            let a = &acts[t];
            let q = _mm512_loadu_si512(a.qs.add(b * 32) as *const _);
            let q = _mm512_mask_sub_epi8(q, negative, _mm512_setzero_si512(), q);
            let sumi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), magnitude, q);
            acc[t] = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(sumi),
                _mm512_mul_ps(d, pair_dx(a, b)),
                acc[t],
            );
        }
    }
}

/// The activation scales of blocks `b` (lanes 0-7) and `b + 1` (lanes 8-15).
#[inline(always)]
unsafe fn pair_dx(a: &Act, b: usize) -> __m512 {
    let two = _mm_castsi128_ps(_mm_loadl_epi64(a.d.add(b) as *const __m128i));
    _mm512_permutexvar_ps(pair_index(), _mm512_castps128_ps512(two))
}

/// Adds block `b` of `row` times the activations to `acc`.
#[inline(always)]
unsafe fn q32_block<I: IntDot, B: Block32, const T: usize>(
    row: *const u8,
    b: usize,
    acts: &[Act; T],
    acc: &mut [__m256; T],
) {
    prefetch(row.add(b * B::BYTES), B::BYTES);
    let (w, d, m) = B::decode(row.add(b * B::BYTES));
    let dv = _mm256_set1_ps(d);
    if B::HAS_MIN {
        // value = d·u + m: the minimum multiplies the activation block sum Σq.
        let mv = _mm256_set1_ps(m);
        for t in 0..T {
            let a = &acts[t];
            let sumi = I::dot(w, load256(a.qs.add(b * 32) as *const u8));
            // Σq in lane 0, the other lanes zero, so the lanes still add up to the block's dot.
            let block_sum = _mm256_zextsi128_si256(_mm_cvtsi32_si128(*a.sums.add(b)));
            let sumf = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(block_sum),
                mv,
                _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), dv),
            );
            acc[t] = _mm256_fmadd_ps(sumf, _mm256_broadcast_ss(&*a.d.add(b)), acc[t]);
        }
    } else {
        // Signed weights as |w| times q with w's sign (the byte dots want unsigned × signed;
        // |w| ≤ 128 keeps vpmaddubsw's pair sums within i16).
        let signed = if B::SIGNED {
            w
        } else {
            _mm256_sub_epi8(w, _mm256_set1_epi8(1 << B::OFFSET_SHIFT))
        };
        let magnitude = _mm256_sign_epi8(signed, signed);
        for t in 0..T {
            let a = &acts[t];
            let q = _mm256_sign_epi8(load256(a.qs.add(b * 32) as *const u8), signed);
            let scale = _mm256_mul_ps(dv, _mm256_broadcast_ss(&*a.d.add(b)));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(I::dot(magnitude, q)), scale, acc[t]);
        }
    }
}

/// Dots of one Q4_K row (or Q5_K with `FIVE`: a fifth bit per value from `qh`) with `T`
/// activation rows (Q8 in 256-value blocks).
#[inline(always)]
unsafe fn qk4_dot<I: IntDot, const FIVE: bool, const T: usize>(
    row: *const u8,
    blocks: usize,
    acts: &[Act; T],
) -> [f32; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    let m4 = _mm256_set1_epi8(0xF);
    let (bytes, qs_at) = if FIVE { (176, 48) } else { (144, 16) };
    for b in 0..blocks {
        let blk = row.add(b * bytes);
        prefetch(blk, bytes);
        let (d, dmin) = (f16_at(blk), f16_at(blk.add(2)));
        let sm = k4_scales_mins(&*(blk.add(4) as *const [u8; 12]));
        let sm = _mm_loadu_si128(sm.as_ptr() as *const __m128i);
        // Each minimum twice: it applies to the two 16-value activation sums of its sub-block.
        let mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(
            sm,
            _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15),
        ));
        // The eight scales as i16, in both 128-bit lanes, for per-sub-block broadcasts below.
        let scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
        let mut sumi = [_mm256_setzero_si256(); T];
        // Q5_K: bit j of qh byte l is the fifth bit of value l of sub-block j; shifted down by
        // two per pair of sub-blocks (bits crossing from the next byte never reach bits 0-1).
        let mut high = if FIVE {
            load256(blk.add(16))
        } else {
            _mm256_setzero_si256()
        };
        let bit4 = _mm256_set1_epi8(0x10);
        for j in 0..4 {
            let v = load256(blk.add(qs_at + 32 * j));
            let mut lo = _mm256_and_si256(v, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            if FIVE {
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(high, 4), bit4));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(high, 3), bit4));
                high = _mm256_srli_epi16(high, 2);
            }
            let (s_lo, s_hi) = (
                broadcast_i16(scales, 2 * j),
                broadcast_i16(scales, 2 * j + 1),
            );
            for t in 0..T {
                let q = acts[t].qs.add(b * 256 + 64 * j) as *const u8;
                sumi[t] = I::dot_scaled(sumi[t], lo, load256(q), s_lo);
                sumi[t] = I::dot_scaled(sumi[t], hi, load256(q.add(32)), s_hi);
            }
        }
        for t in 0..T {
            let dx = *acts[t].d.add(b);
            let min_sums = _mm256_madd_epi16(load256(acts[t].bsums.add(b * 16) as *const u8), mins);
            let v = _mm256_sub_ps(
                _mm256_mul_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_set1_ps(d)),
                _mm256_mul_ps(_mm256_cvtepi32_ps(min_sums), _mm256_set1_ps(dmin)),
            );
            acc[t] = _mm256_fmadd_ps(v, _mm256_set1_ps(dx), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum_ps(acc[t]))
}

/// Dots of one Q6_K row with `T` activation rows (Q8 in 256-value blocks).
#[inline(always)]
unsafe fn q6k_dot<I: IntDot, const T: usize>(
    row: *const u8,
    blocks: usize,
    acts: &[Act; T],
) -> [f32; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    let (m4, m3) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(0x30));
    for b in 0..blocks {
        let blk = row.add(b * 210);
        prefetch(blk, 210);
        let (ql, qh, sc) = (blk, blk.add(128), blk.add(192) as *const i8);
        let d = f16_at(blk.add(208));
        let scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(sc as *const __m128i));
        let mut sumi = [_mm256_setzero_si256(); T];
        for half in 0..2 {
            let (l0, l1) = (load256(ql.add(64 * half)), load256(ql.add(64 * half + 32)));
            let h = load256(qh.add(32 * half));
            // Four runs of 32 values: low/high nibbles of the two ql runs, each with 2 bits of h.
            let quads = [
                _mm256_or_si256(
                    _mm256_and_si256(l0, m4),
                    _mm256_and_si256(_mm256_slli_epi16(h, 4), m3),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(l1, m4),
                    _mm256_and_si256(_mm256_slli_epi16(h, 2), m3),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                    _mm256_and_si256(h, m3),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                    _mm256_and_si256(_mm256_srli_epi16(h, 2), m3),
                ),
            ];
            for (k, &u) in quads.iter().enumerate() {
                let s = 8 * half + 2 * k;
                let scale = _mm256_set_m128i(
                    _mm_set1_epi16(*sc.add(s + 1) as i16),
                    _mm_set1_epi16(*sc.add(s) as i16),
                );
                for t in 0..T {
                    let q = acts[t].qs.add(b * 256 + 128 * half + 32 * k) as *const u8;
                    sumi[t] = I::dot_scaled(sumi[t], u, load256(q), scale);
                }
            }
        }
        for t in 0..T {
            // The stored values are offset by 32: subtract 32·Σ scale·(activation sum) exactly.
            let offsets =
                _mm256_madd_epi16(load256(acts[t].bsums.add(b * 16) as *const u8), scales16);
            let s = _mm256_sub_epi32(sumi[t], _mm256_slli_epi32(offsets, 5));
            acc[t] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(s),
                _mm256_set1_ps(d * *acts[t].d.add(b)),
                acc[t],
            );
        }
    }
    std::array::from_fn(|t| hsum_ps(acc[t]))
}

/// An f32 vector of one width.
trait FVec: Copy {
    const LANES: usize;
    unsafe fn zero() -> Self;
    unsafe fn load_x(p: *const f32) -> Self;
    unsafe fn load_w<W: FloatWeight>(p: *const u8) -> Self;
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
    unsafe fn sum(a: Self, b: Self) -> f32;
}

/// A float weight type, converted to f32 on load.
trait FloatWeight {
    const BYTES: usize;
    unsafe fn load8(p: *const u8) -> __m256;
    unsafe fn load16(p: *const u8) -> __m512;
    unsafe fn one(p: *const u8) -> f32;
}

struct F32;
struct F16;
struct BF16;

impl FloatWeight for F32 {
    const BYTES: usize = 4;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        _mm256_loadu_ps(p as *const f32)
    }
    #[inline(always)]
    unsafe fn load16(p: *const u8) -> __m512 {
        _mm512_loadu_ps(p as *const f32)
    }
    #[inline(always)]
    unsafe fn one(p: *const u8) -> f32 {
        std::ptr::read_unaligned(p as *const f32)
    }
}

impl FloatWeight for F16 {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    #[inline(always)]
    unsafe fn load16(p: *const u8) -> __m512 {
        _mm512_cvtph_ps(load256(p))
    }
    #[inline(always)]
    unsafe fn one(p: *const u8) -> f32 {
        f16_at(p)
    }
}

impl FloatWeight for BF16 {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)),
            16,
        ))
    }
    #[inline(always)]
    unsafe fn load16(p: *const u8) -> __m512 {
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(load256(p)), 16))
    }
    #[inline(always)]
    unsafe fn one(p: *const u8) -> f32 {
        f32::from_bits((std::ptr::read_unaligned(p as *const u16) as u32) << 16)
    }
}

impl FVec for __m256 {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn load_x(p: *const f32) -> Self {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_w<W: FloatWeight>(p: *const u8) -> Self {
        W::load8(p)
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn sum(a: Self, b: Self) -> f32 {
        hsum_ps(_mm256_add_ps(a, b))
    }
}

impl FVec for __m512 {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> Self {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn load_x(p: *const f32) -> Self {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_w<W: FloatWeight>(p: *const u8) -> Self {
        W::load16(p)
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn sum(a: Self, b: Self) -> f32 {
        _mm512_reduce_add_ps(_mm512_add_ps(a, b))
    }
}

/// f32 dots of one float weight row with `T` activation rows.
#[inline(always)]
unsafe fn float_dot<V: FVec, W: FloatWeight, const T: usize>(
    row: *const u8,
    cols: usize,
    acts: &[Act; T],
) -> [f32; T] {
    let mut acc = [[V::zero(); T]; 2];
    let lanes = V::LANES;
    let mut i = 0;
    while i + 2 * lanes <= cols {
        prefetch(row.add(i * W::BYTES), 2 * lanes * W::BYTES);
        for (u, acc) in acc.iter_mut().enumerate() {
            let w = V::load_w::<W>(row.add((i + u * lanes) * W::BYTES));
            for t in 0..T {
                acc[t] = V::fmadd(w, V::load_x(acts[t].x.add(i + u * lanes)), acc[t]);
            }
        }
        i += 2 * lanes;
    }
    if i + lanes <= cols {
        let w = V::load_w::<W>(row.add(i * W::BYTES));
        for t in 0..T {
            acc[0][t] = V::fmadd(w, V::load_x(acts[t].x.add(i)), acc[0][t]);
        }
        i += lanes;
    }
    std::array::from_fn(|t| {
        let tail: f32 = (i..cols)
            .map(|j| W::one(row.add(j * W::BYTES)) * *acts[t].x.add(j))
            .sum();
        V::sum(acc[0][t], acc[1][t]) + tail
    })
}

/// Runs `$dot::<.., T>` for the `T = acts.len()` tokens of a tile, storing into `out`.
macro_rules! per_tile {
    ($dot:ident::<$($g:tt),*>($row:expr, $len:expr, $acts:expr, $out:expr)) => {
        match $acts.len() {
            1 => $out.copy_from_slice(&$dot::<$($g,)* 1>($row, $len, $acts.try_into().unwrap())),
            2 => $out.copy_from_slice(&$dot::<$($g,)* 2>($row, $len, $acts.try_into().unwrap())),
            3 => $out.copy_from_slice(&$dot::<$($g,)* 3>($row, $len, $acts.try_into().unwrap())),
            4 => $out.copy_from_slice(&$dot::<$($g,)* 4>($row, $len, $acts.try_into().unwrap())),
            n => unreachable!("tiles have 1 to 4 rows, not {n}"),
        }
    };
}

// Entry points (see `RowKernel` for their safety contract).

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q32_avx2<B: Block32>(row: *const u8, cols: usize, acts: &[Act], out: &mut [f32]) {
    per_tile!(q32_dot::<Avx2, B>(row, cols / 32, acts, out))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q32_avx512<B: Block32>(row: *const u8, cols: usize, acts: &[Act], out: &mut [f32]) {
    per_tile!(q32_dot_wide::<B>(row, cols / 32, acts, out))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_avx2(row: *const u8, cols: usize, acts: &[Act], out: &mut [f32]) {
    per_tile!(qk4_dot::<Avx2, false>(row, cols / 256, acts, out))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5k_avx2(row: *const u8, cols: usize, acts: &[Act], out: &mut [f32]) {
    per_tile!(qk4_dot::<Avx2, true>(row, cols / 256, acts, out))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q5k_avx512(row: *const u8, cols: usize, acts: &[Act], out: &mut [f32]) {
    per_tile!(qk4_dot::<Vnni, true>(row, cols / 256, acts, out))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4k_avx512(row: *const u8, cols: usize, acts: &[Act], out: &mut [f32]) {
    per_tile!(qk4_dot::<Vnni, false>(row, cols / 256, acts, out))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_avx2(row: *const u8, cols: usize, acts: &[Act], out: &mut [f32]) {
    per_tile!(q6k_dot::<Avx2>(row, cols / 256, acts, out))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q6k_avx512(row: *const u8, cols: usize, acts: &[Act], out: &mut [f32]) {
    per_tile!(q6k_dot::<Vnni>(row, cols / 256, acts, out))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_avx2<W: FloatWeight>(row: *const u8, cols: usize, acts: &[Act], out: &mut [f32]) {
    per_tile!(float_dot::<__m256, W>(row, cols, acts, out))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn float_avx512<W: FloatWeight>(row: *const u8, cols: usize, acts: &[Act], out: &mut [f32]) {
    per_tile!(float_dot::<__m512, W>(row, cols, acts, out))
}

/// The kernel for weights of `dtype` at level `isa` (Avx2 or Avx512), if there is a dedicated one.
pub(super) fn kernel(isa: Isa, dtype: DType) -> Option<RowKernel> {
    let wide = isa >= Isa::Avx512;
    Some(match (dtype, wide) {
        (DType::F32, false) => float_avx2::<F32>,
        (DType::F32, true) => float_avx512::<F32>,
        (DType::F16, false) => float_avx2::<F16>,
        (DType::F16, true) => float_avx512::<F16>,
        (DType::BF16, false) => float_avx2::<BF16>,
        (DType::BF16, true) => float_avx512::<BF16>,
        (DType::Q4_0, false) => q32_avx2::<Q4_0>,
        (DType::Q4_0, true) => q32_avx512::<Q4_0>,
        (DType::Q4_1, false) => q32_avx2::<Q4_1>,
        (DType::Q4_1, true) => q32_avx512::<Q4_1>,
        (DType::Q5_0, false) => q32_avx2::<Q5_0>,
        (DType::Q5_0, true) => q32_avx512::<Q5_0>,
        (DType::Q5_1, false) => q32_avx2::<Q5_1>,
        (DType::Q5_1, true) => q32_avx512::<Q5_1>,
        (DType::Q8_0, false) => q32_avx2::<Q8_0>,
        (DType::Q8_0, true) => q32_avx512::<Q8_0>,
        (DType::Q4_K, false) => q4k_avx2,
        (DType::Q4_K, true) => q4k_avx512,
        (DType::Q5_K, false) => q5k_avx2,
        (DType::Q5_K, true) => q5k_avx512,
        (DType::Q6_K, false) => q6k_avx2,
        (DType::Q6_K, true) => q6k_avx512,
        _ => return None,
    })
}
