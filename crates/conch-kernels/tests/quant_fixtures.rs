//! Dequantization and quantization against the `gguf` Python package, bit for bit.
//! Fixtures: tools/gen_quant_fixtures.py → fixtures/quant/.

use conch_kernels::quant::{dequantize, quantize, DType};
use std::path::PathBuf;

fn fixture(name: &str) -> Option<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/quant")
        .join(name);
    std::fs::read(path).ok()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Bit equality, except that any NaN equals any NaN (NaN payloads are not part of the contract).
fn assert_same_floats(dtype: DType, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{dtype}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
        assert!(
            same,
            "{dtype}: value {i} (block {}): got {g:e}, gguf-py {w:e}",
            i / dtype.block_size()
        );
    }
}

const DEQUANT_REFERENCE_TYPES: [DType; 14] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::MXFP4,
];

const QUANT_REFERENCE_TYPES: [DType; 9] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::MXFP4,
];

/// Types gguf-py cannot quantize, with fixtures from llama.cpp's reference quantizers.
const LLAMA_CPP_QUANT_TYPES: [DType; 7] = [
    DType::Q8_1,
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::Q8_K,
];

#[test]
fn dequantize_matches_gguf_py() {
    for dtype in DEQUANT_REFERENCE_TYPES {
        let blocks = fixture(&format!("{dtype}.blocks.bin")).expect("fixture blocks");
        let want = f32s(&fixture(&format!("{dtype}.dequant.f32.bin")).expect("fixture output"));
        assert_eq!(
            blocks.len() / dtype.type_size() * dtype.block_size(),
            want.len(),
            "{dtype}: fixture sizes"
        );
        let mut got = vec![0f32; want.len()];
        dequantize(dtype, &blocks, &mut got).unwrap();
        assert_same_floats(dtype, &got, &want);
    }
}

/// Quantizes the fixture input of `dtype` and compares with the reference bytes.
fn assert_quantize_matches_fixture(dtype: DType) {
    let input = f32s(&fixture(&format!("{dtype}.quant_in.f32.bin")).expect("fixture input"));
    let want = fixture(&format!("{dtype}.quant_out.bin")).expect("fixture output");
    let mut got = vec![0u8; want.len()];
    quantize(dtype, &input, &mut got).unwrap();
    if let Some(i) = got.iter().zip(&want).position(|(g, w)| g != w) {
        let block = i / dtype.type_size();
        panic!(
            "{dtype}: byte {i} (block {block}) differs\n got  {:?}\n want {:?}",
            &got[block * dtype.type_size()..(block + 1) * dtype.type_size()],
            &want[block * dtype.type_size()..(block + 1) * dtype.type_size()]
        );
    }
}

#[test]
fn quantize_matches_gguf_py() {
    QUANT_REFERENCE_TYPES
        .into_iter()
        .for_each(assert_quantize_matches_fixture);
}

#[test]
fn quantize_matches_llama_cpp_reference() {
    LLAMA_CPP_QUANT_TYPES
        .into_iter()
        .for_each(assert_quantize_matches_fixture);
}

#[test]
fn quantize_then_dequantize_stays_close() {
    // Round trip of each quantizable type: the error per value is at most about one quantization step
    // (MXFP4 saturates values just below a power of two at 3/4 of it, hence its larger bound).
    let x: Vec<f32> = (0..1024)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    for dtype in QUANT_REFERENCE_TYPES
        .into_iter()
        .chain(LLAMA_CPP_QUANT_TYPES)
    {
        let mut q = vec![0u8; dtype.bytes_for(x.len()).unwrap()];
        quantize(dtype, &x, &mut q).unwrap();
        let mut y = vec![0f32; x.len()];
        dequantize(dtype, &q, &mut y).unwrap();
        let worst = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let bound = match dtype {
            DType::Q2_K => 0.7, // four levels per 16-value group: steps of about 4/3 here
            DType::Q3_K => 0.4, // eight levels per 16-value group
            DType::MXFP4 => 0.5,
            _ => 0.3,
        };
        assert!(worst <= bound, "{dtype}: round-trip error {worst}");
    }
}
