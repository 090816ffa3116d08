//! RMS normalization with a learned weight.

use conch_kernels::ops;

/// `x · w / rms(x)`. Gemma's `(1 + w)` weights are stored already offset (see [`RmsNorm::new`]).
pub struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    /// `offset` is added to every weight: 1.0 for Hugging Face Gemma checkpoints, whose norm computes
    /// `x · (1 + w)` (llama.cpp's converter already adds it to GGUF files), else 0.0.
    pub fn new(mut weight: Vec<f32>, eps: f32, offset: f32) -> RmsNorm {
        if offset != 0.0 {
            weight.iter_mut().for_each(|w| *w += offset);
        }
        RmsNorm { weight, eps }
    }

    pub fn dim(&self) -> usize {
        self.weight.len()
    }

    /// Normalizes every `dim()`-long row of `x` in place.
    pub fn forward(&self, x: &mut [f32]) {
        ops::rms_norm(x, &self.weight, self.eps);
    }
}
