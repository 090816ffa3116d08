//! Element types and block layouts, identical to ggml's (GGUF stores these bytes as is),
//! with dequantization bit-identical to the `gguf` Python package, and quantization
//! bit-identical to gguf-py's `quantize` where it has one and to llama.cpp's reference
//! quantizers for the K-quants.
//!
//! Every block codec mirrors its reference's float32 operation order exactly (e.g. `d * q - m`,
//! never a fused multiply-add; Rust does not contract on its own), so results match bit for bit.
//! Faster variants must keep that order or be tested against these.

mod k_quants;
mod legacy;
mod mxfp4;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantError {
    #[error("{dtype}: {len} values is not a whole number of {block}-value blocks")]
    PartialBlock {
        dtype: DType,
        len: usize,
        block: usize,
    },
    #[error("{dtype}: expected {expected} bytes, got {got}")]
    ByteLength {
        dtype: DType,
        expected: usize,
        got: usize,
    },
    #[error("{0} is not supported for this operation")]
    Unsupported(DType),
    #[error("{dtype}: {values} values need {expected} bytes, but the output has {got}")]
    OutputLength {
        dtype: DType,
        values: usize,
        expected: usize,
        got: usize,
    },
}

/// A tensor element type. Block-quantized types store `block_size` values in `type_size` bytes.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    MXFP4,
}

impl DType {
    pub const ALL: [DType; 16] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q8_1,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::Q8_K,
        DType::MXFP4,
    ];

    /// The id ggml (and so GGUF) gives this type.
    pub fn ggml_id(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q5_0 => 6,
            DType::Q5_1 => 7,
            DType::Q8_0 => 8,
            DType::Q8_1 => 9,
            DType::Q2_K => 10,
            DType::Q3_K => 11,
            DType::Q4_K => 12,
            DType::Q5_K => 13,
            DType::Q6_K => 14,
            DType::Q8_K => 15,
            DType::BF16 => 30,
            DType::MXFP4 => 39,
        }
    }

    pub fn from_ggml_id(id: u32) -> Option<DType> {
        DType::ALL.into_iter().find(|t| t.ggml_id() == id)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
            DType::Q5_0 => "Q5_0",
            DType::Q5_1 => "Q5_1",
            DType::Q8_0 => "Q8_0",
            DType::Q8_1 => "Q8_1",
            DType::Q2_K => "Q2_K",
            DType::Q3_K => "Q3_K",
            DType::Q4_K => "Q4_K",
            DType::Q5_K => "Q5_K",
            DType::Q6_K => "Q6_K",
            DType::Q8_K => "Q8_K",
            DType::MXFP4 => "MXFP4",
        }
    }

    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q4_0
            | DType::Q4_1
            | DType::Q5_0
            | DType::Q5_1
            | DType::Q8_0
            | DType::Q8_1
            | DType::MXFP4 => 32,
            DType::Q2_K | DType::Q3_K | DType::Q4_K | DType::Q5_K | DType::Q6_K | DType::Q8_K => {
                256
            }
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q8_0 => 34,
            DType::Q8_1 => 36,
            DType::Q2_K => 84,
            DType::Q3_K => 110,
            DType::Q4_K => 144,
            DType::Q5_K => 176,
            DType::Q6_K => 210,
            DType::Q8_K => 292,
            DType::MXFP4 => 17,
        }
    }

    /// Bytes taken by `n` values, or `None` when `n` is not a whole number of blocks or overflows.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        if n % self.block_size() != 0 {
            return None;
        }
        (n / self.block_size()).checked_mul(self.type_size())
    }

    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Checks that `bytes` holds exactly `n_values` values of `dtype`.
fn check_lengths(dtype: DType, n_values: usize, bytes: usize) -> Result<(), QuantError> {
    let expected = dtype.bytes_for(n_values).ok_or(QuantError::PartialBlock {
        dtype,
        len: n_values,
        block: dtype.block_size(),
    })?;
    if bytes != expected {
        return Err(QuantError::ByteLength {
            dtype,
            expected,
            got: bytes,
        });
    }
    Ok(())
}

/// Reads a little-endian IEEE half from the first two bytes of `b`.
#[inline]
fn f16_at(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Rounds to the nearest f16 (ties to even, as numpy's `astype(np.float16)`), little-endian.
#[inline]
fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// Dequantizes `dst.len()` values stored as `dtype` in `src` (exactly `dtype.bytes_for(dst.len())` bytes).
/// Bit-identical to the `gguf` Python package's `dequantize` (Q8_1 and Q8_K, which gguf-py does not
/// decode, follow ggml's `d * q`).
pub fn dequantize(dtype: DType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check_lengths(dtype, dst.len(), src.len())?;
    let blocks = src
        .chunks_exact(dtype.type_size())
        .zip(dst.chunks_exact_mut(dtype.block_size()));
    match dtype {
        DType::F32 => blocks.for_each(|(b, y)| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DType::F16 => blocks.for_each(|(b, y)| y[0] = f16_at(b)),
        DType::BF16 => blocks.for_each(|(b, y)| {
            y[0] = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)
        }),
        DType::Q4_0 => blocks.for_each(|(b, y)| legacy::dequantize_q4_0(b, y)),
        DType::Q4_1 => blocks.for_each(|(b, y)| legacy::dequantize_q4_1(b, y)),
        DType::Q5_0 => blocks.for_each(|(b, y)| legacy::dequantize_q5_0(b, y)),
        DType::Q5_1 => blocks.for_each(|(b, y)| legacy::dequantize_q5_1(b, y)),
        DType::Q8_0 => blocks.for_each(|(b, y)| legacy::dequantize_q8_0(b, y)),
        DType::Q8_1 => blocks.for_each(|(b, y)| legacy::dequantize_q8_1(b, y)),
        DType::Q2_K => blocks.for_each(|(b, y)| k_quants::dequantize_q2_k(b, y)),
        DType::Q3_K => blocks.for_each(|(b, y)| k_quants::dequantize_q3_k(b, y)),
        DType::Q4_K => blocks.for_each(|(b, y)| k_quants::dequantize_q4_k(b, y)),
        DType::Q5_K => blocks.for_each(|(b, y)| k_quants::dequantize_q5_k(b, y)),
        DType::Q6_K => blocks.for_each(|(b, y)| k_quants::dequantize_q6_k(b, y)),
        DType::Q8_K => blocks.for_each(|(b, y)| k_quants::dequantize_q8_k(b, y)),
        DType::MXFP4 => blocks.for_each(|(b, y)| mxfp4::dequantize(b, y)),
    }
    Ok(())
}

/// Quantizes `src` into `dst` (exactly `dtype.bytes_for(src.len())` bytes).
///
/// F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and MXFP4 are bit-identical to the `gguf` Python
/// package's `quantize`; Q8_1 and the K-quants Q2_K to Q8_K, which gguf-py cannot write, follow
/// llama.cpp's reference quantizers (`quantize_row_*_ref`).
pub fn quantize(dtype: DType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    let expected = dtype.bytes_for(src.len()).ok_or(QuantError::PartialBlock {
        dtype,
        len: src.len(),
        block: dtype.block_size(),
    })?;
    if dst.len() != expected {
        return Err(QuantError::OutputLength {
            dtype,
            values: src.len(),
            expected,
            got: dst.len(),
        });
    }
    let blocks = src
        .chunks_exact(dtype.block_size())
        .zip(dst.chunks_exact_mut(dtype.type_size()));
    match dtype {
        DType::F32 => blocks.for_each(|(x, b)| b.copy_from_slice(&x[0].to_le_bytes())),
        DType::F16 => blocks.for_each(|(x, b)| b.copy_from_slice(&f16_bytes(x[0]))),
        DType::BF16 => blocks.for_each(|(x, b)| b.copy_from_slice(&bf16_bytes(x[0]))),
        DType::Q4_0 => blocks.for_each(|(x, b)| legacy::quantize_q4_0(x, b)),
        DType::Q4_1 => blocks.for_each(|(x, b)| legacy::quantize_q4_1(x, b)),
        DType::Q5_0 => blocks.for_each(|(x, b)| legacy::quantize_q5_0(x, b)),
        DType::Q5_1 => blocks.for_each(|(x, b)| legacy::quantize_q5_1(x, b)),
        DType::Q8_0 => blocks.for_each(|(x, b)| legacy::quantize_q8_0(x, b)),
        DType::Q8_1 => blocks.for_each(|(x, b)| legacy::quantize_q8_1(x, b)),
        DType::Q8_K => blocks.for_each(|(x, b)| k_quants::quantize_q8_k(x, b)),
        DType::MXFP4 => blocks.for_each(|(x, b)| mxfp4::quantize(x, b)),
        DType::Q2_K => blocks.for_each(|(x, b)| k_quants::quantize_q2_k(x, b)),
        DType::Q3_K => blocks.for_each(|(x, b)| k_quants::quantize_q3_k(x, b)),
        DType::Q4_K => blocks.for_each(|(x, b)| k_quants::quantize_q4_k(x, b)),
        DType::Q5_K => blocks.for_each(|(x, b)| k_quants::quantize_q5_k(x, b)),
        DType::Q6_K => blocks.for_each(|(x, b)| k_quants::quantize_q6_k(x, b)),
    }
    Ok(())
}

/// f32 → bf16 as ggml does it: NaNs made quiet, otherwise rounded to nearest even.
fn bf16_bytes(x: f32) -> [u8; 2] {
    let bits = x.to_bits();
    let rounded = if bits & 0x7fff_ffff > 0x7f80_0000 {
        (bits >> 16) | 0x40
    } else {
        ((bits as u64 + 0x7fff + ((bits >> 16) & 1) as u64) >> 16) as u32
    };
    (rounded as u16).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_lengths_are_errors() {
        let mut out = [0f32; 31];
        assert!(matches!(
            dequantize(DType::Q4_0, &[0; 18], &mut out),
            Err(QuantError::PartialBlock { .. })
        ));
        let mut out = [0f32; 32];
        assert!(matches!(
            dequantize(DType::Q4_0, &[0; 17], &mut out),
            Err(QuantError::ByteLength { .. })
        ));
        let mut bytes = [0u8; 17];
        assert!(matches!(
            quantize(DType::Q4_0, &[0.0; 32], &mut bytes),
            Err(QuantError::OutputLength { .. })
        ));
    }

    #[test]
    fn q8_k_is_scale_times_quant() {
        // ggml's block_q8_K: f32 d, 256 int8 quants, 16 int16 block sums (unused when decoding).
        let mut block = vec![0u8; DType::Q8_K.type_size()];
        block[..4].copy_from_slice(&0.25f32.to_le_bytes());
        for i in 0..256 {
            block[4 + i] = (i as i32 - 128) as i8 as u8;
        }
        let mut out = vec![0f32; 256];
        dequantize(DType::Q8_K, &block, &mut out).unwrap();
        for (i, v) in out.iter().enumerate() {
            assert_eq!(*v, 0.25 * (i as f32 - 128.0));
        }
    }

    #[test]
    fn q8_1_is_scale_times_quant() {
        // ggml's block_q8_1: f16 d, f16 s (the sum, unused when decoding), 32 int8 quants.
        let mut block = vec![0u8; DType::Q8_1.type_size()];
        block[..2].copy_from_slice(&half::f16::from_f32(-0.5).to_le_bytes());
        block[2..4].copy_from_slice(&half::f16::from_f32(99.0).to_le_bytes());
        for i in 0..32 {
            block[4 + i] = (i as i8 - 16) as u8;
        }
        let mut out = vec![0f32; 32];
        dequantize(DType::Q8_1, &block, &mut out).unwrap();
        for (i, v) in out.iter().enumerate() {
            assert_eq!(*v, -0.5 * (i as f32 - 16.0));
        }
    }
}
