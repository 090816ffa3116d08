//! Activations quantized to 8 bits, once per matrix product, for integer dot products with
//! quantized weights (what ggml does with its Q8_0 and Q8_K blocks).
//!
//! Each block of `block` values gets a scale `d = max|x| / 127` and values `q = round(x / d)`
//! in -127..=127. Alongside: for 32-value blocks the integer block sum `Σq` (weights with an
//! offset or a minimum need it), for 256-value blocks the integer sums of every 16 values (the
//! granularity of K-quant sub-block scales and minimums).

use super::SyncPtr;
use crate::pool;

/// The block format activations are quantized to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ActFormat {
    /// 32-value blocks, for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 weights.
    Q8x32,
    /// 256-value blocks, for K-quant weights.
    Q8x256,
}

impl ActFormat {
    pub(crate) fn block(self) -> usize {
        match self {
            ActFormat::Q8x32 => 32,
            ActFormat::Q8x256 => 256,
        }
    }
}

/// Quantized activations of `n` rows of `cols` values. Buffers are reused between calls.
#[derive(Default)]
pub(crate) struct QuantActs {
    cols: usize,
    block: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    /// `Σq` per block (32-value blocks only).
    sums: Vec<i32>,
    /// `Σq` per 16 values (256-value blocks only).
    bsums: Vec<i16>,
}

/// One activation row as the kernels read it: raw pointers into a [`QuantActs`] (or, for float
/// weights, `x` into the f32 activations), valid for the duration of a matrix product.
#[derive(Clone, Copy)]
pub(crate) struct Act {
    pub qs: *const i8,
    pub d: *const f32,
    pub sums: *const i32,
    pub bsums: *const i16,
    pub x: *const f32,
}

impl Act {
    pub(crate) fn float(x: &[f32]) -> Act {
        let null = std::ptr::null();
        Act {
            qs: null as _,
            d: null as _,
            sums: null as _,
            bsums: null as _,
            x: x.as_ptr(),
        }
    }
}

impl QuantActs {
    /// Quantizes `x` (`n × cols`, `cols` a multiple of the format's block) in place of the
    /// previous contents; with `simd`, by AVX-512 code where the CPU has it (same results).
    pub(crate) fn quantize(
        &mut self,
        format: ActFormat,
        x: &[f32],
        n: usize,
        cols: usize,
        simd: bool,
    ) {
        debug_assert_eq!(x.len(), n * cols);
        debug_assert_eq!(cols % format.block(), 0);
        self.cols = cols;
        self.block = format.block();
        let blocks = n * cols / self.block;
        self.qs.resize(n * cols, 0);
        self.d.resize(blocks, 0.0);
        match format {
            ActFormat::Q8x32 => {
                self.sums.resize(blocks, 0);
                self.bsums.clear();
            }
            ActFormat::Q8x256 => {
                self.bsums.resize(n * cols / 16, 0);
                self.sums.clear();
            }
        }
        let qs = SyncPtr(self.qs.as_mut_ptr());
        let d = SyncPtr(self.d.as_mut_ptr());
        let sums = SyncPtr(self.sums.as_mut_ptr());
        let bsums = SyncPtr(self.bsums.as_mut_ptr());
        let per_row = cols / self.block;
        #[cfg(target_arch = "x86_64")]
        let simd = simd && crate::cpu::supports(crate::cpu::Isa::Avx512);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = simd;
        let quantize_row = |t: usize| {
            // SAFETY: row `t` owns disjoint ranges of every buffer, each sized above for `n` rows.
            let (qs, d) = unsafe {
                (
                    std::slice::from_raw_parts_mut(qs.get().add(t * cols), cols),
                    std::slice::from_raw_parts_mut(d.get().add(t * per_row), per_row),
                )
            };
            let xs = &x[t * cols..(t + 1) * cols];
            match format {
                ActFormat::Q8x32 => {
                    let sums = unsafe {
                        std::slice::from_raw_parts_mut(sums.get().add(t * per_row), per_row)
                    };
                    #[cfg(target_arch = "x86_64")]
                    if simd {
                        // SAFETY: AVX-512 is supported (checked above); slices as below.
                        return unsafe { x86::row_q8x32(xs, qs, d, sums) };
                    }
                    for (b, (xb, qb)) in
                        xs.chunks_exact(32).zip(qs.chunks_exact_mut(32)).enumerate()
                    {
                        d[b] = quantize_block(xb, qb);
                        sums[b] = qb.iter().map(|&q| q as i32).sum::<i32>();
                    }
                }
                ActFormat::Q8x256 => {
                    let bsums = unsafe {
                        std::slice::from_raw_parts_mut(bsums.get().add(t * cols / 16), cols / 16)
                    };
                    #[cfg(target_arch = "x86_64")]
                    if simd {
                        // SAFETY: AVX-512 is supported (checked above); slices as below.
                        return unsafe { x86::row_q8x256(xs, qs, d, bsums) };
                    }
                    for (b, (xb, qb)) in xs
                        .chunks_exact(256)
                        .zip(qs.chunks_exact_mut(256))
                        .enumerate()
                    {
                        d[b] = quantize_block(xb, qb);
                    }
                    for (s, q16) in bsums.iter_mut().zip(qs.chunks_exact(16)) {
                        *s = q16.iter().map(|&q| q as i16).sum();
                    }
                }
            }
        };
        if n >= 4 {
            pool::parallel_for(n, quantize_row);
        } else {
            (0..n).for_each(quantize_row);
        }
    }

    /// Pointers to row `t`.
    pub(crate) fn row(&self, t: usize) -> Act {
        let per_row = self.cols / self.block;
        Act {
            qs: self.qs[t * self.cols..].as_ptr(),
            d: self.d[t * per_row..].as_ptr(),
            sums: if self.sums.is_empty() {
                std::ptr::null()
            } else {
                self.sums[t * per_row..].as_ptr()
            },
            bsums: if self.bsums.is_empty() {
                std::ptr::null()
            } else {
                self.bsums[t * self.cols / 16..].as_ptr()
            },
            x: std::ptr::null(),
        }
    }
}

/// Quantizes one block symmetrically to -127..=127, returning its scale.
fn quantize_block(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let d = amax / 127.0;
    let id = 1.0 / d;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer (ties to even) in plain f32
    // arithmetic, which vectorizes; `f32::round` is a library call without SSE4.1.
    const ROUNDER: f32 = 12_582_912.0;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = ((v * id + ROUNDER) - ROUNDER) as i8;
    }
    d
}

/// AVX-512 versions of the row quantizers, giving the same bytes, scales and sums: the scale,
/// its inverse and the products are the same f32 operations, and the conversion rounds to
/// nearest even like [`quantize_block`].
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Quantizes 32·k values (`per_block` 32-value chunks per scale) starting at `x`, storing the
    /// bytes at `q` and returning the scale; `chunk(i, qv)` sees each chunk's 16-lane halves.
    #[inline(always)]
    unsafe fn block(
        x: *const f32,
        q: *mut i8,
        len: usize,
        mut chunk: impl FnMut(usize, __m512i),
    ) -> f32 {
        let mut amax = _mm512_setzero_ps();
        for i in (0..len).step_by(16) {
            amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(x.add(i))));
        }
        let amax = _mm512_reduce_max_ps(amax);
        if amax == 0.0 {
            std::ptr::write_bytes(q, 0, len);
            for i in (0..len).step_by(16) {
                chunk(i / 16, _mm512_setzero_si512());
            }
            return 0.0;
        }
        let d = amax / 127.0;
        let id = _mm512_set1_ps(1.0 / d);
        for i in (0..len).step_by(16) {
            let v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x.add(i)), id));
            _mm_storeu_si128(q.add(i) as *mut __m128i, _mm512_cvtepi32_epi8(v));
            chunk(i / 16, v);
        }
        d
    }

    /// # Safety
    /// AVX-512 F/BW/VL; `qs.len() == xs.len() == 32·d.len() == 32·sums.len()`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn row_q8x32(xs: &[f32], qs: &mut [i8], d: &mut [f32], sums: &mut [i32]) {
        for b in 0..d.len() {
            let mut sum = _mm512_setzero_si512();
            d[b] = block(
                xs.as_ptr().add(32 * b),
                qs.as_mut_ptr().add(32 * b),
                32,
                |_, v| sum = _mm512_add_epi32(sum, v),
            );
            sums[b] = _mm512_reduce_add_epi32(sum);
        }
    }

    /// # Safety
    /// AVX-512 F/BW/VL; `qs.len() == xs.len() == 256·d.len() == 16·bsums.len()`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn row_q8x256(xs: &[f32], qs: &mut [i8], d: &mut [f32], bsums: &mut [i16]) {
        for (b, d) in d.iter_mut().enumerate() {
            let bs = bsums.as_mut_ptr().add(16 * b);
            *d = block(
                xs.as_ptr().add(256 * b),
                qs.as_mut_ptr().add(256 * b),
                256,
                |i, v| *bs.add(i) = _mm512_reduce_add_epi32(v) as i16,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..2 * 512)
            .map(|i| {
                // One all-zero 256-value block.
                if (256..512).contains(&i) {
                    0.0
                } else {
                    ((i * 37 % 101) as f32 - 50.0) * 0.013
                }
            })
            .collect();
        for format in [ActFormat::Q8x32, ActFormat::Q8x256] {
            let mut acts = QuantActs::default();
            acts.quantize(format, &x, 2, 512, false);
            let mut simd = QuantActs::default();
            simd.quantize(format, &x, 2, 512, true);
            assert_eq!(acts.qs, simd.qs, "{format:?}");
            assert_eq!(acts.d, simd.d, "{format:?}");
            assert_eq!(acts.sums, simd.sums, "{format:?}");
            assert_eq!(acts.bsums, simd.bsums, "{format:?}");
            let b = format.block();
            for (i, &v) in x.iter().enumerate() {
                let d = acts.d[i / b];
                let back = acts.qs[i] as f32 * d;
                assert!(
                    (back - v).abs() <= d * 0.5 + 1e-6,
                    "{format:?} value {i}: {v} came back as {back}"
                );
            }
            if format == ActFormat::Q8x256 {
                for (k, &s) in acts.bsums.iter().enumerate() {
                    assert_eq!(
                        s,
                        acts.qs[k * 16..(k + 1) * 16]
                            .iter()
                            .map(|&q| q as i16)
                            .sum::<i16>()
                    );
                }
            }
        }
    }
}
