//! MiniMax-Text-01's lightning attention: linear attention with a per-head exponential decay,
//! `o_t = Σ_{s≤t} exp(-λ_h (t - s)) (q_t · k_s) v_s`, on `silu`-activated projections, followed by an
//! RMS norm over all heads and a sigmoid output gate.
//!
//! The sum is kept as a recurrent state per head, `S_t = exp(-λ_h) S_{t-1} + k_tᵀ v_t` and
//! `o_t = q_t S_t` (`head_dim × head_dim` floats in the sequence's cache), so each token costs the
//! same however long the sequence is. Such a cache cannot go back to an earlier prefix.

use super::{Linear, Norm};
use crate::kv_cache::KvCache;
use conch_kernels::{ops, pool};
use std::sync::Mutex;

pub struct LightningAttention {
    /// `[3 · heads · head_dim, hidden]`: per head its q, k and v rows.
    pub qkv: Linear,
    /// `[heads · head_dim, hidden]`, through a sigmoid.
    pub gate: Linear,
    /// Over all heads of a position.
    pub norm: Norm,
    pub out: Linear,
    /// Per head decay rate λ.
    pub slopes: Vec<f32>,
    pub head_dim: usize,
}

impl LightningAttention {
    /// transformers' decay rates for layer `layer` of `num_layers`: `2^(-8(h+1)/heads)`, scaled
    /// down linearly with depth.
    pub fn slopes(num_heads: usize, layer: usize, num_layers: usize) -> Vec<f32> {
        let base = 1.0 / 2f64.powf(8.0 / num_heads as f64);
        let depth = 1.0 - layer as f64 / (num_layers as f64 - 1.0 + 1e-5) + 1e-5;
        (1..=num_heads)
            .map(|h| (base.powi(h as i32) as f32) * depth as f32)
            .collect()
    }

    /// Attention of `x` (`n` normalized rows at positions `cache.len()..`): folds their keys and
    /// values into `layer`'s recurrent state in `cache` and writes `out` (`n × hidden`).
    pub fn forward(&self, x: &[f32], n: usize, cache: &mut KvCache, layer: usize, out: &mut [f32]) {
        let hd = self.head_dim;
        let heads = self.slopes.len();
        let width = heads * hd;
        let mut qkv = vec![0f32; n * 3 * width];
        self.qkv.forward(x, n, &mut qkv);
        qkv.iter_mut().for_each(|v| *v = ops::silu(*v));

        let mut context = vec![0f32; n * width];
        // One task per head, each owning its state and its context columns (gathered after).
        let states: Vec<Mutex<&mut [f32]>> = cache
            .state(layer, heads * hd * hd)
            .chunks_exact_mut(hd * hd)
            .map(Mutex::new)
            .collect();
        let mut head_contexts = vec![0f32; heads * n * hd];
        let outputs: Vec<Mutex<&mut [f32]>> = head_contexts
            .chunks_exact_mut(n * hd)
            .map(Mutex::new)
            .collect();
        let qkv = &qkv;
        pool::parallel_for(heads, |h| {
            let mut state = states[h].lock().unwrap_or_else(|e| e.into_inner());
            let mut outs = outputs[h].lock().unwrap_or_else(|e| e.into_inner());
            let decay = (-self.slopes[h]).exp();
            for t in 0..n {
                let row = &qkv[t * 3 * width + h * 3 * hd..][..3 * hd];
                let (q, k, v) = (&row[..hd], &row[hd..2 * hd], &row[2 * hd..]);
                let o = &mut outs[t * hd..(t + 1) * hd];
                for (i, s_row) in state.chunks_exact_mut(hd).enumerate() {
                    ops::scale(s_row, decay);
                    ops::axpy(k[i], v, s_row);
                    ops::axpy(q[i], s_row, o);
                }
            }
        });
        drop((states, outputs));
        for (h, outs) in head_contexts.chunks_exact(n * hd).enumerate() {
            for (t, o) in outs.chunks_exact(hd).enumerate() {
                context[t * width + h * hd..][..hd].copy_from_slice(o);
            }
        }
        self.norm.forward(&mut context);
        let mut gate = vec![0f32; n * width];
        self.gate.forward(x, n, &mut gate);
        for (c, g) in context.iter_mut().zip(&gate) {
            *c *= 1.0 / (1.0 + (-g).exp());
        }
        self.out.forward(&context, n, out);
    }
}
