//! A linear layer over a weight matrix kept in its file's element type.

use crate::weights::{check_matrix, qmatrix};
use crate::ModelError;
use conch_formats::Tensor;
use conch_kernels::{matmul, ops};

/// `y = x·Wᵀ (+ b)` with `W` stored `[out, in]` (PyTorch and ggml layout) in any element type.
pub struct Linear {
    weight: Tensor,
    bias: Option<Vec<f32>>,
}

impl Linear {
    /// Wraps `weight` after checking it is `[out_features, in_features]`.
    pub fn new(
        weight: Tensor,
        bias: Option<Vec<f32>>,
        out_features: usize,
        in_features: usize,
    ) -> Result<Linear, ModelError> {
        check_matrix(&weight, out_features, in_features)?;
        if let Some(b) = &bias {
            if b.len() != out_features {
                return Err(ModelError::BadTensor {
                    name: weight.name.clone(),
                    msg: format!("bias of {} values for {out_features} outputs", b.len()),
                });
            }
        }
        Ok(Linear { weight, bias })
    }

    pub fn out_features(&self) -> usize {
        self.weight.shape[0]
    }

    pub fn in_features(&self) -> usize {
        self.weight.shape[1]
    }

    /// `y` (`n × out`) from `x` (`n × in`).
    pub fn forward(&self, x: &[f32], n: usize, y: &mut [f32]) {
        matmul(qmatrix(&self.weight), x, n, y);
        if let Some(b) = &self.bias {
            ops::add_bias(y, b);
        }
    }
}
