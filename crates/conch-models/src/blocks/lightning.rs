//! MiniMax-Text-01's lightning attention: linear attention with a per-head exponential decay,
//! `o_t = Σ_{s≤t} exp(-λ_h (t - s)) (q_t · k_s) v_s`, on `silu`-activated projections, followed by an
//! RMS norm over all heads and a sigmoid output gate.
//!
//! The reference keeps a recurrent `k vᵀ` state per head; here the keys and values stay in the KV
//! cache like softmax attention's, so a cache can be truncated to any prefix. The sum is the same.

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

    /// Attention of `x` (`n` normalized rows at positions `cache.len()..`); appends their keys and
    /// values (`heads · head_dim` each) to `layer` of `cache` and writes `out` (`n × hidden`).
    pub fn forward(&self, x: &[f32], n: usize, cache: &mut KvCache, layer: usize, out: &mut [f32]) {
        let hd = self.head_dim;
        let heads = self.slopes.len();
        let width = heads * hd;
        let start = cache.len();
        let mut qkv = vec![0f32; n * 3 * width];
        self.qkv.forward(x, n, &mut qkv);
        qkv.iter_mut().for_each(|v| *v = ops::silu(*v));
        let (mut q, mut k, mut v) = (
            Vec::with_capacity(n * width),
            Vec::with_capacity(n * width),
            Vec::with_capacity(n * width),
        );
        for head in qkv.chunks_exact(3 * hd) {
            q.extend_from_slice(&head[..hd]);
            k.extend_from_slice(&head[hd..2 * hd]);
            v.extend_from_slice(&head[2 * hd..]);
        }
        cache.append(layer, &k, &v);

        let rows = cache.layer(layer);
        let mut context = vec![0f32; n * width];
        let contexts: Vec<Mutex<&mut [f32]>> =
            context.chunks_exact_mut(hd).map(Mutex::new).collect();
        pool::parallel_for(n * heads, |task| {
            let (t, h) = (task / heads, task % heads);
            let pos = start + t;
            let query = &q[task * hd..(task + 1) * hd];
            let mut ctx = contexts[task].lock().unwrap_or_else(|e| e.into_inner());
            ctx.fill(0.0);
            let keys = rows.key_runs(0..pos + 1).flat_map(|(_, r)| r.chunks_exact(width));
            let values = rows.value_runs(0..pos + 1).flat_map(|(_, r)| r.chunks_exact(width));
            for (s, (key, value)) in keys.zip(values).enumerate() {
                let decay = (-self.slopes[h] * (pos - s) as f32).exp();
                let w = decay * ops::dot(query, &key[h * hd..][..hd]);
                ops::axpy(w, &value[h * hd..][..hd], &mut ctx);
            }
        });
        drop(contexts);
        self.norm.forward(&mut context);
        let mut gate = vec![0f32; n * width];
        self.gate.forward(x, n, &mut gate);
        for (c, g) in context.iter_mut().zip(&gate) {
            *c *= 1.0 / (1.0 + (-g).exp());
        }
        self.out.forward(&context, n, out);
    }
}
