//! AMX int8 tile kernels for products of many tokens (prefill), at [`Isa::Amx`](crate::cpu::Isa).
//!
//! `tdpbssd` multiplies a 16×K tile of signed bytes by a K×16 one into 16×16 i32 sums. Weight
//! blocks carry their own scales, so one multiply covers one 32-value block (K = 32): tile A is
//! 16 tokens' 8-bit activations of the block, read in place from [`QuantActs`] (row stride
//! `cols`); tile B is 16 weight rows' values of the block, decoded to signed bytes once per task
//! into the layout the instruction wants (four consecutive values of one row per 32-bit lane) and
//! reused for every token tile. The i32 sums are scaled in f32 per block,
//! `d_w·d_x·Σ(w·q) + m_w·d_x·Σq`, 16 weight rows per vector. The activations are the same 8-bit
//! blocks the other levels use, so results equal the scalar kernels up to f32 summation order.
//!
//! Tile registers are named in the `asm!` blocks (Rust has no operand class for them); their
//! contents live across blocks because the compiler never touches them. Each task loads the tile
//! configuration before its first multiply and releases the tiles when done.

use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::RefCell;

use super::act::{ActFormat, QuantActs};
use super::scalar::k4_scales_mins;
use super::x86::{f16_at, load256, prefetch, Block32, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0};
use super::{QMatrix, SyncPtr};
use crate::pool;
use crate::quant::DType;

/// Tokens (tile rows) and weight rows (tile columns) per multiply.
const TILE: usize = 16;
/// Fewer tokens than this go to the AVX-512 kernels: the weight decode would not pay off.
pub(super) const MIN_TOKENS: usize = 16;

/// Whether weights of `dtype` have a tile kernel. Q6_K's 16-value sub-blocks (and the other
/// types) stay on the AVX-512 kernels.
pub(super) fn handles(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::Q4_0
            | DType::Q4_1
            | DType::Q5_0
            | DType::Q5_1
            | DType::Q8_0
            | DType::Q4_K
            | DType::Q5_K
    )
}

/// Whether weights of `dtype` have a minimum per (sub-)block.
fn has_min(dtype: DType) -> bool {
    matches!(dtype, DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K)
}

/// The 64-byte tile configuration `ldtilecfg` reads (palette 1).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    /// tmm0-1 and tmm6-7: i32 sums (16 tokens × 16 rows); tmm2-3: activations (16 tokens × 32
    /// bytes); tmm4-5: weights (8 groups of 4 values × 16 rows).
    fn new() -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut set = |tile: usize, rows: u8, bytes_per_row: u16| {
            c[16 + 2 * tile..18 + 2 * tile].copy_from_slice(&bytes_per_row.to_le_bytes());
            c[48 + tile] = rows;
        };
        set(0, 16, 64);
        set(1, 16, 64);
        set(2, 16, 32);
        set(3, 16, 32);
        set(4, 8, 64);
        set(5, 8, 64);
        set(6, 16, 64);
        set(7, 16, 64);
        TileConfig(c)
    }
}

/// Per-call activation data in the form the tiles want, reused between calls.
#[derive(Default)]
struct Prepared {
    /// `d_x` per token and 32-value block (`[token][block]`, tokens padded to whole tiles).
    dx: Vec<f32>,
    /// `d_x·Σq` per token and 32-value block.
    dsum: Vec<f32>,
    /// The 8-bit activations of the last, partial token tile, padded with zero tokens.
    tail: Vec<i8>,
}

/// Decoded weights of one task's 16 rows, reused between tasks of a thread.
#[derive(Default)]
struct Decoded {
    /// Per block: 8 groups × 16 rows × 4 values (tile B's layout).
    values: Vec<u32>,
    /// Per block: the 16 rows' scales.
    scale: Vec<f32>,
    /// Per block: the 16 rows' minimums (weights with a minimum).
    min: Vec<f32>,
    /// Per block: the 16 rows' values, row-major, before the transpose into `values`.
    staging: Vec<__m256i>,
}

/// `y = x·wᵀ` for `n >= MIN_TOKENS` tokens whose activations are `acts` (quantized to `format`
/// for `w.dtype`), with `w.dtype` one [`handles`] accepts.
pub(super) fn matmul(w: QMatrix<'_>, acts: &QuantActs, format: ActFormat, n: usize, y: &mut [f32]) {
    debug_assert!(handles(w.dtype) && n >= MIN_TOKENS);
    thread_local! {
        static PREPARED: RefCell<Prepared> = RefCell::default();
    }
    PREPARED.with(|cell| {
        let mut fresh = Prepared::default();
        let mut borrowed = cell.try_borrow_mut();
        let prep = borrowed.as_deref_mut().unwrap_or(&mut fresh);
        prepare(prep, acts, format, n, w.cols);
        let (rows, blocks) = (w.rows, w.cols / 32);
        let threads = pool::threads();
        let y_ptr = SyncPtr(y.as_mut_ptr());
        let prep = &*prep;
        pool::parallel_for(rows.div_ceil(TILE), |group| {
            thread_local! {
                static DECODED: RefCell<Decoded> = RefCell::default();
            }
            DECODED.with(|d| {
                let mut d = d.borrow_mut();
                d.values.resize(blocks * 8 * TILE, 0);
                d.scale.resize(blocks * TILE, 0.0);
                d.min.resize(blocks * TILE, 0.0);
                let r0 = group * TILE;
                let count = TILE.min(rows - r0);
                // The weights this thread probably decodes next (tasks are handed out in order),
                // fetched while the tiles work on these: decoding is otherwise bound by memory.
                let next_r0 = (r0 + threads * TILE).min(rows);
                let next_rows = TILE.min(rows - next_r0);
                let next = &w.data[next_r0 * w.row_bytes()..(next_r0 + next_rows) * w.row_bytes()];
                // SAFETY: the CPU has AVX-512 and AMX (this is only reached at `Isa::Amx`); rows
                // `r0..r0 + count` are whole rows of `w`; `y` is `n × rows` and this task
                // writes only its own rows' outputs; `acts` holds `n` rows of `w.cols` values.
                unsafe {
                    decode(w, r0, count, &mut d);
                    let multiply = if has_min(w.dtype) {
                        multiply::<true>
                    } else {
                        multiply::<false>
                    };
                    multiply(
                        &d,
                        acts,
                        prep,
                        n,
                        w.cols,
                        rows,
                        r0,
                        count,
                        next,
                        y_ptr.get(),
                    );
                }
            })
        });
    })
}

/// Fills `prep` with the per-block activation scales and the padded last token tile.
fn prepare(prep: &mut Prepared, acts: &QuantActs, format: ActFormat, n: usize, cols: usize) {
    let blocks = cols / 32;
    let padded = n.next_multiple_of(TILE);
    prep.dx.clear();
    prep.dx.resize(padded * blocks, 0.0);
    prep.dsum.clear();
    prep.dsum.resize(padded * blocks, 0.0);
    for t in 0..n {
        let a = acts.row(t);
        let (dx, dsum) = (
            &mut prep.dx[t * blocks..(t + 1) * blocks],
            &mut prep.dsum[t * blocks..(t + 1) * blocks],
        );
        for b in 0..blocks {
            // SAFETY: row `t` has `blocks` block scales and sums (Q8x32), or `blocks / 8`
            // scales and `2·blocks` 16-value sums (Q8x256).
            let (d, sum) = unsafe {
                match format {
                    ActFormat::Q8x32 => (*a.d.add(b), *a.sums.add(b)),
                    ActFormat::Q8x256 => (
                        *a.d.add(b / 8),
                        *a.bsums.add(2 * b) as i32 + *a.bsums.add(2 * b + 1) as i32,
                    ),
                }
            };
            dx[b] = d;
            dsum[b] = d * sum as f32;
        }
    }
    prep.tail.clear();
    let full = n / TILE * TILE;
    if full < n {
        prep.tail.resize(TILE * cols, 0);
        for t in full..n {
            // SAFETY: row `t` holds `cols` 8-bit values.
            let q = unsafe { std::slice::from_raw_parts(acts.row(t).qs, cols) };
            prep.tail[(t - full) * cols..(t - full + 1) * cols].copy_from_slice(q);
        }
    }
}

/// Decodes rows `r0..r0 + count` of `w` into `d` (rows beyond `count` as zeros).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn decode(w: QMatrix<'_>, r0: usize, count: usize, d: &mut Decoded) {
    match w.dtype {
        DType::Q4_0 => decode_rows::<1>(w, r0, count, d, Q4_0::BYTES, block32::<Q4_0>),
        DType::Q4_1 => decode_rows::<1>(w, r0, count, d, Q4_1::BYTES, block32::<Q4_1>),
        DType::Q5_0 => decode_rows::<1>(w, r0, count, d, Q5_0::BYTES, block32::<Q5_0>),
        DType::Q5_1 => decode_rows::<1>(w, r0, count, d, Q5_1::BYTES, block32::<Q5_1>),
        DType::Q8_0 => decode_rows::<1>(w, r0, count, d, Q8_0::BYTES, block32::<Q8_0>),
        DType::Q4_K => decode_rows::<8>(w, r0, count, d, 144, block_qk4::<false>),
        DType::Q5_K => decode_rows::<8>(w, r0, count, d, 176, block_qk4::<true>),
        other => unreachable!("no tile kernel for {other}"),
    }
}

/// One weight block of `K` 32-value (sub-)blocks as (signed values, scales, minimums).
type Blocks<const K: usize> = ([__m256i; K], [f32; K], [f32; K]);

/// Decodes the rows with `one` (`bytes` per block of `K` sub-blocks), one whole row after the
/// other so the weights stream sequentially, staging the values row-major; then transposes each
/// sub-block's 16 rows into tile B's layout.
#[inline(always)]
unsafe fn decode_rows<const K: usize>(
    w: QMatrix<'_>,
    r0: usize,
    count: usize,
    d: &mut Decoded,
    bytes: usize,
    one: unsafe fn(*const u8) -> Blocks<K>,
) {
    let row_bytes = w.row_bytes();
    let blocks = w.cols / 32;
    d.staging.resize(blocks * TILE, _mm256_setzero_si256());
    for i in 0..TILE {
        if i >= count {
            for blk in 0..blocks {
                d.staging[blk * TILE + i] = _mm256_setzero_si256();
                d.scale[blk * TILE + i] = 0.0;
                d.min[blk * TILE + i] = 0.0;
            }
            continue;
        }
        let row = w.data.as_ptr().add((r0 + i) * row_bytes);
        for s in 0..blocks / K {
            let p = row.add(s * bytes);
            prefetch(p, bytes);
            let (values, scales, mins) = one(p);
            for k in 0..K {
                let blk = s * K + k;
                d.staging[blk * TILE + i] = values[k];
                d.scale[blk * TILE + i] = scales[k];
                d.min[blk * TILE + i] = mins[k];
            }
        }
    }
    for blk in 0..blocks {
        let rows = &*(d.staging.as_ptr().add(blk * TILE) as *const [__m256i; TILE]);
        transpose(rows, d.values.as_mut_ptr().add(blk * 8 * TILE));
    }
}

/// `_mm512_permutex2var_epi32` indices transposing 16 rows of 8 dwords (held two rows per
/// register) into 8 registers of 16 dwords, in three stages that each pair registers differing
/// in one index bit. Stages 1 and 2 swap that register bit with a lane bit; stage 3 puts row `i`
/// in lane `i` and group [`bitrev3`]`(c)` in register `c`. Checked at compile time: every
/// element is found where an index points.
const TRANSPOSE: [[[i32; 16]; 8]; 3] = transpose_indices();

/// The 3-bit reversal of `c`.
const fn bitrev3(c: usize) -> usize {
    (c & 1) << 2 | (c & 2) | (c >> 2)
}

const fn transpose_indices() -> [[[i32; 16]; 8]; 3] {
    // state[register][lane]: the element (row i, group g) held there, as 8·i + g.
    let mut state = [[0usize; 16]; 8];
    let mut r = 0;
    while r < 8 {
        let mut l = 0;
        while l < 16 {
            state[r][l] = (2 * r + l / 8) * 8 + l % 8;
            l += 1;
        }
        r += 1;
    }
    let mut tables = [[[0i32; 16]; 8]; 3];
    let mut stage = 0;
    while stage < 3 {
        let reg_bit = 1 << stage;
        let mut next = [[0usize; 16]; 8];
        let mut c = 0;
        while c < 8 {
            let (a, b) = (c & !reg_bit, c | reg_bit);
            let mut l = 0;
            while l < 16 {
                let want = if stage < 2 {
                    let lane_bit = 1 << (2 - stage);
                    let src = if l & lane_bit != 0 { b } else { a };
                    let lane = if c & reg_bit != 0 {
                        l | lane_bit
                    } else {
                        l & !lane_bit
                    };
                    state[src][lane]
                } else {
                    8 * l + bitrev3(c)
                };
                let mut index = -1;
                let mut k = 0;
                while k < 16 {
                    if state[a][k] == want {
                        index = k as i32;
                    }
                    if state[b][k] == want {
                        index = 16 + k as i32;
                    }
                    k += 1;
                }
                assert!(index >= 0, "transpose stage misses an element");
                tables[stage][c][l] = index;
                next[c][l] = want;
                l += 1;
            }
            c += 1;
        }
        state = next;
        stage += 1;
    }
    tables
}

/// Writes the 16 rows of 32 values `rows` as tile B: 8 groups × 16 rows × 4 values at `out`.
#[inline(always)]
unsafe fn transpose(rows: &[__m256i; TILE], out: *mut u32) {
    let mut regs: [__m512i; 8] = std::array::from_fn(|j| {
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(rows[2 * j]), rows[2 * j + 1])
    });
    for (stage, table) in TRANSPOSE.iter().enumerate() {
        let bit = 1 << stage;
        regs = std::array::from_fn(|c| {
            _mm512_permutex2var_epi32(
                regs[c & !bit],
                _mm512_loadu_si512(table[c].as_ptr() as _),
                regs[c | bit],
            )
        });
    }
    for (c, reg) in regs.iter().enumerate() {
        _mm512_storeu_si512(out.add(bitrev3(c) * TILE) as _, *reg);
    }
}

#[inline(always)]
unsafe fn block32<B: Block32>(p: *const u8) -> Blocks<1> {
    let (u, scale, min) = B::decode(p);
    let v = if B::OFFSET_SHIFT > 0 {
        _mm256_sub_epi8(u, _mm256_set1_epi8(1 << B::OFFSET_SHIFT))
    } else {
        u
    };
    ([v], [scale], [if B::HAS_MIN { min } else { 0.0 }])
}

/// A Q4_K block (or Q5_K with `FIVE`): each 32-value sub-block `k` has scale `d·sc_k` and
/// minimum `-dmin·m_k`.
#[inline(always)]
unsafe fn block_qk4<const FIVE: bool>(blk: *const u8) -> Blocks<8> {
    let qs_at = if FIVE { 48 } else { 16 };
    let (m4, bit4) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(0x10));
    let (scale, min) = (f16_at(blk), f16_at(blk.add(2)));
    let sm = k4_scales_mins(&*(blk.add(4) as *const [u8; 12]));
    // Q5_K: bit j of qh byte l is the fifth bit of value l of sub-block j.
    let mut high = if FIVE {
        load256(blk.add(16))
    } else {
        _mm256_setzero_si256()
    };
    let mut values = [_mm256_setzero_si256(); 8];
    for j in 0..4 {
        let v = load256(blk.add(qs_at + 32 * j));
        let mut lo = _mm256_and_si256(v, m4);
        let mut hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        if FIVE {
            lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(high, 4), bit4));
            hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(high, 3), bit4));
            high = _mm256_srli_epi16(high, 2);
        }
        values[2 * j] = lo;
        values[2 * j + 1] = hi;
    }
    (
        values,
        std::array::from_fn(|k| scale * sm[k] as f32),
        std::array::from_fn(|k| -min * sm[8 + k] as f32),
    )
}

/// The products of the decoded rows `d` (rows `r0..r0 + count` of the matrix) with every token;
/// `MIN`: the weights have minimums. Prefetches `next` into L2 along the way.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn multiply<const MIN: bool>(
    d: &Decoded,
    acts: &QuantActs,
    prep: &Prepared,
    n: usize,
    cols: usize,
    rows: usize,
    r0: usize,
    count: usize,
    next: &[u8],
    y: *mut f32,
) {
    let mut fetched = 0;
    let blocks = cols / 32;
    let config = TileConfig::new();
    // SAFETY (all asm below): the configuration is fully written before `ldtilecfg` reads it
    // (the asm may read memory, so the stores happen first); tile loads read 16 rows of 32
    // bytes at stride `cols` inside the activations, or 8 rows of 64 bytes of one decoded
    // block; stores write the 1 KB `sums` buffers.
    asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
    let mut sums = [[0i32; TILE * TILE]; 2];
    let mask: __mmask16 = if count == TILE {
        0xFFFF
    } else {
        (1u16 << count) - 1
    };
    for t0 in (0..n).step_by(TILE) {
        let a_base: *const i8 = if t0 + TILE <= n {
            acts.row(t0).qs
        } else {
            prep.tail.as_ptr()
        };
        let mut acc = [_mm512_setzero_ps(); TILE];
        // Blocks go in pairs through two sets of sum tiles (tmm0-1, tmm6-7): the multiplies of
        // pair p + 1 are issued before the sums of pair p are stored and scaled, so the tile
        // unit works while the vector units scale.
        macro_rules! multiply_pair {
            ($b:expr, $c0:literal, $c1:literal) => {{
                let (a0, w0) = (a_base.add($b * 32), d.values.as_ptr().add($b * 8 * TILE));
                asm!(
                    "tileloadd tmm2, [{a0} + {stride}]",
                    "tileloadd tmm4, [{w0} + {wstride}]",
                    "tileloadd tmm3, [{a1} + {stride}]",
                    "tileloadd tmm5, [{w1} + {wstride}]",
                    concat!("tilezero ", $c0),
                    concat!("tilezero ", $c1),
                    concat!("tdpbssd ", $c0, ", tmm2, tmm4"),
                    concat!("tdpbssd ", $c1, ", tmm3, tmm5"),
                    a0 = in(reg) a0,
                    a1 = in(reg) a0.add(32),
                    stride = in(reg) cols,
                    w0 = in(reg) w0,
                    w1 = in(reg) w0.add(8 * TILE),
                    wstride = in(reg) 64usize,
                    options(nostack, readonly),
                );
            }};
        }
        macro_rules! store_pair {
            ($c0:literal, $c1:literal) => {
                asm!(
                    concat!("tilestored [{s0} + {stride}], ", $c0),
                    concat!("tilestored [{s1} + {stride}], ", $c1),
                    s0 = in(reg) sums[0].as_mut_ptr(),
                    s1 = in(reg) sums[1].as_mut_ptr(),
                    stride = in(reg) 64usize,
                    options(nostack),
                )
            };
        }
        let mut scale_block = |s: &[i32; TILE * TILE], blk: usize| {
            let scale = _mm512_loadu_ps(d.scale.as_ptr().add(blk * TILE));
            let min = _mm512_loadu_ps(d.min.as_ptr().add(blk * TILE));
            for (m, acc) in acc.iter_mut().enumerate() {
                let at = (t0 + m) * blocks + blk;
                let dots = _mm512_cvtepi32_ps(_mm512_loadu_si512(s.as_ptr().add(m * TILE) as _));
                let mut v = _mm512_fmadd_ps(
                    _mm512_mul_ps(dots, scale),
                    _mm512_set1_ps(*prep.dx.get_unchecked(at)),
                    *acc,
                );
                if MIN {
                    v = _mm512_fmadd_ps(min, _mm512_set1_ps(*prep.dsum.get_unchecked(at)), v);
                }
                *acc = v;
            }
        };
        let pairs = blocks / 2;
        if pairs > 0 {
            multiply_pair!(0, "tmm0", "tmm1");
        }
        for p in 0..pairs {
            if fetched < next.len() {
                _mm_prefetch::<_MM_HINT_T1>(next.as_ptr().add(fetched) as *const i8);
                fetched += 64;
            }
            let first_set = p % 2 == 0;
            if p + 1 < pairs {
                if first_set {
                    multiply_pair!(2 * p + 2, "tmm6", "tmm7");
                } else {
                    multiply_pair!(2 * p + 2, "tmm0", "tmm1");
                }
            }
            if first_set {
                store_pair!("tmm0", "tmm1");
            } else {
                store_pair!("tmm6", "tmm7");
            }
            scale_block(&sums[0], 2 * p);
            scale_block(&sums[1], 2 * p + 1);
        }
        if blocks % 2 == 1 {
            let b = blocks - 1;
            asm!(
                "tileloadd tmm2, [{a0} + {stride}]",
                "tileloadd tmm4, [{w0} + {wstride}]",
                "tilezero tmm0",
                "tdpbssd tmm0, tmm2, tmm4",
                "tilestored [{s0} + {wstride}], tmm0",
                a0 = in(reg) a_base.add(b * 32),
                stride = in(reg) cols,
                w0 = in(reg) d.values.as_ptr().add(b * 8 * TILE),
                wstride = in(reg) 64usize,
                s0 = in(reg) sums[0].as_mut_ptr(),
                options(nostack),
            );
            scale_block(&sums[0], b);
        }
        for (m, acc) in acc.iter().enumerate().take(n - t0) {
            _mm512_mask_storeu_ps(y.add((t0 + m) * rows + r0), mask, *acc);
        }
    }
    asm!("tilerelease", options(nostack, nomem));
}
