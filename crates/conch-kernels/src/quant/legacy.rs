//! The 32-value block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.
//!
//! Nibble order (all 4- and 5-bit types): byte `j` holds value `j` in its low nibble and value
//! `j + 16` in its high nibble. The fifth bit of value `j` is bit `j` of the little-endian `qh` word.

use super::{f16_at, f16_bytes};

const QK: usize = 32;

/// The 4-bit low part of value `i` (0..32) from the 16 packed bytes `qs`.
#[inline]
fn nibble(qs: &[u8], i: usize) -> u8 {
    (qs[i % 16] >> (4 * (i / 16))) & 0x0F
}

/// The 5-bit value `i` from packed nibbles `qs` and the high-bit word `qh`.
#[inline]
fn five_bits(qs: &[u8], qh: u32, i: usize) -> u8 {
    nibble(qs, i) | ((((qh >> i) & 1) as u8) << 4)
}

fn qh_word(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

// Block: f16 d, 16 bytes of nibbles. x = d * (q - 8).
pub(super) fn dequantize_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b);
    for (i, v) in y.iter_mut().enumerate() {
        *v = d * (nibble(&b[2..], i) as i8 - 8) as f32;
    }
}

// Block: f16 d, f16 m, 16 bytes of nibbles. x = d * q + m.
pub(super) fn dequantize_q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b), f16_at(&b[2..]));
    for (i, v) in y.iter_mut().enumerate() {
        *v = d * nibble(&b[4..], i) as f32 + m;
    }
}

// Block: f16 d, u32 qh, 16 bytes of nibbles. x = d * (q - 16).
pub(super) fn dequantize_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b);
    let qh = qh_word(&b[2..]);
    for (i, v) in y.iter_mut().enumerate() {
        *v = d * (five_bits(&b[6..], qh, i) as i8 - 16) as f32;
    }
}

// Block: f16 d, f16 m, u32 qh, 16 bytes of nibbles. x = d * q + m.
pub(super) fn dequantize_q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b), f16_at(&b[2..]));
    let qh = qh_word(&b[4..]);
    for (i, v) in y.iter_mut().enumerate() {
        *v = d * five_bits(&b[8..], qh, i) as f32 + m;
    }
}

// Block: f16 d, 32 int8. x = q * d.
pub(super) fn dequantize_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b);
    for (v, &q) in y.iter_mut().zip(&b[2..]) {
        *v = q as i8 as f32 * d;
    }
}

// Block: f16 d, f16 s (sum of the block, only used by dot products), 32 int8. x = q * d.
pub(super) fn dequantize_q8_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b);
    for (v, &q) in y.iter_mut().zip(&b[4..]) {
        *v = q as i8 as f32 * d;
    }
}

/// The element of largest magnitude (the first one on ties), keeping its sign.
fn signed_abs_max(x: &[f32]) -> f32 {
    let mut best = x[0];
    for &v in &x[1..] {
        if v.abs() > best.abs() {
            best = v;
        }
    }
    best
}

fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter()
        .fold((x[0], x[0]), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// `1 / d`, or 0 for a zero scale (so an all-zero block quantizes to the zero point).
fn inverse(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

/// Truncates toward zero and saturates into `0..=max` as numpy's `trunc → astype(uint8) → clip` does
/// for the in-range values quantization produces.
fn to_level(v: f32, max: u8) -> u8 {
    (v.trunc() as u8).min(max)
}

fn pack_nibbles(q: &[u8; QK], qs: &mut [u8]) {
    for j in 0..16 {
        qs[j] = (q[j] & 0x0F) | (q[j + 16] << 4);
    }
}

fn pack_high_bits(q: &[u8; QK]) -> [u8; 4] {
    let word = q
        .iter()
        .enumerate()
        .fold(0u32, |w, (i, &v)| w | (((v >> 4) as u32 & 1) << i));
    word.to_le_bytes()
}

pub(super) fn quantize_q4_0(x: &[f32], b: &mut [u8]) {
    let d = signed_abs_max(x) / -8.0;
    let id = inverse(d);
    let q: [u8; QK] = std::array::from_fn(|i| to_level(x[i] * id + 8.5, 15));
    b[..2].copy_from_slice(&f16_bytes(d));
    pack_nibbles(&q, &mut b[2..]);
}

pub(super) fn quantize_q4_1(x: &[f32], b: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = inverse(d);
    let q: [u8; QK] = std::array::from_fn(|i| to_level((x[i] - min) * id + 0.5, 15));
    b[..2].copy_from_slice(&f16_bytes(d));
    b[2..4].copy_from_slice(&f16_bytes(min));
    pack_nibbles(&q, &mut b[4..]);
}

pub(super) fn quantize_q5_0(x: &[f32], b: &mut [u8]) {
    let d = signed_abs_max(x) / -16.0;
    let id = inverse(d);
    let q: [u8; QK] = std::array::from_fn(|i| to_level(x[i] * id + 16.5, 31));
    b[..2].copy_from_slice(&f16_bytes(d));
    b[2..6].copy_from_slice(&pack_high_bits(&q));
    pack_nibbles(&q, &mut b[6..]);
}

pub(super) fn quantize_q5_1(x: &[f32], b: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = inverse(d);
    let q: [u8; QK] = std::array::from_fn(|i| to_level((x[i] - min) * id + 0.5, 31));
    b[..2].copy_from_slice(&f16_bytes(d));
    b[2..4].copy_from_slice(&f16_bytes(min));
    b[4..8].copy_from_slice(&pack_high_bits(&q));
    pack_nibbles(&q, &mut b[8..]);
}

/// Symmetric 8-bit quantization of one block into `qs`; returns the scale `d = max|x| / 127`.
fn quantize_int8(x: &[f32], qs: &mut [u8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    for (o, &v) in qs.iter_mut().zip(x) {
        // f32::round rounds half away from zero, like ggml's roundf and gguf-py's np_roundf.
        *o = (v * id).round() as i8 as u8;
    }
    d
}

pub(super) fn quantize_q8_0(x: &[f32], b: &mut [u8]) {
    let d = quantize_int8(x, &mut b[2..]);
    b[..2].copy_from_slice(&f16_bytes(d));
}

/// Like Q8_0, plus `s = d * sum(q)` (llama.cpp's `quantize_row_q8_1_ref`).
pub(super) fn quantize_q8_1(x: &[f32], b: &mut [u8]) {
    let d = quantize_int8(x, &mut b[4..]);
    let sum: i32 = b[4..].iter().map(|&q| q as i8 as i32).sum();
    b[..2].copy_from_slice(&f16_bytes(d));
    b[2..4].copy_from_slice(&f16_bytes(sum as f32 * d));
}
