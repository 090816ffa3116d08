//! Portable kernels: the reference the SIMD kernels are tested against.
//!
//! For quantized weights they compute exactly what the SIMD kernels compute — an integer dot
//! product of each weight (sub-)block with the 8-bit activations, scaled in f32 — so the two
//! differ only by the order of f32 additions. Float weights are dotted in f32.

use super::act::Act;
use super::RowKernel;
use crate::quant::DType;

fn f16(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Safe views of the activation row `a` for `cols` values.
struct ActRow<'a> {
    qs: &'a [i8],
    d: &'a [f32],
    sums: &'a [i32],
    bsums: &'a [i16],
}

/// # Safety
/// `a` must point into activations quantized for `cols` values in blocks of `block`.
unsafe fn act_row<'a>(a: &Act, cols: usize, block: usize) -> ActRow<'a> {
    unsafe fn slice<'a, T>(p: *const T, len: usize) -> &'a [T] {
        if p.is_null() {
            &[]
        } else {
            std::slice::from_raw_parts(p, len)
        }
    }
    ActRow {
        qs: slice(a.qs, cols),
        d: slice(a.d, cols / block),
        sums: slice(a.sums, cols / block),
        bsums: slice(a.bsums, cols / 16),
    }
}

fn dot_q4_0(w: &[u8], a: &ActRow) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(18).enumerate() {
        let q = &a.qs[b * 32..b * 32 + 32];
        let sumi: i32 = (0..16)
            .map(|j| {
                ((blk[2 + j] & 0xF) as i32 - 8) * q[j] as i32
                    + ((blk[2 + j] >> 4) as i32 - 8) * q[j + 16] as i32
            })
            .sum();
        acc += f16(blk, 0) * a.d[b] * sumi as f32;
    }
    acc
}

fn dot_q4_1(w: &[u8], a: &ActRow) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(20).enumerate() {
        let q = &a.qs[b * 32..b * 32 + 32];
        let sumi: i32 = (0..16)
            .map(|j| {
                (blk[4 + j] & 0xF) as i32 * q[j] as i32
                    + (blk[4 + j] >> 4) as i32 * q[j + 16] as i32
            })
            .sum();
        acc += a.d[b] * (f16(blk, 0) * sumi as f32 + f16(blk, 2) * a.sums[b] as f32);
    }
    acc
}

/// Q5_0 and Q5_1 values: a nibble of `qs` plus bit 4 from `qh` (bit `j` for value `j`).
fn q5_values(qh: u32, qs: &[u8]) -> impl Iterator<Item = (i32, i32)> + '_ {
    (0..16).map(move |j| {
        let lo = (qs[j] & 0xF) as i32 | (((qh >> j) & 1) << 4) as i32;
        let hi = (qs[j] >> 4) as i32 | (((qh >> (j + 16)) & 1) << 4) as i32;
        (lo, hi)
    })
}

fn dot_q5_0(w: &[u8], a: &ActRow) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(22).enumerate() {
        let q = &a.qs[b * 32..b * 32 + 32];
        let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
        let sumi: i32 = q5_values(qh, &blk[6..])
            .enumerate()
            .map(|(j, (lo, hi))| (lo - 16) * q[j] as i32 + (hi - 16) * q[j + 16] as i32)
            .sum();
        acc += f16(blk, 0) * a.d[b] * sumi as f32;
    }
    acc
}

fn dot_q5_1(w: &[u8], a: &ActRow) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(24).enumerate() {
        let q = &a.qs[b * 32..b * 32 + 32];
        let qh = u32::from_le_bytes([blk[4], blk[5], blk[6], blk[7]]);
        let sumi: i32 = q5_values(qh, &blk[8..])
            .enumerate()
            .map(|(j, (lo, hi))| lo * q[j] as i32 + hi * q[j + 16] as i32)
            .sum();
        acc += a.d[b] * (f16(blk, 0) * sumi as f32 + f16(blk, 2) * a.sums[b] as f32);
    }
    acc
}

fn dot_q8_0(w: &[u8], a: &ActRow) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(34).enumerate() {
        let q = &a.qs[b * 32..b * 32 + 32];
        let sumi: i32 = blk[2..]
            .iter()
            .zip(q)
            .map(|(&w, &q)| w as i8 as i32 * q as i32)
            .sum();
        acc += f16(blk, 0) * a.d[b] * sumi as f32;
    }
    acc
}

/// The 6-bit scales and minimums of the eight 32-value sub-blocks of a Q4_K (or Q5_K) block,
/// packed in 12 bytes as ggml's `get_scale_min_k4` reads them: bytes 0..8 of the result are the
/// scales, 8..16 the minimums. (Sub-blocks 0-3 keep theirs in the low 6 bits of bytes 0-7;
/// sub-blocks 4-7 combine a nibble of bytes 8-11 with the top 2 bits of bytes 0-7.)
#[inline(always)]
pub(super) fn k4_scales_mins(s: &[u8; 12]) -> [u8; 16] {
    let word = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (w0, w1, w2) = (word(0), word(1), word(2));
    let (low6, low4, top2) = (0x3f3f_3f3f, 0x0f0f_0f0f, 0x0303_0303);
    let scales_0_3 = w0 & low6;
    let scales_4_7 = (w2 & low4) | (((w0 >> 6) & top2) << 4);
    let mins_0_3 = w1 & low6;
    let mins_4_7 = ((w2 >> 4) & low4) | (((w1 >> 6) & top2) << 4);
    let mut out = [0u8; 16];
    for (i, w) in [scales_0_3, scales_4_7, mins_0_3, mins_4_7]
        .into_iter()
        .enumerate()
    {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Q4_K, or Q5_K when `qh` holds the fifth bit of every value (bit `j` of byte `l` for value
/// `l` of sub-block `j`).
fn dot_qk4(w: &[u8], a: &ActRow, five: bool) -> f32 {
    let (bytes, qs_at) = if five { (176, 48) } else { (144, 16) };
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(bytes).enumerate() {
        let sm = k4_scales_mins(blk[4..16].try_into().unwrap());
        let (sc, m) = (&sm[..8], &sm[8..]);
        let (qh, qs) = (&blk[16..48], &blk[qs_at..]);
        let q = &a.qs[b * 256..b * 256 + 256];
        let mut sumi = 0i32;
        let mut summ = 0i32;
        for j in 0..8 {
            // Sub-block j: the low nibbles (even j) or high nibbles (odd j) of bytes 32*(j/2)..+32.
            let bytes = &qs[32 * (j / 2)..32 * (j / 2) + 32];
            let dot: i32 = (0..32)
                .map(|l| {
                    let fifth = if five { ((qh[l] >> j) & 1) << 4 } else { 0 };
                    (((bytes[l] >> (4 * (j % 2))) & 0xF) | fifth) as i32 * q[32 * j + l] as i32
                })
                .sum();
            sumi += sc[j] as i32 * dot;
            summ +=
                m[j] as i32 * (a.bsums[b * 16 + 2 * j] as i32 + a.bsums[b * 16 + 2 * j + 1] as i32);
        }
        acc += a.d[b] * (f16(blk, 0) * sumi as f32 - f16(blk, 2) * summ as f32);
    }
    acc
}

fn dot_q4_k(w: &[u8], a: &ActRow) -> f32 {
    dot_qk4(w, a, false)
}

fn dot_q5_k(w: &[u8], a: &ActRow) -> f32 {
    dot_qk4(w, a, true)
}

fn dot_q6_k(w: &[u8], a: &ActRow) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(210).enumerate() {
        let (ql, qh, sc) = (&blk[..128], &blk[128..192], &blk[192..208]);
        let q = &a.qs[b * 256..b * 256 + 256];
        let mut sumi = 0i32;
        for half in 0..2 {
            for l in 0..32 {
                let (lo, hi, h) = (ql[64 * half + l], ql[64 * half + l + 32], qh[32 * half + l]);
                // The four 6-bit values sharing byte `h` sit 32 apart.
                let vals = [
                    lo & 0xF | (h & 3) << 4,
                    hi & 0xF | ((h >> 2) & 3) << 4,
                    lo >> 4 | ((h >> 4) & 3) << 4,
                    hi >> 4 | ((h >> 6) & 3) << 4,
                ];
                for (k, &v) in vals.iter().enumerate() {
                    let i = 128 * half + 32 * k + l;
                    sumi += sc[i / 16] as i8 as i32 * (v as i32 - 32) * q[i] as i32;
                }
            }
        }
        acc += a.d[b] * f16(blk, 208) * sumi as f32;
    }
    acc
}

/// The f32 dot product of weights stored as `dtype` (F32, F16 or BF16) with `x`.
fn dot_float(dtype: DType, w: &[u8], x: &[f32]) -> f32 {
    match dtype {
        DType::F32 => w
            .chunks_exact(4)
            .zip(x)
            .map(|(c, &x)| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * x)
            .sum(),
        DType::F16 => w.chunks_exact(2).zip(x).map(|(c, &x)| f16(c, 0) * x).sum(),
        DType::BF16 => w
            .chunks_exact(2)
            .zip(x)
            .map(|(c, &x)| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) * x)
            .sum(),
        other => unreachable!("{other} is not a float type"),
    }
}

macro_rules! quant_kernel {
    ($name:ident, $dot:ident, $bytes_per_block:expr, $block:expr) => {
        /// # Safety
        /// See [`RowKernel`].
        unsafe fn $name(row: *const u8, cols: usize, acts: &[Act], out: &mut [f32]) {
            let w = std::slice::from_raw_parts(row, cols / $block * $bytes_per_block);
            for (a, o) in acts.iter().zip(out) {
                *o = $dot(w, &act_row(a, cols, $block));
            }
        }
    };
}
quant_kernel!(q4_0, dot_q4_0, 18, 32);
quant_kernel!(q4_1, dot_q4_1, 20, 32);
quant_kernel!(q5_0, dot_q5_0, 22, 32);
quant_kernel!(q5_1, dot_q5_1, 24, 32);
quant_kernel!(q8_0, dot_q8_0, 34, 32);
quant_kernel!(q4_k, dot_q4_k, 144, 256);
quant_kernel!(q5_k, dot_q5_k, 176, 256);
quant_kernel!(q6_k, dot_q6_k, 210, 256);

macro_rules! float_kernel {
    ($name:ident, $dtype:expr) => {
        /// # Safety
        /// See [`RowKernel`].
        unsafe fn $name(row: *const u8, cols: usize, acts: &[Act], out: &mut [f32]) {
            let w = std::slice::from_raw_parts(row, cols * $dtype.type_size());
            for (a, o) in acts.iter().zip(out) {
                *o = dot_float($dtype, w, std::slice::from_raw_parts(a.x, cols));
            }
        }
    };
}
float_kernel!(f32_, DType::F32);
float_kernel!(f16_, DType::F16);
float_kernel!(bf16_, DType::BF16);

/// The portable kernel for weights of `dtype`, if there is a dedicated one.
pub(super) fn kernel(dtype: DType) -> Option<RowKernel> {
    Some(match dtype {
        DType::F32 => f32_,
        DType::F16 => f16_,
        DType::BF16 => bf16_,
        DType::Q4_0 => q4_0,
        DType::Q4_1 => q4_1,
        DType::Q5_0 => q5_0,
        DType::Q5_1 => q5_1,
        DType::Q8_0 => q8_0,
        DType::Q4_K => q4_k,
        DType::Q5_K => q5_k,
        DType::Q6_K => q6_k,
        _ => return None,
    })
}
