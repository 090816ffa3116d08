//! MXFP4 (OCP microscaling FP4): a shared E8M0 exponent byte and 32 E2M1 values as nibbles.
//!
//! As in ggml, the E2M1 values are stored doubled (integers) and the scale halved.

/// E2M1 code → value × 2.
const DOUBLED_E2M1: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// 2^(e - 127) / 2 as an f32, with the subnormal cases of e = 0 and e = 1 (ggml_e8m0_to_fp32_half).
fn e8m0_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        ((e - 1) as u32) << 23
    };
    f32::from_bits(bits)
}

// Block: E8M0 exponent byte, 16 bytes of nibbles (value j low, value j + 16 high).
pub(super) fn dequantize(b: &[u8], y: &mut [f32]) {
    let d = e8m0_half(b[0]);
    for (i, v) in y.iter_mut().enumerate() {
        let code = (b[1 + i % 16] >> (4 * (i / 16))) & 0x0F;
        *v = d * DOUBLED_E2M1[code as usize] as f32;
    }
}

/// Picks the exponent from the block's largest magnitude, then each value's nearest code
/// (the first one on ties), as gguf-py does.
pub(super) fn quantize(x: &[f32], b: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    // A float→u8 cast that wraps like numpy's astype(uint8) on x86 for tiny blocks.
    let e = if amax > 0.0 {
        (amax.log2().floor() - 2.0 + 127.0) as i32 as u8
    } else {
        0
    };
    let d = e8m0_half(e);
    b[0] = e;
    let mut codes = [0u8; 32];
    for (c, &v) in codes.iter_mut().zip(x) {
        let mut best = (0u8, f32::INFINITY);
        for (k, &q) in DOUBLED_E2M1.iter().enumerate() {
            let err = (d * q as f32 - v).abs();
            if err < best.1 {
                best = (k as u8, err);
            }
        }
        *c = best.0;
    }
    for j in 0..16 {
        b[1 + j] = codes[j] | (codes[j + 16] << 4);
    }
}
