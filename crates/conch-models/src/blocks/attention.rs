//! Causal self-attention with grouped KV heads, optional sliding window, q/k norms, q/k/v clipping,
//! soft-capping and attention sinks.

use super::{Linear, Norm, Rope};
use crate::kv_cache::LayerRows;
use crate::BatchItem;
use conch_kernels::{ops, pool};
use std::cell::RefCell;
use std::sync::Mutex;

thread_local! {
    /// Attention weights of one query, reused across calls on the same thread.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

pub struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    /// Per-head RMS norms of queries and keys before rotation (Qwen 3, Gemma 3).
    pub q_norm: Option<Norm>,
    pub k_norm: Option<Norm>,
    pub rope: Rope,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Attend only to the last `window` positions (the query's own included).
    pub window: Option<usize>,
    pub scale: f32,
    pub softcap: Option<f32>,
    /// Queries, keys and values are clamped to `±clip` after the norms (OLMoE's `clip_qkv`).
    pub clip_qkv: Option<f32>,
    /// Per head, a learned logit that joins the softmax without a value (gpt-oss's sinks): it takes
    /// probability mass away from the real positions.
    pub sinks: Option<Vec<f32>>,
}

/// Buffers reused by every layer of one forward pass.
pub struct AttentionScratch {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub context: Vec<f32>,
}

impl AttentionScratch {
    pub fn new(n: usize, q_dim: usize, kv_dim: usize) -> AttentionScratch {
        AttentionScratch {
            q: vec![0.0; n * q_dim],
            k: vec![0.0; n * kv_dim],
            v: vec![0.0; n * kv_dim],
            context: vec![0.0; n * q_dim],
        }
    }
}

impl Attention {
    /// Attention of `x` (the normalized rows of every item of `batch`, item after item; item `i`'s
    /// rows start at `first_rows[i]` and sit at positions `cache.len()..` of its cache) over each
    /// item's own cache and itself; appends their K/V to `layer` of the caches and writes `out`
    /// (`rows × hidden`).
    pub fn forward(
        &self,
        x: &[f32],
        batch: &mut [BatchItem<'_>],
        first_rows: &[usize],
        layer: usize,
        s: &mut AttentionScratch,
        out: &mut [f32],
    ) {
        let hd = self.head_dim;
        let q_dim = self.num_heads * hd;
        let kv_dim = self.num_kv_heads * hd;
        let n = s.q.len() / q_dim;
        self.q.forward(x, n, &mut s.q);
        self.k.forward(x, n, &mut s.k);
        self.v.forward(x, n, &mut s.v);
        if let Some(norm) = &self.q_norm {
            norm.forward(&mut s.q);
        }
        if let Some(norm) = &self.k_norm {
            norm.forward(&mut s.k);
        }
        if let Some(clip) = self.clip_qkv {
            for v in s.q.iter_mut().chain(s.k.iter_mut()).chain(s.v.iter_mut()) {
                *v = v.clamp(-clip, clip);
            }
        }
        // Each row's item and position.
        let mut row_places = Vec::with_capacity(n);
        for (i, (item, &first)) in batch.iter_mut().zip(first_rows).enumerate() {
            let rows = first..first + item.tokens.len();
            let start = item.cache.len();
            let count = rows.len();
            self.rope.apply(
                &mut s.q[rows.start * q_dim..rows.end * q_dim],
                count,
                start,
                hd,
            );
            self.rope.apply(
                &mut s.k[rows.start * kv_dim..rows.end * kv_dim],
                count,
                start,
                hd,
            );
            item.cache.append(
                layer,
                &s.k[rows.start * kv_dim..rows.end * kv_dim],
                &s.v[rows.start * kv_dim..rows.end * kv_dim],
            );
            row_places.extend((0..count).map(|t| (i, start + t)));
        }

        let views: Vec<LayerRows> = batch.iter().map(|b| b.cache.layer(layer)).collect();
        // One task per (row, head); each owns its slice of the context rows.
        let contexts: Vec<Mutex<&mut [f32]>> =
            s.context.chunks_exact_mut(hd).map(Mutex::new).collect();
        let queries = &s.q;
        pool::parallel_for(n * self.num_heads, |task| {
            let (row, h) = (task / self.num_heads, task % self.num_heads);
            let (item, pos) = row_places[row];
            let q = &queries[row * q_dim + h * hd..][..hd];
            let mut ctx = contexts[task].lock().unwrap_or_else(|e| e.into_inner());
            self.attend(q, pos, h, views[item], &mut ctx);
        });
        drop(contexts);
        self.o.forward(&s.context, n, out);
    }

    /// Context vector `ctx` of query `q` (head `head`, at position `pos`) over cached keys/values.
    fn attend(&self, q: &[f32], pos: usize, head: usize, rows: LayerRows, ctx: &mut [f32]) {
        let hd = self.head_dim;
        let kv_off = (head / (self.num_heads / self.num_kv_heads)) * hd;
        let kv_dim = self.num_kv_heads * hd;
        let first = self.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        SCORES.with_borrow_mut(|scores| {
            scores.clear();
            for (_, keys) in rows.key_runs(first..pos + 1) {
                scores.extend(
                    keys.chunks_exact(kv_dim)
                        .map(|k| ops::dot(q, &k[kv_off..kv_off + hd]) * self.scale),
                );
            }
            if let Some(cap) = self.softcap {
                ops::softcap(scores, cap);
            }
            match &self.sinks {
                Some(sinks) => {
                    scores.push(sinks[head]);
                    ops::softmax(scores);
                    scores.pop();
                }
                None => ops::softmax(scores),
            }
            ctx.fill(0.0);
            let mut weights = scores.iter();
            for (_, values) in rows.value_runs(first..pos + 1) {
                for (v, &p) in values.chunks_exact(kv_dim).zip(&mut weights) {
                    ops::axpy(p, &v[kv_off..kv_off + hd], ctx);
                }
            }
        });
    }
}
