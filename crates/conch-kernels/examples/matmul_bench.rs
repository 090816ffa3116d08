//! Micro-benchmark of the matrix kernels.
//!
//! `cargo run --release -p conch-kernels --example matmul_bench [TYPE...]`
//!
//! For each weight type: GEMV (one token) over a ~100 MB matrix, reported as GB/s of weights
//! streamed next to the copy bandwidth of a plain memcpy measured in the same run; and batches
//! of 64 and 512 tokens over a 4096×4096 matrix, reported as GFLOP/s. "cached GEMV" repeats the
//! one-token product on a 1 MB slice of the matrix (L2-resident): the kernel's compute rate
//! without the DRAM limit. `CONCH_ISA` and
//! `CONCH_THREADS` select the kernel level and thread count.

use std::hint::black_box;
use std::time::{Duration, Instant};

use conch_kernels::{cpu, matmul, pool, DType, QMatrix};

/// Runs `f` until `budget` has passed (at least twice, after one warm-up) and returns the best time.
fn best_time(budget: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    let mut best = Duration::MAX;
    let mut runs = 0;
    while runs < 2 || start.elapsed() < budget {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        runs += 1;
    }
    best
}

/// Weights with random bytes and every f16 scale field of a block set to a small finite value.
fn weights(dtype: DType, rows: usize, cols: usize) -> Vec<u8> {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut data: Vec<u8> = (0..dtype.bytes_for(cols).unwrap() * rows)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let small = half::f16::from_f32(0.01).to_le_bytes();
    let scale_offsets: &[usize] = match dtype {
        DType::F16 | DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
        DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q2_K => &[80, 82],
        DType::Q3_K => &[108],
        DType::Q6_K => &[208],
        _ => &[],
    };
    for blk in data.chunks_exact_mut(dtype.type_size()) {
        for &o in scale_offsets {
            blk[o..o + 2].copy_from_slice(&small);
        }
        match dtype {
            DType::F32 => blk.copy_from_slice(&0.5f32.to_le_bytes()),
            DType::BF16 => blk.copy_from_slice(&[0, 0x3f]),
            _ => {}
        }
    }
    data
}

fn memcpy_bandwidth(bytes: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    let chunk = bytes.div_ceil(pool::threads());
    let dst_ptr = dst.as_mut_ptr() as usize;
    let t = best_time(Duration::from_millis(500), || {
        pool::parallel_for(pool::threads(), |i| {
            let (a, b) = (i * chunk, ((i + 1) * chunk).min(bytes));
            // SAFETY: each task copies into its own disjoint range of `dst`.
            let out = unsafe { std::slice::from_raw_parts_mut((dst_ptr as *mut u8).add(a), b - a) };
            out.copy_from_slice(&src[a..b]);
        });
        black_box(&dst);
    });
    bytes as f64 / t.as_secs_f64() / 1e9
}

fn main() {
    let requested: Vec<DType> = std::env::args()
        .skip(1)
        .filter_map(|a| DType::from_name(&a))
        .collect();
    let types = if requested.is_empty() {
        vec![
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::Q8_0,
            DType::Q4_0,
            DType::Q4_1,
            DType::Q5_0,
            DType::Q4_K,
            DType::Q6_K,
            DType::Q5_K,
        ]
    } else {
        requested
    };
    println!(
        "kernel level {}, {} threads, features {:?}",
        cpu::isa(),
        pool::threads(),
        cpu::features()
    );
    let dispatch = best_time(Duration::from_millis(200), || {
        for _ in 0..1000 {
            pool::parallel_for(pool::threads(), |i| {
                black_box(i);
            });
        }
    });
    println!(
        "pool dispatch (empty parallel_for over all threads): {:.2} µs",
        dispatch.as_secs_f64() * 1e3
    );
    let small = weights(DType::Q8_0, 576, 576);
    let small = QMatrix::new(DType::Q8_0, 576, 576, &small).unwrap();
    let (sx, mut sy) = (vec![0.5f32; 576], vec![0f32; 576]);
    let t = best_time(Duration::from_millis(200), || {
        for _ in 0..100 {
            matmul(small, &sx, 1, &mut sy);
        }
    });
    println!(
        "576×576 Q8_0 GEMV (a SmolLM2-135M projection): {:.1} µs",
        t.as_secs_f64() * 1e4
    );
    let copy = memcpy_bandwidth(256 << 20);
    println!("memcpy: {copy:.1} GB/s (bytes copied per second, all threads)");
    println!(
        "{:<6} {:>10} {:>9} {:>8} {:>12} {:>13} {:>14}",
        "type", "GEMV GB/s", "% memcpy", "GEMV ms", "cached GB/s", "n=64 GFLOP/s", "n=512 GFLOP/s"
    );
    let cols = 4096;
    for dtype in types {
        let rows = (100 << 20) / dtype.bytes_for(cols).unwrap();
        let w = weights(dtype, rows, cols);
        let m = QMatrix::new(dtype, rows, cols, &w).unwrap();
        let x: Vec<f32> = (0..512 * cols)
            .map(|i| ((i % 97) as f32 - 48.0) / 48.0)
            .collect();
        let mut y = vec![0f32; 512 * rows];
        let t = best_time(Duration::from_secs(1), || {
            matmul(m, &x[..cols], 1, &mut y[..rows])
        });
        let gbs = w.len() as f64 / t.as_secs_f64() / 1e9;

        let cached_rows = (1 << 20) / m.row_bytes();
        let cached = QMatrix {
            rows: cached_rows,
            data: &w[..cached_rows * m.row_bytes()],
            ..m
        };
        let tc = best_time(Duration::from_millis(300), || {
            for _ in 0..20 {
                matmul(cached, &x[..cols], 1, &mut y[..cached_rows]);
            }
        });
        let cached_gbs = 20.0 * cached.data.len() as f64 / tc.as_secs_f64() / 1e9;

        let square = QMatrix {
            rows: 4096,
            data: &w[..4096 * m.row_bytes()],
            ..m
        };
        let mut gflops = Vec::new();
        for n in [64, 512] {
            let t = best_time(Duration::from_secs(1), || {
                matmul(square, &x[..n * cols], n, &mut y[..n * 4096])
            });
            gflops.push(2.0 * 4096.0 * cols as f64 * n as f64 / t.as_secs_f64() / 1e9);
        }
        println!(
            "{:<6} {:>10.1} {:>8.0}% {:>8.2} {:>12.1} {:>13.1} {:>14.1}",
            dtype.name(),
            gbs,
            100.0 * gbs / copy,
            t.as_secs_f64() * 1e3,
            cached_gbs,
            gflops[0],
            gflops[1]
        );
    }
}
