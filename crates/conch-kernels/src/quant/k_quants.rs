//! The 256-value "K" super-block types: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K.
//!
//! Within a super-block, 2-bit fields are laid out in 32-byte (or 64-byte) strips: value
//! `128 * h + 32 * s + l` is bits `2s..2s+2` of byte `32 * h + l`. Each helper below names the
//! layout it decodes; the scale arithmetic follows gguf-py's float32 order.

use super::f16_at;

const QK_K: usize = 256;

/// The 2-bit field of value `i` in a strip layout over `qs` (32-byte strips, 4 fields per byte).
#[inline]
fn two_bits(qs: &[u8], i: usize) -> u8 {
    let (h, s, l) = (i / 128, (i / 32) % 4, i % 32);
    (qs[32 * h + l] >> (2 * s)) & 3
}

/// The 4-bit field of value `i` when 32-byte strips hold values `64c + l` (low) and `64c + 32 + l` (high).
#[inline]
fn nibble_in_32_strips(qs: &[u8], i: usize) -> u8 {
    let (c, s, l) = (i / 64, (i / 32) % 2, i % 32);
    (qs[32 * c + l] >> (4 * s)) & 0x0F
}

/// Bit `i / 32` of byte `i % 32`: the high-bit mask layout of Q3_K and Q5_K.
#[inline]
fn mask_bit(mask: &[u8], i: usize) -> u8 {
    (mask[i % 32] >> (i / 32)) & 1
}

/// The eight 6-bit (scale, min) pairs packed in 12 bytes, as used by Q4_K and Q5_K.
fn scales_and_mins(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

// Block: 16 scale bytes (low nibble scale, high nibble min), 64 bytes of 2-bit quants, f16 d, f16 dmin.
pub(super) fn dequantize_q2_k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let (d, dmin) = (f16_at(&b[80..]), f16_at(&b[82..]));
    for (i, v) in y.iter_mut().enumerate().take(QK_K) {
        let sc = scales[i / 16];
        let dl = d * (sc & 0x0F) as f32;
        let ml = dmin * (sc >> 4) as f32;
        *v = dl * two_bits(qs, i) as f32 - ml;
    }
}

// Block: 32-byte high-bit mask, 64 bytes of 2-bit quants, 12 bytes of sixteen 6-bit scales, f16 d.
// A clear mask bit subtracts 4 from the quant.
pub(super) fn dequantize_q3_k(b: &[u8], y: &mut [f32]) {
    let (hmask, qs, sc) = (&b[..32], &b[32..96], &b[96..108]);
    let d = f16_at(&b[108..]);
    let scales: [f32; 16] = std::array::from_fn(|j| {
        let low = (sc[j % 8] >> (4 * (j / 8))) & 0x0F;
        let high = (sc[8 + j % 4] >> (2 * (j / 4))) & 0x03;
        ((low | (high << 4)) as i8 - 32) as f32
    });
    for (i, v) in y.iter_mut().enumerate().take(QK_K) {
        let q = two_bits(qs, i) as i8 - (((mask_bit(hmask, i) ^ 1) << 2) as i8);
        *v = (d * scales[i / 16]) * q as f32;
    }
}

// Block: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles.
pub(super) fn dequantize_q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b), f16_at(&b[2..]));
    let (sc, mn) = scales_and_mins(&b[4..16]);
    let qs = &b[16..144];
    for (i, v) in y.iter_mut().enumerate().take(QK_K) {
        let g = i / 32;
        *v = (d * sc[g] as f32) * nibble_in_32_strips(qs, i) as f32 - dmin * mn[g] as f32;
    }
}

// Block: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 32-byte high-bit mask, 128 bytes of nibbles.
pub(super) fn dequantize_q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b), f16_at(&b[2..]));
    let (sc, mn) = scales_and_mins(&b[4..16]);
    let (qh, qs) = (&b[16..48], &b[48..176]);
    for (i, v) in y.iter_mut().enumerate().take(QK_K) {
        let g = i / 32;
        let q = nibble_in_32_strips(qs, i) | (mask_bit(qh, i) << 4);
        *v = (d * sc[g] as f32) * q as f32 - dmin * mn[g] as f32;
    }
}

// Block: 128 bytes of low nibbles (64-byte strips), 64 bytes of 2-bit high parts, 16 int8 scales, f16 d.
pub(super) fn dequantize_q6_k(b: &[u8], y: &mut [f32]) {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16_at(&b[208..]);
    for (i, v) in y.iter_mut().enumerate().take(QK_K) {
        let (h, s, l) = (i / 128, (i / 64) % 2, i % 64);
        let low = (ql[64 * h + l] >> (4 * s)) & 0x0F;
        let q = (low | (two_bits(qh, i) << 4)) as i8 - 32;
        *v = (d * scales[i / 16] as i8 as f32) * q as f32;
    }
}

// Block: f32 d, 256 int8 quants, 16 int16 partial sums (only used by dot products).
pub(super) fn dequantize_q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (v, &q) in y.iter_mut().zip(&b[4..4 + QK_K]) {
        *v = d * q as i8 as f32;
    }
}
