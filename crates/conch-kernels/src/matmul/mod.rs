//! Matrix products of a weight matrix in any [`DType`] with f32 activations.
//!
//! How a product is computed depends on the weight type:
//! - F32, F16, BF16: f32 dot products (fused multiply-add in the SIMD kernels).
//! - Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q4_K, Q5_K, Q6_K: the activations are quantized once per
//!   call to 8-bit blocks ([`act`]), then each weight block is dotted with them in integers and
//!   scaled in f32, as llama.cpp does. This differs from the f32 product of the dequantized
//!   weights by the activation rounding: each activation moves by at most half a step,
//!   `max|x_block| / 254`.
//! - Every other type (Q2_K, Q3_K, Q8_1, Q8_K, MXFP4): each weight row is dequantized to f32 and
//!   dotted in f32.
//!
//! At [`Isa::Amx`], products of many tokens with 32-value-block weights (and Q4_K, Q5_K) run on
//! the AMX tiles ([`amx`]); fewer tokens and other types use the AVX-512 kernels.
//!
//! Work is split over output rows (and blocks of tokens when there are many) across the
//! [`pool`]. Several tokens are computed together so each weight row is decoded once per tile.
//! [`Isa::Scalar`] kernels are the reference the SIMD kernels are tested against.

mod act;
#[cfg(target_arch = "x86_64")]
mod amx;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::cell::RefCell;

use crate::cpu::{self, Isa};
use crate::pool;
use crate::quant::{dequantize, DType, QuantError};
use act::{Act, ActFormat, QuantActs};

/// A row-major weight matrix: `rows` rows of `cols` values, each row stored as `dtype` blocks.
/// This is both ggml's and PyTorch's `[out_features, in_features]` layout.
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> QMatrix<'a> {
    pub fn new(dtype: DType, rows: usize, cols: usize, data: &'a [u8]) -> Result<Self, QuantError> {
        let row_bytes = dtype.bytes_for(cols).ok_or(QuantError::PartialBlock {
            dtype,
            len: cols,
            block: dtype.block_size(),
        })?;
        let expected = row_bytes.checked_mul(rows).ok_or(QuantError::ByteLength {
            dtype,
            expected: usize::MAX,
            got: data.len(),
        })?;
        if data.len() != expected {
            return Err(QuantError::ByteLength {
                dtype,
                expected,
                got: data.len(),
            });
        }
        Ok(QMatrix {
            dtype,
            rows,
            cols,
            data,
        })
    }

    pub fn row_bytes(&self) -> usize {
        self.dtype
            .bytes_for(self.cols)
            .expect("checked in QMatrix::new")
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

/// A kernel computing the dots of one weight row with up to [`TILE`] activation rows.
///
/// # Safety
/// `row` points to one weight row of `cols` values in the kernel's type; each `acts[i]` points to
/// an activation row of `cols` values in the format the kernel expects; `out.len() == acts.len() <= TILE`.
pub(crate) type RowKernel = unsafe fn(row: *const u8, cols: usize, acts: &[Act], out: &mut [f32]);

/// Activation rows computed together by one kernel call.
const TILE: usize = 4;
/// Activation rows one task covers when a product has many.
const TOKEN_BLOCK: usize = 64;
/// Bytes of weights one task covers when it loops over several token tiles (kept in L2).
const CHUNK_BYTES: usize = 128 << 10;

/// A raw pointer that tasks may share; each task writes a disjoint part of the pointee.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T>(pub *mut T);
// SAFETY: users only write disjoint elements from different threads.
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// The pointer (a method, so closures capture the whole `SyncPtr` rather than its field).
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// How one weight type is multiplied at one kernel level.
#[derive(Clone, Copy)]
enum Plan {
    /// Float weights dotted with the f32 activations.
    Float(RowKernel),
    /// Quantized weights dotted with activations quantized to `ActFormat`.
    Quantized(ActFormat, RowKernel),
    /// Rows dequantized to f32, then dotted with the given F32 kernel.
    Dequantize(RowKernel),
}

fn act_format(dtype: DType) -> Option<ActFormat> {
    match dtype {
        DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 => {
            Some(ActFormat::Q8x32)
        }
        DType::Q4_K | DType::Q5_K | DType::Q6_K => Some(ActFormat::Q8x256),
        _ => None,
    }
}

fn kernel(isa: Isa, dtype: DType) -> Option<RowKernel> {
    match isa {
        Isa::Scalar => scalar::kernel(dtype),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Amx => x86::kernel(isa, dtype),
        #[cfg(not(target_arch = "x86_64"))]
        _ => scalar::kernel(dtype),
    }
}

fn plan(isa: Isa, dtype: DType) -> Plan {
    let f32_kernel = kernel(isa, DType::F32).expect("every level has an F32 kernel");
    match (kernel(isa, dtype), act_format(dtype)) {
        (Some(k), Some(format)) => Plan::Quantized(format, k),
        (Some(k), None) => Plan::Float(k),
        (None, _) => Plan::Dequantize(f32_kernel),
    }
}

/// `y[t][r] = sum_c w[r][c] * x[t][c]` for `n` activation rows `x` (`n × cols`), writing `y` (`n × rows`).
/// Runs at the level [`cpu::isa`] selects, on the [`pool`].
///
/// Panics if the shapes disagree or `w.data` is not `rows` whole rows (see [`QMatrix::new`]).
pub fn matmul(w: QMatrix<'_>, x: &[f32], n: usize, y: &mut [f32]) {
    matmul_with_isa(cpu::isa(), w, x, n, y)
}

/// [`matmul`] at kernel level `isa` (lowered to the best level this CPU supports).
pub fn matmul_with_isa(isa: Isa, w: QMatrix<'_>, x: &[f32], n: usize, y: &mut [f32]) {
    let isa = isa.min(cpu::best_isa());
    let row_bytes = w.dtype.bytes_for(w.cols);
    assert!(
        row_bytes.is_some(),
        "matmul: {} rows of {} values are not whole blocks",
        w.dtype,
        w.cols
    );
    assert_eq!(
        Some(w.data.len()),
        row_bytes.and_then(|b| b.checked_mul(w.rows)),
        "matmul: {} weight bytes for {}×{}",
        w.dtype,
        w.rows,
        w.cols
    );
    assert_eq!(x.len(), n * w.cols, "matmul: activation shape");
    assert_eq!(y.len(), n * w.rows, "matmul: output shape");
    if n == 0 || w.rows == 0 {
        return;
    }
    if w.cols == 0 {
        y.fill(0.0);
        return;
    }
    match plan(isa, w.dtype) {
        Plan::Quantized(format, k) => {
            thread_local! {
                static ACTS: RefCell<QuantActs> = RefCell::default();
            }
            ACTS.with(|cell| {
                let mut fresh = QuantActs::default();
                let mut borrowed = cell.try_borrow_mut();
                let acts = borrowed.as_deref_mut().unwrap_or(&mut fresh);
                acts.quantize(format, x, n, w.cols, isa >= Isa::Avx512);
                #[cfg(target_arch = "x86_64")]
                if isa == Isa::Amx && n >= amx::MIN_TOKENS && amx::handles(w.dtype) {
                    return amx::matmul(w, acts, format, n, y);
                }
                run(w, n, y, k, Walk::Rows, |t| acts.row(t));
            })
        }
        Plan::Float(k) => run(w, n, y, k, Walk::ColumnBlocks, |t| {
            Act::float(&x[t * w.cols..])
        }),
        Plan::Dequantize(k) => run(w, n, y, k, Walk::Dequantize, |t| {
            Act::float(&x[t * w.cols..])
        }),
    }
}

/// How a task walks its rows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Whole rows against each token tile (quantized weights: activations are bytes, so a
    /// tile of them stays in L1 for any row length).
    Rows,
    /// Rows in blocks of [`FLOAT_COLUMN_BLOCK`] columns, partial dots summed into `y`, so a tile
    /// of f32 activations stays in L1.
    ColumnBlocks,
    /// Each row dequantized to f32 once, then dotted with every token.
    Dequantize,
}

/// Columns per pass over float weights: four activation rows of them take 16 KB.
const FLOAT_COLUMN_BLOCK: usize = 1024;

/// Splits the product into tasks of (row chunk × token block) and runs `k` over them.
fn run(
    w: QMatrix<'_>,
    n: usize,
    y: &mut [f32],
    k: RowKernel,
    walk: Walk,
    act_row: impl Fn(usize) -> Act + Sync,
) {
    let (rows, cols, row_bytes) = (w.rows, w.cols, w.row_bytes());
    let threads = pool::threads();
    let token_block = n.min(TOKEN_BLOCK);
    let token_blocks = n.div_ceil(token_block);
    // Enough row chunks for every thread to get several (balancing uneven progress), and for many
    // tokens chunks small enough to stay in L2 while the token tiles loop over them.
    let mut chunk = rows.div_ceil(threads * 4);
    if n > TILE {
        let chunk_row_bytes = if walk == Walk::ColumnBlocks {
            row_bytes.min(FLOAT_COLUMN_BLOCK * 4)
        } else {
            row_bytes
        };
        chunk = chunk.min((CHUNK_BYTES / chunk_row_bytes.max(1)).max(1));
    }
    let chunk = chunk.max(1);
    let row_chunks = rows.div_ceil(chunk);
    let y_ptr = SyncPtr(y.as_mut_ptr());

    pool::parallel_for(row_chunks * token_blocks, |task| {
        let (rc, tb) = (task % row_chunks, task / row_chunks);
        let (r0, r1) = (rc * chunk, ((rc + 1) * chunk).min(rows));
        let (t0, t1) = (tb * token_block, ((tb + 1) * token_block).min(n));
        let mut acts = [Act::float(&[]); TOKEN_BLOCK];
        for (t, a) in (t0..t1).zip(acts.iter_mut()) {
            *a = act_row(t);
        }
        let acts = &acts[..t1 - t0];
        let mut out = [0f32; TILE];
        // Dots of `len` values of `row` with the token tile starting at token `t0 + first`,
        // stored into `y` or (`accumulate`) added to it.
        let mut dot_row =
            |r: usize, row: *const u8, len: usize, first: usize, tile: &[Act], accumulate: bool| {
                let out = &mut out[..tile.len()];
                // SAFETY: `row` points to `len` values of a row (checked in `matmul_with_isa` or
                // dequantized just now) in the layout `k` expects, and `tile` holds rows prepared for it.
                unsafe { k(row, len, tile, out) };
                for (i, &v) in out.iter().enumerate() {
                    // SAFETY: `(t, r)` is inside `y` and written by this task only.
                    let dst = unsafe { &mut *y_ptr.get().add((t0 + first + i) * rows + r) };
                    *dst = if accumulate { *dst + v } else { v };
                }
            };
        match walk {
            Walk::Rows => {
                for (i, tile) in acts.chunks(TILE).enumerate() {
                    for r in r0..r1 {
                        dot_row(
                            r,
                            w.data[r * row_bytes..].as_ptr(),
                            cols,
                            i * TILE,
                            tile,
                            false,
                        );
                    }
                }
            }
            Walk::ColumnBlocks => {
                let value_bytes = w.dtype.type_size();
                for c0 in (0..cols).step_by(FLOAT_COLUMN_BLOCK) {
                    let len = FLOAT_COLUMN_BLOCK.min(cols - c0);
                    for (i, tile) in acts.chunks(TILE).enumerate() {
                        let mut shifted = [Act::float(&[]); TILE];
                        for (s, a) in shifted.iter_mut().zip(tile) {
                            *s = Act {
                                x: a.x.wrapping_add(c0),
                                ..*a
                            };
                        }
                        for r in r0..r1 {
                            let row = w.data[r * row_bytes + c0 * value_bytes..].as_ptr();
                            dot_row(r, row, len, i * TILE, &shifted[..tile.len()], c0 > 0);
                        }
                    }
                }
            }
            Walk::Dequantize => {
                thread_local! {
                    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
                }
                ROW.with(|buf| {
                    let mut buf = buf.borrow_mut();
                    buf.resize(cols, 0.0);
                    for r in r0..r1 {
                        if let Err(e) = dequantize(w.dtype, w.row(r), &mut buf) {
                            panic!("matmul: cannot dequantize {} weights: {e}", w.dtype);
                        }
                        for (i, tile) in acts.chunks(TILE).enumerate() {
                            dot_row(r, buf.as_ptr().cast(), cols, i * TILE, tile, false);
                        }
                    }
                })
            }
        }
    });
}
