//! Element-wise and row-wise f32 operations used by transformer layers.
//!
//! Row-wise operations take a buffer of whole rows (`x.len()` a multiple of the row length given by
//! the weight or the table) and treat each row on its own. Reductions accumulate in f32 lanes the
//! compiler can vectorize; results agree with PyTorch's f32 kernels to rounding.

/// Sum of squares of `x`, accumulated in 8 independent lanes so the loop vectorizes.
fn sum_of_squares(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    lanes.iter().sum::<f32>() + tail.iter().map(|v| v * v).sum::<f32>()
}

/// Dot product of two equal-length slices, accumulated in 8 lanes.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: length mismatch");
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for ((l, x), y) in lanes.iter_mut().zip(xa).zip(xb) {
            *l += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `y += a * x`.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy: length mismatch");
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv += a * xv;
    }
}

/// RMS normalization of each row of `x` (row length `weight.len()`), in place:
/// `x * weight / sqrt(mean(x²) + eps)`. Gemma's `(1 + w)` form is this with `1 + w` as the weight.
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) {
    let dim = weight.len();
    assert!(
        dim > 0 && x.len() % dim == 0,
        "rms_norm: buffer is not whole rows"
    );
    for row in x.chunks_exact_mut(dim) {
        let inv = 1.0 / (sum_of_squares(row) / dim as f32 + eps).sqrt();
        for (v, w) in row.iter_mut().zip(weight) {
            *v = (*v * inv) * w;
        }
    }
}

/// Layer normalization of each row of `x` (row length `weight.len()`), in place, with optional bias.
pub fn layer_norm(x: &mut [f32], weight: &[f32], bias: Option<&[f32]>, eps: f32) {
    let dim = weight.len();
    assert!(
        dim > 0 && x.len() % dim == 0,
        "layer_norm: buffer is not whole rows"
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), dim, "layer_norm: bias length");
    }
    for row in x.chunks_exact_mut(dim) {
        let mean = row.iter().sum::<f32>() / dim as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (i, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) * inv * weight[i] + bias.map_or(0.0, |b| b[i]);
        }
    }
}

/// Numerically stable softmax of one row, in place. A row of all `-inf` becomes all zeros.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        x.fill(0.0);
        return;
    }
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `x / (1 + e^-x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU with the tanh approximation (PyTorch's `gelu(approximate="tanh")`, HF's `gelu_pytorch_tanh`).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
}

/// `gate = silu(gate) * up`, the SwiGLU feed-forward product.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul: length mismatch");
    for (g, u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

/// `gate = gelu_tanh(gate) * up`, the GeGLU feed-forward product.
pub fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gelu_tanh_mul: length mismatch");
    for (g, u) in gate.iter_mut().zip(up) {
        *g = gelu_tanh(*g) * u;
    }
}

/// `dst += src`.
pub fn add(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "add: length mismatch");
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// `dst *= src`, element-wise.
pub fn mul(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "mul: length mismatch");
    for (d, s) in dst.iter_mut().zip(src) {
        *d *= s;
    }
}

/// `x *= factor`.
pub fn scale(x: &mut [f32], factor: f32) {
    for v in x.iter_mut() {
        *v *= factor;
    }
}

/// Adds `bias` to every row of `x` (row length `bias.len()`).
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    assert!(
        !bias.is_empty() && x.len() % bias.len() == 0,
        "add_bias: buffer is not whole rows"
    );
    for row in x.chunks_exact_mut(bias.len()) {
        add(row, bias);
    }
}

/// `x = cap * tanh(x / cap)`: Gemma's logit soft-capping.
pub fn softcap(x: &mut [f32], cap: f32) {
    for v in x.iter_mut() {
        *v = cap * (*v / cap).tanh();
    }
}

/// How the rotated pairs of a head are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pair `(i, i + d/2)`: GPT-NeoX, and Hugging Face's `rotate_half` for every architecture.
    Neox,
    /// Pair `(2i, 2i + 1)`: the original/GPT-J layout, which llama.cpp uses for `llama` GGUF files
    /// (its converter permutes the Q/K weights into this layout).
    Interleaved,
}

/// Frequency scaling applied on top of `base^(-2i/d)`, as in Hugging Face's `rope_parameters`.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f32,
    },
    /// Llama 3.1: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_context: f32,
    },
    /// YaRN: per-dimension blend of interpolated and extrapolated frequencies plus an attention factor.
    Yarn {
        factor: f32,
        original_context: f32,
        beta_fast: f32,
        beta_slow: f32,
        /// Explicit cos/sin multiplier; derived from `factor` (and mscale) when `None`.
        attention_factor: Option<f32>,
        mscale: Option<f32>,
        mscale_all_dim: Option<f32>,
        truncate: bool,
    },
    /// LongRoPE as Phi-3.5-MoE runs it in transformers: frequencies divided by the per-frequency
    /// `short_factor` (its `long_factor` goes unused there) and cos/sin multiplied by
    /// `short_mscale` — by `long_mscale` in a forward pass that reaches past `original_context`
    /// (see [`RopeScaling::long_context_factor`]).
    LongRope {
        short_factor: Vec<f32>,
        original_context: usize,
        short_mscale: f32,
        long_mscale: f32,
    },
}

impl RopeScaling {
    /// `(original context, multiplier)`: a forward pass whose last position is at or past the
    /// original context multiplies cos/sin by this instead of the usual attention factor.
    pub fn long_context_factor(&self) -> Option<(usize, f32)> {
        match self {
            RopeScaling::LongRope {
                original_context,
                long_mscale,
                ..
            } => Some((*original_context, *long_mscale)),
            _ => None,
        }
    }
}

/// Inverse frequencies (`rotary_dim / 2` of them) and the cos/sin multiplier ("attention factor")
/// for rotating `rotary_dim` dimensions with base `theta` under `scaling`.
pub fn rope_frequencies(rotary_dim: usize, theta: f32, scaling: &RopeScaling) -> (Vec<f32>, f32) {
    let dim = rotary_dim as f64;
    let base = theta as f64;
    let plain: Vec<f64> = (0..rotary_dim / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f64 / dim))
        .collect();
    let (inv_freq, attention_factor): (Vec<f64>, f64) = match *scaling {
        RopeScaling::None => (plain, 1.0),
        RopeScaling::LongRope {
            ref short_factor,
            short_mscale,
            ..
        } => (
            plain
                .iter()
                .zip(short_factor)
                .map(|(f, s)| f / *s as f64)
                .collect(),
            short_mscale as f64,
        ),
        RopeScaling::Linear { factor } => (plain.iter().map(|f| f / factor as f64).collect(), 1.0),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context,
        } => {
            let (factor, low, high, ctx) = (
                factor as f64,
                low_freq_factor as f64,
                high_freq_factor as f64,
                original_context as f64,
            );
            let low_freq_wavelen = ctx / low;
            let high_freq_wavelen = ctx / high;
            let scaled = plain
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_freq_wavelen {
                        f
                    } else if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        let smooth = (ctx / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect();
            (scaled, 1.0)
        }
        RopeScaling::Yarn {
            factor,
            original_context,
            beta_fast,
            beta_slow,
            attention_factor,
            mscale,
            mscale_all_dim,
            truncate,
        } => {
            let factor = factor as f64;
            let get_mscale = |scale: f64, m: f64| {
                if scale <= 1.0 {
                    1.0
                } else {
                    0.1 * m * scale.ln() + 1.0
                }
            };
            let attention = match (attention_factor, mscale, mscale_all_dim) {
                (Some(a), _, _) => a as f64,
                (None, Some(m), Some(m_all)) if m != 0.0 && m_all != 0.0 => {
                    get_mscale(factor, m as f64) / get_mscale(factor, m_all as f64)
                }
                _ => get_mscale(factor, 1.0),
            };
            let ctx = original_context as f64;
            let correction_dim = |rotations: f64| {
                dim * (ctx / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln())
            };
            let (mut low, mut high) = (
                correction_dim(beta_fast as f64),
                correction_dim(beta_slow as f64),
            );
            if truncate {
                low = low.floor();
                high = high.ceil();
            }
            let low = low.max(0.0);
            let mut high = high.min(dim - 1.0);
            if low == high {
                high += 0.001;
            }
            let scaled = plain
                .iter()
                .enumerate()
                .map(|(i, &f)| {
                    let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    let extrapolation_weight = 1.0 - ramp;
                    (f / factor) * (1.0 - extrapolation_weight) + f * extrapolation_weight
                })
                .collect();
            (scaled, attention)
        }
    };
    (
        inv_freq.into_iter().map(|f| f as f32).collect(),
        attention_factor as f32,
    )
}

/// Fills `cos` and `sin` (one entry per inverse frequency) for `position`, multiplied by
/// `attention_factor`. The angle is `position * inv_freq` in f32, as transformers computes it.
pub fn rope_cos_sin(
    position: usize,
    inv_freq: &[f32],
    attention_factor: f32,
    cos: &mut [f32],
    sin: &mut [f32],
) {
    assert!(
        cos.len() == inv_freq.len() && sin.len() == inv_freq.len(),
        "rope_cos_sin: table lengths"
    );
    let p = position as f32;
    for ((c, s), f) in cos.iter_mut().zip(sin.iter_mut()).zip(inv_freq) {
        let angle = p * f;
        *c = angle.cos() * attention_factor;
        *s = angle.sin() * attention_factor;
    }
}

/// Rotates one head vector `x` in place with the tables from [`rope_cos_sin`]. The first
/// `2 * cos.len()` dimensions are rotated (partial rotary leaves the rest untouched).
pub fn apply_rope(x: &mut [f32], cos: &[f32], sin: &[f32], style: RopeStyle) {
    let half = cos.len();
    assert!(
        sin.len() == half && 2 * half <= x.len(),
        "apply_rope: table longer than the head"
    );
    match style {
        RopeStyle::Neox => {
            let (lo, hi) = x[..2 * half].split_at_mut(half);
            for i in 0..half {
                let (a, b) = (lo[i], hi[i]);
                lo[i] = a * cos[i] - b * sin[i];
                hi[i] = b * cos[i] + a * sin[i];
            }
        }
        RopeStyle::Interleaved => {
            for (i, pair) in x[..2 * half].chunks_exact_mut(2).enumerate() {
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * cos[i] - b * sin[i];
                pair[1] = b * cos[i] + a * sin[i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn rms_norm_matches_definition() {
        let mut x = vec![1.0, -2.0, 3.0, 0.5, 4.0, -1.0];
        let w = [0.5, 2.0, -1.0];
        rms_norm(&mut x, &w, 1e-6);
        let ms = (1.0f32 + 4.0 + 9.0) / 3.0;
        let inv = 1.0 / (ms + 1e-6).sqrt();
        assert!(close(x[0], 0.5 * inv, 1e-6));
        assert!(close(x[1], -4.0 * inv, 1e-6));
        assert!(close(x[2], -3.0 * inv, 1e-6));
        let ms2 = (0.25f32 + 16.0 + 1.0) / 3.0;
        assert!(close(x[4], 8.0 / (ms2 + 1e-6).sqrt(), 1e-6));
    }

    #[test]
    fn layer_norm_zero_mean_unit_variance() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        layer_norm(&mut x, &[1.0; 4], Some(&[0.5; 4]), 0.0);
        let mean: f32 = x.iter().map(|v| v - 0.5).sum::<f32>() / 4.0;
        let var: f32 = x.iter().map(|v| (v - 0.5) * (v - 0.5)).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
    }

    #[test]
    fn softmax_sums_to_one_and_handles_masked_rows() {
        let mut x = vec![1.0, 2.0, f32::NEG_INFINITY, 3.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(x[2], 0.0);
        assert!(close(x[3] / x[1], 1f32.exp(), 1e-6));
        let mut masked = vec![f32::NEG_INFINITY; 3];
        softmax(&mut masked);
        assert_eq!(masked, vec![0.0; 3]);
    }

    #[test]
    fn activations_match_closed_forms() {
        assert!(close(silu(1.0), 1.0 / (1.0 + (-1f32).exp()), 1e-7));
        assert_eq!(silu(0.0), 0.0);
        // Reference values of torch.nn.functional.gelu(x, approximate="tanh").
        assert!(close(gelu_tanh(1.0), 0.841_192, 1e-6));
        assert!(close(gelu_tanh(-2.0), -0.045_402_3, 1e-5));
    }

    #[test]
    fn rope_styles_rotate_their_pairs() {
        let inv = [1.0f32, 0.5];
        let (mut c, mut s) = ([0f32; 2], [0f32; 2]);
        rope_cos_sin(1, &inv, 1.0, &mut c, &mut s);
        let mut neox = [1.0, 0.0, 0.0, 1.0];
        apply_rope(&mut neox, &c, &s, RopeStyle::Neox);
        // Pairs (0,2) and (1,3): (1,0) turned by 1 rad, (0,1) turned by 0.5 rad.
        assert!(close(neox[0], 1f32.cos(), 1e-6) && close(neox[2], 1f32.sin(), 1e-6));
        assert!(close(neox[1], -(0.5f32.sin()), 1e-6) && close(neox[3], 0.5f32.cos(), 1e-6));
        let mut inter = [1.0, 0.0, 0.0, 1.0];
        apply_rope(&mut inter, &c, &s, RopeStyle::Interleaved);
        assert!(close(inter[0], 1f32.cos(), 1e-6) && close(inter[1], 1f32.sin(), 1e-6));
        assert!(close(inter[2], -(0.5f32.sin()), 1e-6) && close(inter[3], 0.5f32.cos(), 1e-6));
    }

    #[test]
    fn rope_rotation_preserves_norm_and_partial_rotary_leaves_tail() {
        let (inv, _) = rope_frequencies(4, 10000.0, &RopeScaling::None);
        let (mut c, mut s) = ([0f32; 2], [0f32; 2]);
        rope_cos_sin(7, &inv, 1.0, &mut c, &mut s);
        let mut x = [0.3, -1.2, 0.7, 2.0, 5.0, 6.0];
        let before: f32 = x[..4].iter().map(|v| v * v).sum();
        apply_rope(&mut x, &c, &s, RopeStyle::Neox);
        let after: f32 = x[..4].iter().map(|v| v * v).sum();
        assert!(close(before, after, 1e-5));
        assert_eq!(&x[4..], &[5.0, 6.0]);
    }

    #[test]
    fn rope_frequency_scalings() {
        let (plain, a) = rope_frequencies(8, 10000.0, &RopeScaling::None);
        assert_eq!(a, 1.0);
        assert!(close(plain[0], 1.0, 1e-7) && close(plain[1], 10000f32.powf(-0.25), 1e-6));
        let (linear, _) = rope_frequencies(8, 10000.0, &RopeScaling::Linear { factor: 4.0 });
        assert!(plain
            .iter()
            .zip(&linear)
            .all(|(p, l)| close(*l, p / 4.0, 1e-6)));
        // Llama 3 with a 32-token original context: wavelengths below 8 are kept, above 32 divided.
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_context: 32.0,
        };
        let (l3, _) = rope_frequencies(8, 10000.0, &scaling);
        for (p, s) in plain.iter().zip(&l3) {
            let wavelen = 2.0 * std::f32::consts::PI / p;
            if wavelen < 8.0 {
                assert_eq!(p, s);
            } else if wavelen > 32.0 {
                assert!(close(*s, p / 8.0, 1e-6));
            } else {
                assert!(*s < *p && *s > p / 8.0);
            }
        }
        let yarn = RopeScaling::Yarn {
            factor: 4.0,
            original_context: 64.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: None,
            mscale: None,
            mscale_all_dim: None,
            truncate: true,
        };
        let (y, att) = rope_frequencies(8, 10000.0, &yarn);
        assert!(close(att, 0.1 * 4f32.ln() + 1.0, 1e-6));
        assert_eq!(y[0], plain[0]);
        assert!(close(y[3], plain[3] / 4.0, 1e-6));
    }

    #[test]
    fn softcap_bounds_values() {
        let mut x = vec![100.0, -10.0, 0.1];
        softcap(&mut x, 5.0);
        assert!(x[0] <= 5.0 && x[0] > 4.99);
        assert!(close(x[1], -5.0 * 2f32.tanh(), 1e-6));
        assert!(close(x[2], 5.0 * (0.02f32).tanh(), 1e-6));
    }
}
