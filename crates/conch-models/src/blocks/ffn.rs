//! Gated feed-forward: `down(act(gate(x)) · up(x))` (SwiGLU, GeGLU).

use super::Linear;
use crate::config::Activation;
use conch_kernels::ops;

pub struct GatedFfn {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
    pub activation: Activation,
}

impl GatedFfn {
    /// `out` (`n × hidden`) from `x` (`n × hidden`); `gate` and `up` are `n × intermediate` scratch.
    pub fn forward(&self, x: &[f32], n: usize, gate: &mut [f32], up: &mut [f32], out: &mut [f32]) {
        self.gate.forward(x, n, gate);
        self.up.forward(x, n, up);
        match self.activation {
            Activation::Silu => ops::silu_mul(gate, up),
            Activation::GeluTanh => ops::gelu_tanh_mul(gate, up),
        }
        self.down.forward(gate, n, out);
    }
}
