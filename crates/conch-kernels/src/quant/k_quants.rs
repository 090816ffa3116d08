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

// Quantization follows llama.cpp's reference `quantize_row_q4_K_ref` / `quantize_row_q6_K_ref`
// (what llama-quantize uses without an importance matrix), in the same float32 operation order.

/// Scales below this count as an all-zero group.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Round to nearest, ties to even, through the float-magic trick ggml uses (exact for |v| < 2^22).
#[inline]
fn nearest_int(v: f32) -> i32 {
    ((v + 12_582_912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// The candidate scales `fit_scale_and_min` tries: `(nmax + rmin + rdelta * step) / range` for
/// `step` in `0..=nstep`, judged by `metric`.
#[derive(Clone, Copy)]
struct ScaleSearch {
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    metric: Metric,
}

#[derive(Clone, Copy)]
enum Metric {
    Squared,
    Absolute,
}

impl Metric {
    #[inline]
    fn of(self, diff: f32) -> f32 {
        match self {
            Metric::Squared => diff * diff,
            Metric::Absolute => diff.abs(),
        }
    }
}

/// Fits `x ≈ scale * L + min` with levels `L` in `0..=nmax` (minimum clamped to ≤ 0), minimizing the
/// `weights`-weighted squared error (absolute error with `Metric::Absolute`) over a search of
/// `nstep + 1` candidate scales. Returns `(scale, -min)` and writes the levels.
fn fit_scale_and_min(
    x: &[f32],
    weights: &[f32],
    nmax: i32,
    levels: &mut [u8],
    search: ScaleSearch,
) -> (f32, f32) {
    let ScaleSearch {
        rmin,
        rdelta,
        nstep,
        metric,
    } = search;
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels[..n].fill(0);
        return (0.0, -min);
    }
    let nmax_f = nmax as f32;
    let iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        levels[i] = l as u8;
        best_error += weights[i] * metric.of(scale * l as f32 + min - x[i]);
    }
    let mut trial = [0u8; 32];
    for step in 0..=nstep {
        let iscale = (rmin + rdelta * step as f32 + nmax_f) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            trial[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut error = 0f32;
            for i in 0..n {
                error += weights[i] * metric.of(this_scale * trial[i] as f32 + this_min - x[i]);
            }
            if error < best_error {
                levels[..n].copy_from_slice(&trial[..n]);
                best_error = error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Fits `x ≈ scale * (L - nmax)` with `L` in `0..2 * nmax`, weighting by x², trying 19 scales
/// around `nmax / max|x|`. Returns the scale (signed, like the largest-magnitude value) and writes `L`.
fn fit_symmetric_scale(x: &[f32], nmax: i32, levels: &mut [u8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        levels[..x.len()].fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let set_levels = |iscale: f32, levels: &mut [u8]| {
        for (o, &v) in levels.iter_mut().zip(x) {
            *o = (nearest_int(iscale * v).clamp(-nmax, nmax - 1) + nmax) as u8;
        }
    };
    let iscale = -nmax_f / max;
    set_levels(iscale, levels);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for step in (-9..=9).filter(|&s| s != 0) {
        let iscale = -(nmax_f + 0.1 * step as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            set_levels(iscale, levels);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// The shared part of Q4_K and Q5_K: per 32-value group, fits a scale and a min with levels in
/// `0..=nmax`, writes the f16 `d`, `dmin` and the packed 6-bit scales and mins to `header`
/// (16 bytes), and returns the levels re-derived from the stored (rounded) scales.
fn quantize_scales_and_mins(
    x: &[f32],
    header: &mut [u8],
    nmax: i32,
    rmin: f32,
    nstep: i32,
) -> [u8; QK_K] {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * (j + 1)];
        let sum_x2 = xs.iter().fold(0f32, |s, v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|l| av_x + xs[l].abs());
        (scales[j], mins[j]) = fit_scale_and_min(
            xs,
            &weights,
            nmax,
            &mut levels[32 * j..],
            ScaleSearch {
                rmin,
                rdelta: 0.1,
                nstep,
                metric: Metric::Squared,
            },
        );
        max_scale = max_scale.max(scales[j]);
        max_min = max_min.max(mins[j]);
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let packed = &mut header[4..16];
    packed.fill(0);
    for j in 0..8 {
        // Wrapping casts as in C's int → uint8_t before the clamp.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0F) | ((lm & 0x0F) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    header[..2].copy_from_slice(&super::f16_bytes(max_scale / 63.0));
    header[2..4].copy_from_slice(&super::f16_bytes(max_min / 63.0));
    let (d, dmin) = (f16_at(header), f16_at(&header[2..]));
    let (sc, mn) = scales_and_mins(&header[4..16]);
    for j in 0..8 {
        let dj = d * sc[j] as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = dmin * mn[j] as f32;
        for i in 32 * j..32 * (j + 1) {
            levels[i] = nearest_int((x[i] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    levels
}

pub(super) fn quantize_q2_k(x: &[f32], b: &mut [u8]) {
    const Q4SCALE: f32 = 15.0;
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; 16];
    let mut mins = [0f32; 16];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for g in 0..16 {
        let xs = &x[16 * g..16 * (g + 1)];
        let weights: [f32; 16] = std::array::from_fn(|l| xs[l].abs());
        (scales[g], mins[g]) = fit_scale_and_min(
            xs,
            &weights,
            3,
            &mut levels[16 * g..],
            ScaleSearch {
                rmin: -0.5,
                rdelta: 0.1,
                nstep: 15,
                metric: Metric::Absolute,
            },
        );
        max_scale = max_scale.max(scales[g]);
        max_min = max_min.max(mins[g]);
    }
    let (packed, rest) = b.split_at_mut(16);
    // Wrapping int → uint8_t stores as in C.
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for (p, &scale) in packed.iter_mut().zip(&scales) {
            *p = nearest_int(iscale * scale) as u8;
        }
    } else {
        packed.fill(0);
    }
    let d_bits = super::f16_bytes(if max_scale > 0.0 {
        max_scale / Q4SCALE
    } else {
        0.0
    });
    let dmin_bits = if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for (p, &min) in packed.iter_mut().zip(&mins) {
            *p |= (nearest_int(iscale * min) << 4) as u8;
        }
        super::f16_bytes(max_min / Q4SCALE)
    } else {
        super::f16_bytes(0.0)
    };
    rest[64..66].copy_from_slice(&d_bits);
    rest[66..68].copy_from_slice(&dmin_bits);
    let (d, dmin) = (f16_at(&d_bits), f16_at(&dmin_bits));
    for (g, &sc) in packed.iter().enumerate() {
        let dg = d * (sc & 0x0F) as f32;
        if dg == 0.0 {
            continue;
        }
        let dm = dmin * (sc >> 4) as f32;
        for i in 16 * g..16 * (g + 1) {
            levels[i] = nearest_int((x[i] + dm) / dg).clamp(0, 3) as u8;
        }
    }
    for (i, q) in rest[..64].iter_mut().enumerate() {
        let (h, l) = (i / 32, i % 32);
        let base = 128 * h + l;
        *q = levels[base]
            | (levels[base + 32] << 2)
            | (levels[base + 64] << 4)
            | (levels[base + 96] << 6);
    }
}

/// Fits `x ≈ scale * L` with `L` in `-nmax..nmax`, weighting by x², starting from `nmax / max|x|` and
/// then moving single levels while that lowers the error (up to five passes). Returns the scale and
/// writes `L + nmax`.
fn fit_symmetric_scale_iteratively(x: &[f32], nmax: i32, levels: &mut [u8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        levels[..x.len()].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut l: [i32; 16] = [0; 16];
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (li, &v) in l.iter_mut().zip(x) {
        *li = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        let w = v * v;
        sumlx += w * v * *li as f32;
        suml2 += w * *li as f32 * *li as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (li, &v) in l.iter_mut().zip(x) {
            let w = v * v;
            let mut slx = sumlx - w * v * *li as f32;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * *li as f32 * *li as f32;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *li {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (o, &li) in levels.iter_mut().zip(&l) {
        *o = (li + nmax) as u8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

pub(super) fn quantize_q3_k(x: &[f32], b: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for (g, scale) in scales.iter_mut().enumerate() {
        let range = 16 * g..16 * (g + 1);
        *scale = fit_symmetric_scale_iteratively(&x[range.clone()], 4, &mut levels[range]);
        if scale.abs() > amax {
            amax = scale.abs();
            max_scale = *scale;
        }
    }
    let (hmask, rest) = b.split_at_mut(32);
    let (qs, rest) = rest.split_at_mut(64);
    let (packed, d_bytes) = rest.split_at_mut(12);
    packed.fill(0);
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (g, &scale) in scales.iter().enumerate() {
            let l = ((nearest_int(iscale * scale) as i8).clamp(-32, 31) + 32) as u8;
            if g < 8 {
                packed[g] = l & 0x0F;
            } else {
                packed[g - 8] |= (l & 0x0F) << 4;
            }
            packed[8 + g % 4] |= (l >> 4) << (2 * (g / 4));
        }
        d_bytes.copy_from_slice(&super::f16_bytes(1.0 / iscale));
    } else {
        d_bytes.copy_from_slice(&super::f16_bytes(0.0));
    }
    let d = f16_at(d_bytes);
    for g in 0..16 {
        let low = (packed[g % 8] >> (4 * (g / 8))) & 0x0F;
        let high = (packed[8 + g % 4] >> (2 * (g / 4))) & 0x03;
        let dg = d * ((low | (high << 4)) as i8 - 32) as f32;
        if dg == 0.0 {
            continue;
        }
        for i in 16 * g..16 * (g + 1) {
            levels[i] = (nearest_int(x[i] / dg).clamp(-4, 3) + 4) as u8;
        }
    }
    hmask.fill(0);
    for (i, level) in levels.iter_mut().enumerate() {
        if *level > 3 {
            hmask[i % 32] |= 1 << (i / 32);
            *level -= 4;
        }
    }
    for (i, q) in qs.iter_mut().enumerate() {
        let base = 128 * (i / 32) + i % 32;
        *q = levels[base]
            | (levels[base + 32] << 2)
            | (levels[base + 64] << 4)
            | (levels[base + 96] << 6);
    }
}

pub(super) fn quantize_q4_k(x: &[f32], b: &mut [u8]) {
    let levels = quantize_scales_and_mins(x, &mut b[..16], 15, -1.0, 20);
    for (i, q) in b[16..144].iter_mut().enumerate() {
        *q = nibble_pair(&levels, i);
    }
}

pub(super) fn quantize_q5_k(x: &[f32], b: &mut [u8]) {
    let levels = quantize_scales_and_mins(x, &mut b[..16], 31, -0.5, 15);
    let (qh, qs) = b[16..176].split_at_mut(32);
    for (j, h) in qh.iter_mut().enumerate() {
        *h = (0..8).fold(0u8, |acc, bit| acc | ((levels[32 * bit + j] >> 4) << bit));
    }
    for (i, q) in qs.iter_mut().enumerate() {
        *q = nibble_pair(&levels, i);
    }
}

/// Byte `i` of the nibble layout of Q4_K/Q5_K: values `64c + l` (low) and `64c + 32 + l` (high),
/// with `i = 32c + l`; only the low 4 bits of each level are kept.
fn nibble_pair(levels: &[u8; QK_K], i: usize) -> u8 {
    let (c, l) = (i / 32, i % 32);
    (levels[64 * c + l] & 0x0F) | ((levels[64 * c + 32 + l] & 0x0F) << 4)
}

pub(super) fn quantize_q6_k(x: &[f32], b: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for g in 0..16 {
        scales[g] = fit_symmetric_scale(
            &x[16 * g..16 * (g + 1)],
            32,
            &mut levels[16 * g..16 * (g + 1)],
        );
        if scales[g].abs() > max_abs_scale {
            max_abs_scale = scales[g].abs();
            max_scale = scales[g];
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        b.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    b[208..210].copy_from_slice(&super::f16_bytes(1.0 / iscale));
    let d = f16_at(&b[208..]);
    for g in 0..16 {
        b[192 + g] = nearest_int(iscale * scales[g]).min(127) as i8 as u8;
        let dg = d * b[192 + g] as i8 as f32;
        if dg == 0.0 {
            continue;
        }
        for i in 16 * g..16 * (g + 1) {
            levels[i] = (nearest_int(x[i] / dg).clamp(-32, 31) + 32) as u8;
        }
    }
    let (ql, qh) = b[..192].split_at_mut(128);
    for h in 0..2 {
        let l4 = &levels[128 * h..128 * (h + 1)];
        for l in 0..32 {
            ql[64 * h + l] = (l4[l] & 0x0F) | ((l4[l + 64] & 0x0F) << 4);
            ql[64 * h + l + 32] = (l4[l + 32] & 0x0F) | ((l4[l + 96] & 0x0F) << 4);
            qh[32 * h + l] = (l4[l] >> 4)
                | ((l4[l + 32] >> 4) << 2)
                | ((l4[l + 64] >> 4) << 4)
                | ((l4[l + 96] >> 4) << 6);
        }
    }
}

/// llama.cpp's `quantize_row_q8_K_ref`: scale from the largest-magnitude value, plus the sums
/// of each 16 quants.
pub(super) fn quantize_q8_k(x: &[f32], b: &mut [u8]) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        b.fill(0);
        return;
    }
    let iscale = -127.0 / max;
    let (d, rest) = b.split_at_mut(4);
    let (qs, bsums) = rest.split_at_mut(QK_K);
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8 as u8;
    }
    for (sum, group) in bsums.chunks_exact_mut(2).zip(qs.chunks_exact(16)) {
        let s: i16 = group.iter().map(|&q| q as i8 as i16).sum();
        sum.copy_from_slice(&s.to_le_bytes());
    }
    d.copy_from_slice(&(1.0 / iscale).to_le_bytes());
}
