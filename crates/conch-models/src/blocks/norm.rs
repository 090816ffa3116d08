//! Row normalization with a learned weight: RMS norm, or layer norm with an optional bias.

use conch_kernels::ops;

/// `x · w / rms(x)`, or `(x - mean) / std · w + b` for a layer norm. Gemma's `(1 + w)` weights are
/// stored already offset (see [`Norm::new`]).
pub struct Norm {
    weight: Vec<f32>,
    eps: f32,
    kind: NormKind,
}

enum NormKind {
    Rms,
    Layer { bias: Option<Vec<f32>> },
}

impl Norm {
    /// An RMS norm. `offset` is added to every weight: 1.0 for Hugging Face Gemma checkpoints, whose
    /// norm computes `x · (1 + w)` (llama.cpp's converter already adds it to GGUF files), else 0.0.
    pub fn new(mut weight: Vec<f32>, eps: f32, offset: f32) -> Norm {
        if offset != 0.0 {
            weight.iter_mut().for_each(|w| *w += offset);
        }
        Norm {
            weight,
            eps,
            kind: NormKind::Rms,
        }
    }

    /// A layer norm (mean and variance), with `bias` added when given (of the weight's length).
    pub fn layer_norm(weight: Vec<f32>, bias: Option<Vec<f32>>, eps: f32) -> Norm {
        Norm {
            weight,
            eps,
            kind: NormKind::Layer { bias },
        }
    }

    pub fn dim(&self) -> usize {
        self.weight.len()
    }

    /// Normalizes every `dim()`-long row of `x` in place.
    pub fn forward(&self, x: &mut [f32]) {
        match &self.kind {
            NormKind::Rms => ops::rms_norm(x, &self.weight, self.eps),
            NormKind::Layer { bias } => ops::layer_norm(x, &self.weight, bias.as_deref(), self.eps),
        }
    }
}
