//! Matrix products of every weight type at every kernel level this CPU supports, against
//! (a) the f64 product of the dequantized weights, within a bound derived from the 8-bit
//! activation quantization, and (b) the scalar kernels, which compute the same integer dots
//! and may differ only by f32 summation order.

use conch_kernels::cpu::{self, Isa};
use conch_kernels::quant::dequantize;
use conch_kernels::{matmul_with_isa, pool, DType, QMatrix};

/// splitmix64: a small deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
}

/// `rows × cols` weights of `dtype`: random bytes with every scale field set to a moderate value
/// (random f16 bytes would include infinities and NaNs).
fn random_weights(dtype: DType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let bytes = dtype.bytes_for(cols).unwrap() * rows;
    let mut data: Vec<u8> = (0..bytes).map(|_| rng.next() as u8).collect();
    let size = dtype.type_size();
    for blk in data.chunks_exact_mut(size) {
        let scale = |rng: &mut Rng| 0.01 + 0.05 * rng.unit().abs();
        match dtype {
            DType::F32 => blk.copy_from_slice(&rng.unit().to_le_bytes()),
            DType::F16 => put_f16(blk, 0, rng.unit()),
            DType::BF16 => {
                blk.copy_from_slice(&((rng.unit().to_bits() >> 16) as u16).to_le_bytes())
            }
            DType::Q4_0 | DType::Q5_0 | DType::Q8_0 | DType::Q4_K | DType::Q5_K => {
                put_f16(blk, 0, scale(rng));
                if matches!(dtype, DType::Q4_K | DType::Q5_K) {
                    put_f16(blk, 2, scale(rng));
                }
            }
            DType::Q4_1 | DType::Q5_1 | DType::Q8_1 => {
                put_f16(blk, 0, scale(rng));
                put_f16(blk, 2, -scale(rng));
            }
            DType::Q2_K => {
                put_f16(blk, 80, scale(rng));
                put_f16(blk, 82, scale(rng));
            }
            DType::Q3_K => put_f16(blk, 108, scale(rng)),
            DType::Q6_K => put_f16(blk, 208, scale(rng)),
            DType::Q8_K => blk[..4].copy_from_slice(&scale(rng).to_le_bytes()),
            DType::MXFP4 => blk[0] = 120 + (rng.next() % 8) as u8,
        }
    }
    data
}

fn random_activations(n: usize, cols: usize, rng: &mut Rng) -> Vec<f32> {
    // Varying magnitudes across blocks, as real activations have.
    (0..n * cols)
        .map(|i| rng.unit() * (1.0 + ((i / 32) % 5) as f32))
        .collect()
}

/// Which block size the activations are quantized to for `dtype`, or `None` for f32 dots.
fn activation_block(dtype: DType) -> Option<usize> {
    match dtype {
        DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 => Some(32),
        DType::Q4_K | DType::Q5_K | DType::Q6_K => Some(256),
        _ => None,
    }
}

/// The f64 product of the dequantized weights, and for each output the largest error the
/// implementation may make: the activation rounding (each value moves by at most half a step,
/// `max|x_block| / 254`, so the dot by at most `Σ_blocks max|x_block|/254 · Σ_block |w|`) plus
/// f32 rounding of the dot (`1e-5 · Σ|w·x|`). Also returns `Σ|w·x|` per output.
fn reference(
    dtype: DType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut wf = vec![0f32; rows * cols];
    dequantize(dtype, w, &mut wf).unwrap();
    let mut y = vec![0f64; n * rows];
    let mut tol = vec![0f64; n * rows];
    let mut magnitude = vec![0f64; n * rows];
    for t in 0..n {
        let xs = &x[t * cols..(t + 1) * cols];
        for r in 0..rows {
            let ws = &wf[r * cols..(r + 1) * cols];
            let dot: f64 = ws.iter().zip(xs).map(|(&a, &b)| a as f64 * b as f64).sum();
            let abs: f64 = ws
                .iter()
                .zip(xs)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            let rounding: f64 = match activation_block(dtype) {
                Some(bs) => ws
                    .chunks(bs)
                    .zip(xs.chunks(bs))
                    .map(|(wb, xb)| {
                        let amax = xb.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
                        amax / 254.0 * wb.iter().map(|&v| v.abs() as f64).sum::<f64>()
                    })
                    .sum(),
                None => 0.0,
            };
            y[t * rows + r] = dot;
            tol[t * rows + r] = rounding * 1.001 + 1e-5 * abs + 1e-6;
            magnitude[t * rows + r] = abs;
        }
    }
    (y, tol, magnitude)
}

fn levels() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|&i| cpu::supports(i)).collect()
}

/// The shape used per type: three blocks of columns (an odd count) and a row count that is not
/// a multiple of any tile or chunk.
fn shape(dtype: DType) -> (usize, usize) {
    let cols = match dtype.block_size() {
        1 => 3 * 32 + 7, // also exercises the scalar tails of the float kernels
        b => 3 * b,
    };
    (11, cols)
}

fn check_type(dtype: DType, batches: impl Iterator<Item = usize>) {
    let mut rng = Rng(0xC0DE ^ dtype.ggml_id() as u64);
    let (rows, cols) = shape(dtype);
    let w = random_weights(dtype, rows, cols, &mut rng);
    let m = QMatrix::new(dtype, rows, cols, &w).unwrap();
    for n in batches {
        let x = random_activations(n, cols, &mut rng);
        let (expected, tol, magnitude) = reference(dtype, &w, rows, cols, &x, n);
        let mut scalar = vec![0f32; n * rows];
        matmul_with_isa(Isa::Scalar, m, &x, n, &mut scalar);
        for (i, ((&got, &want), &tol)) in scalar.iter().zip(&expected).zip(&tol).enumerate() {
            assert!(
                (got as f64 - want).abs() <= tol,
                "{dtype} scalar n={n} out {i}: {got} vs {want} (tolerance {tol})"
            );
        }
        for isa in levels().into_iter().filter(|&i| i != Isa::Scalar) {
            let mut y = vec![f32::NAN; n * rows];
            matmul_with_isa(isa, m, &x, n, &mut y);
            for (i, (&got, &want)) in y.iter().zip(&scalar).enumerate() {
                // Same integer dots as the scalar kernel; only the f32 summation order (and the
                // split of offsets into block sums) differs: a few f32 ulps of the magnitudes summed.
                assert!(
                    (got - want).abs() as f64 <= 2e-5 * magnitude[i] + 1e-6,
                    "{dtype} {isa} n={n} out {i}: {got} vs scalar {want}"
                );
                assert!(
                    (got as f64 - expected[i]).abs() <= tol[i],
                    "{dtype} {isa} n={n} out {i}: {got} vs reference {}",
                    expected[i]
                );
            }
        }
    }
}

#[test]
fn every_type_every_batch_size_1_to_64() {
    for dtype in DType::ALL {
        check_type(dtype, 1..=64);
    }
}

#[test]
fn large_batches_cross_token_blocks() {
    for dtype in [
        DType::F16,
        DType::Q4_0,
        DType::Q8_0,
        DType::Q4_K,
        DType::Q6_K,
        DType::Q5_K,
    ] {
        check_type(dtype, [65, 130, 200].into_iter());
    }
}

/// Many rows, so the work is split into several row chunks and token blocks across threads.
#[test]
fn results_do_not_depend_on_thread_count() {
    let mut rng = Rng(7);
    for dtype in [
        DType::F32,
        DType::BF16,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q4_K,
        DType::Q6_K,
        DType::Q3_K,
    ] {
        let (rows, cols) = (301, dtype.block_size().max(32) * 3);
        let w = random_weights(dtype, rows, cols, &mut rng);
        let m = QMatrix::new(dtype, rows, cols, &w).unwrap();
        for n in [1, 5, 70] {
            let x = random_activations(n, cols, &mut rng);
            for isa in levels() {
                let mut outputs = Vec::new();
                for threads in [1, 2, 3] {
                    pool::set_threads(threads);
                    let mut y = vec![0f32; n * rows];
                    matmul_with_isa(isa, m, &x, n, &mut y);
                    outputs.push(y);
                }
                assert!(
                    outputs.windows(2).all(|p| p[0] == p[1]),
                    "{dtype} {isa} n={n}: results differ across thread counts"
                );
            }
        }
    }
    pool::set_threads(std::thread::available_parallelism().map_or(1, |n| n.get()));
}

#[test]
fn every_output_is_written_for_odd_row_counts() {
    let mut rng = Rng(11);
    for rows in [1, 2, 3, 5, 17, 63, 129] {
        let cols = 64;
        let w = random_weights(DType::Q8_0, rows, cols, &mut rng);
        let m = QMatrix::new(DType::Q8_0, rows, cols, &w).unwrap();
        for n in [1, 3, 9] {
            let x = random_activations(n, cols, &mut rng);
            let (expected, tol, _) = reference(DType::Q8_0, &w, rows, cols, &x, n);
            for isa in levels() {
                let mut y = vec![f32::NAN; n * rows];
                matmul_with_isa(isa, m, &x, n, &mut y);
                for i in 0..y.len() {
                    assert!(
                        (y[i] as f64 - expected[i]).abs() <= tol[i],
                        "{isa} rows={rows} n={n} out {i}: {} vs {}",
                        y[i],
                        expected[i]
                    );
                }
            }
        }
    }
}

#[test]
fn zero_activations_give_zero() {
    for dtype in [
        DType::Q4_0,
        DType::Q4_1,
        DType::Q4_K,
        DType::Q6_K,
        DType::F16,
    ] {
        let mut rng = Rng(3);
        let (rows, cols) = shape(dtype);
        let w = random_weights(dtype, rows, cols, &mut rng);
        let m = QMatrix::new(dtype, rows, cols, &w).unwrap();
        for isa in levels() {
            let mut y = vec![f32::NAN; 2 * rows];
            matmul_with_isa(isa, m, &vec![0.0; 2 * cols], 2, &mut y);
            assert!(y.iter().all(|&v| v == 0.0), "{dtype} {isa}: {y:?}");
        }
    }
}

#[test]
fn qmatrix_rejects_bad_shapes() {
    assert!(QMatrix::new(DType::Q4_0, 2, 48, &[0; 2 * 27]).is_err());
    assert!(QMatrix::new(DType::Q4_0, 2, 64, &[0; 71]).is_err());
    assert!(QMatrix::new(DType::Q4_0, 2, 64, &[0; 72]).is_ok());
}

#[test]
#[should_panic(expected = "activation shape")]
fn mismatched_activations_panic_with_a_message() {
    let w = [0u8; 72];
    let m = QMatrix::new(DType::Q4_0, 2, 64, &w).unwrap();
    conch_kernels::matmul(m, &[0.0; 63], 1, &mut [0.0; 2]);
}

/// Column counts of 1 to 9 blocks reach every unrolled and remainder path of the kernels.
#[test]
fn every_column_block_count() {
    let mut rng = Rng(5);
    for dtype in DType::ALL {
        let max_blocks = if dtype.block_size() == 256 { 3 } else { 9 };
        for k in 1..=max_blocks {
            let (rows, cols) = (5, dtype.block_size().max(16) * k);
            let w = random_weights(dtype, rows, cols, &mut rng);
            let m = QMatrix::new(dtype, rows, cols, &w).unwrap();
            for n in [1, 2, 5] {
                let x = random_activations(n, cols, &mut rng);
                let (expected, tol, _) = reference(dtype, &w, rows, cols, &x, n);
                for isa in levels() {
                    let mut y = vec![f32::NAN; n * rows];
                    matmul_with_isa(isa, m, &x, n, &mut y);
                    for i in 0..y.len() {
                        assert!(
                            (y[i] as f64 - expected[i]).abs() <= tol[i],
                            "{dtype} {isa} cols={cols} n={n} out {i}: {} vs {}",
                            y[i],
                            expected[i]
                        );
                    }
                }
            }
        }
    }
}

/// Float rows longer than the kernels' column blocks are summed over several passes.
#[test]
fn long_float_rows() {
    let mut rng = Rng(9);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let (rows, cols) = (7, 2 * 1024 + 37);
        let w = random_weights(dtype, rows, cols, &mut rng);
        let m = QMatrix::new(dtype, rows, cols, &w).unwrap();
        for n in [1, 4, 5, 9] {
            let x = random_activations(n, cols, &mut rng);
            let (expected, tol, _) = reference(dtype, &w, rows, cols, &x, n);
            for isa in levels() {
                let mut y = vec![f32::NAN; n * rows];
                matmul_with_isa(isa, m, &x, n, &mut y);
                for i in 0..y.len() {
                    assert!(
                        (y[i] as f64 - expected[i]).abs() <= tol[i],
                        "{dtype} {isa} n={n} out {i}: {} vs {}",
                        y[i],
                        expected[i]
                    );
                }
            }
        }
    }
}

/// A token's outputs do not depend on which other tokens share the call. Within one kernel
/// path they are bit-identical: a batch equals the same tokens split into two batches. Below
/// [`Isa::Amx`] one token alone also takes the same path; at `Amx` many tokens go to the tiles,
/// which sum in another order, so one token alone matches within f32 rounding.
#[test]
fn batching_does_not_change_results() {
    let mut rng = Rng(13);
    for dtype in DType::ALL {
        let (rows, cols) = (37, dtype.block_size().max(32) * 5);
        let w = random_weights(dtype, rows, cols, &mut rng);
        let m = QMatrix::new(dtype, rows, cols, &w).unwrap();
        let n = 70;
        let x = random_activations(n, cols, &mut rng);
        let (_, _, magnitude) = reference(dtype, &w, rows, cols, &x, n);
        for isa in levels() {
            let mut batched = vec![0f32; n * rows];
            matmul_with_isa(isa, m, &x, n, &mut batched);
            let mut split = vec![0f32; n * rows];
            let (first, second) = split.split_at_mut(33 * rows);
            matmul_with_isa(isa, m, &x[..33 * cols], 33, first);
            matmul_with_isa(isa, m, &x[33 * cols..], n - 33, second);
            assert_eq!(
                batched,
                split,
                "{dtype} {isa}: batch of {n} vs 33 + {}",
                n - 33
            );
            for t in 0..n {
                let mut single = vec![0f32; rows];
                matmul_with_isa(isa, m, &x[t * cols..(t + 1) * cols], 1, &mut single);
                let batched = &batched[t * rows..(t + 1) * rows];
                if isa < Isa::Amx {
                    assert_eq!(batched, &single[..], "{dtype} {isa} token {t}");
                } else {
                    for (r, (&b, &s)) in batched.iter().zip(&single).enumerate() {
                        assert!(
                            (b - s).abs() as f64 <= 2e-5 * magnitude[t * rows + r] + 1e-6,
                            "{dtype} {isa} token {t} row {r}: {b} batched vs {s} alone"
                        );
                    }
                }
            }
        }
    }
}

/// Shapes around the AMX tile sizes (16 tokens × 16 rows): token counts on either side of tile
/// multiples, row counts leaving partial row tiles, column counts with odd block counts (the
/// tiles take blocks in pairs). Every level against the scalar kernels.
#[test]
fn many_token_products_at_tile_edges() {
    let mut rng = Rng(17);
    for dtype in [
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ] {
        let block = dtype.block_size();
        let col_counts = if block == 256 {
            vec![256, 512, 768]
        } else {
            vec![32, 96, 160, 576]
        };
        for (rows, cols) in [1, 15, 33, 50].into_iter().zip(col_counts.iter().cycle()) {
            let cols = *cols;
            let w = random_weights(dtype, rows, cols, &mut rng);
            let m = QMatrix::new(dtype, rows, cols, &w).unwrap();
            for n in [15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 100, 130] {
                let x = random_activations(n, cols, &mut rng);
                let (expected, tol, magnitude) = reference(dtype, &w, rows, cols, &x, n);
                let mut scalar = vec![0f32; n * rows];
                matmul_with_isa(Isa::Scalar, m, &x, n, &mut scalar);
                for isa in levels().into_iter().filter(|&i| i != Isa::Scalar) {
                    let mut y = vec![f32::NAN; n * rows];
                    matmul_with_isa(isa, m, &x, n, &mut y);
                    for i in 0..y.len() {
                        assert!(
                            (y[i] - scalar[i]).abs() as f64 <= 2e-5 * magnitude[i] + 1e-6
                                && (y[i] as f64 - expected[i]).abs() <= tol[i],
                            "{dtype} {isa} rows={rows} cols={cols} n={n} out {i}: {} vs scalar {} \
                             and reference {}",
                            y[i],
                            scalar[i],
                            expected[i]
                        );
                    }
                }
            }
        }
    }
}

/// A transformer-sized product (a SmolLM2 FFN down projection over a 512-token prefill): many
/// token tiles and 48 blocks per row, on every level against the scalar kernels.
#[test]
fn prefill_sized_product() {
    let mut rng = Rng(19);
    for dtype in [DType::Q4_1, DType::Q8_0, DType::Q4_K] {
        let (rows, cols, n) = (40, 1536, 512);
        let w = random_weights(dtype, rows, cols, &mut rng);
        let m = QMatrix::new(dtype, rows, cols, &w).unwrap();
        let x = random_activations(n, cols, &mut rng);
        let (_, _, magnitude) = reference(dtype, &w, rows, cols, &x, n);
        let mut scalar = vec![0f32; n * rows];
        matmul_with_isa(Isa::Scalar, m, &x, n, &mut scalar);
        for isa in levels().into_iter().filter(|&i| i != Isa::Scalar) {
            let mut y = vec![f32::NAN; n * rows];
            matmul_with_isa(isa, m, &x, n, &mut y);
            let worst = y
                .iter()
                .zip(&scalar)
                .zip(&magnitude)
                .map(|((&a, &b), &mag)| (a - b).abs() as f64 / mag)
                .fold(0f64, f64::max);
            assert!(
                worst <= 2e-5,
                "{dtype} {isa}: worst relative deviation {worst:e}"
            );
            eprintln!("{dtype} {isa}: worst deviation {worst:e} of Σ|w·x|");
        }
    }
}
