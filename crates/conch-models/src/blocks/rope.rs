//! Rotary position embedding tables for one kind of layer.

use crate::config::RopeConfig;
use crate::ModelError;
use conch_kernels::ops::{self, RopeStyle};

/// Inverse frequencies and layout for rotating the heads of one layer kind.
pub struct Rope {
    inv_freq: Vec<f32>,
    attention_factor: f32,
    /// `(original context, multiplier)` for passes reaching past the original context (LongRoPE).
    long_context: Option<(usize, f32)>,
    style: RopeStyle,
}

impl Rope {
    /// `freq_divisors` (llama.cpp's `rope_freqs` tensor, one per frequency) divide the frequencies
    /// after `config`'s scaling.
    pub fn new(config: &RopeConfig, freq_divisors: Option<&[f32]>) -> Result<Rope, ModelError> {
        if let ops::RopeScaling::LongRope { short_factor, .. } = &config.scaling {
            if short_factor.len() != config.rotary_dim / 2 {
                return Err(ModelError::Config(format!(
                    "longrope short_factor has {} values for {} frequencies",
                    short_factor.len(),
                    config.rotary_dim / 2
                )));
            }
        }
        let (mut inv_freq, attention_factor) =
            ops::rope_frequencies(config.rotary_dim, config.theta, &config.scaling);
        if let Some(divisors) = freq_divisors {
            if divisors.len() != inv_freq.len() {
                return Err(ModelError::Config(format!(
                    "rope frequency factors: {} values for {} frequencies",
                    divisors.len(),
                    inv_freq.len()
                )));
            }
            for (f, d) in inv_freq.iter_mut().zip(divisors) {
                *f /= d;
            }
        }
        Ok(Rope {
            inv_freq,
            attention_factor,
            long_context: config.scaling.long_context_factor(),
            style: config.style,
        })
    }

    /// Rotates every head of `x` (`n` rows of `heads × head_dim`), row `t` being at position
    /// `start + t`. These are one forward pass's rows of a sequence: LongRoPE picks its multiplier
    /// by how far the pass reaches, as transformers does.
    pub fn apply(&self, x: &mut [f32], n: usize, start: usize, head_dim: usize) {
        let attention_factor = match self.long_context {
            Some((original, long)) if start + n > original => long,
            _ => self.attention_factor,
        };
        let half = self.inv_freq.len();
        let (mut cos, mut sin) = (vec![0f32; half], vec![0f32; half]);
        let row = x.len() / n.max(1);
        for (t, r) in x.chunks_exact_mut(row).enumerate() {
            ops::rope_cos_sin(
                start + t,
                &self.inv_freq,
                attention_factor,
                &mut cos,
                &mut sin,
            );
            for head in r.chunks_exact_mut(head_dim) {
                ops::apply_rope(head, &cos, &sin, self.style);
            }
        }
    }
}
