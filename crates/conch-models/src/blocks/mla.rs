//! Multi-head latent attention (DeepSeek-V2/V3) over a latent KV cache.
//!
//! Each position stores only its normalized latent vector `c` (`kv_lora_rank` floats) and one rotary
//! key shared by all heads. Per-head keys and values are never rebuilt: a head's no-position query
//! part is mapped into latent space once (`q_nope · W_kᵀ`, the "absorbed" key projection), scores are
//! `q_latent · c + q_rope · k_rope`, and the probability-weighted latent sum goes through the head's
//! value projection. This is the same product as transformers' explicit keys and values, reordered.

use super::decoder::Source;
use super::{Linear, Norm, Rope};
use crate::config::{MlaConfig, ModelConfig};
use crate::kv_cache::KvCache;
use crate::weights::Weights;
use crate::ModelError;
use conch_formats::Tensor;
use conch_kernels::quant::dequantize;
use conch_kernels::{ops, pool};
use std::sync::Mutex;

enum QueryProjection {
    Direct(Linear),
    LowRank { a: Linear, norm: Norm, b: Linear },
}

pub struct LatentAttention {
    q: QueryProjection,
    /// `[kv_lora_rank + rope, hidden]`: the latent vector and the shared rotary key.
    kv_a: Linear,
    kv_norm: Norm,
    /// Per head `[kv_lora_rank, nope]`, f32: maps a query's no-position part into latent space.
    k_absorb: Vec<f32>,
    /// Per head `[v_head_dim, kv_lora_rank]`, f32: from a latent context to the head's values.
    v_up: Vec<f32>,
    o: Linear,
    rope: Rope,
    dims: MlaConfig,
    num_heads: usize,
    scale: f32,
}

/// One file format's names of the latent-attention tensors of a layer.
struct MlaNames {
    layer_prefix: &'static str,
    q: &'static str,
    q_a: &'static str,
    q_a_norm: &'static str,
    q_b: &'static str,
    kv_a: &'static str,
    kv_a_norm: &'static str,
    /// `[heads · (nope + v), rank]`, both up-projections in one.
    kv_b: &'static str,
    /// Per head `[rank, nope]` key up-projection, transposed (llama.cpp), with `v_b` beside it.
    k_b: Option<&'static str>,
    v_b: &'static str,
    out: &'static str,
}

fn bad(t: &Tensor, msg: String) -> ModelError {
    ModelError::BadTensor {
        name: t.name.clone(),
        msg,
    }
}

/// All of `t` as f32, after checking it has `shape`.
fn dense_f32(t: &Tensor, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
    if t.shape != shape {
        return Err(bad(t, format!("shape {:?}, expected {shape:?}", t.shape)));
    }
    let mut out = vec![0f32; shape.iter().product()];
    dequantize(t.dtype, &t.data, &mut out).map_err(|e| bad(t, e.to_string()))?;
    Ok(out)
}

impl LatentAttention {
    /// Loads layer `layer`'s projections from Hugging Face (`q_proj` or `q_a_proj`/`q_b_proj`,
    /// `kv_a_proj_with_mqa`, `kv_b_proj`) or llama.cpp names (`attn_q` or `attn_q_a`/`attn_q_b`,
    /// `attn_kv_a_mqa`, `attn_k_b` + `attn_v_b` or an older combined `attn_kv_b`).
    pub(crate) fn load(
        w: &Weights,
        source: Source,
        layer: usize,
        c: &ModelConfig,
        dims: &MlaConfig,
        rope: Rope,
    ) -> Result<LatentAttention, ModelError> {
        let (hidden, heads) = (c.hidden_size, c.num_heads);
        let (nope, rope_dim, v, rank) = (
            dims.qk_nope_head_dim,
            dims.qk_rope_head_dim,
            dims.v_head_dim,
            dims.kv_lora_rank,
        );
        let n = match source {
            Source::Hf => MlaNames {
                layer_prefix: "model.layers",
                q: "self_attn.q_proj",
                q_a: "self_attn.q_a_proj",
                q_a_norm: "self_attn.q_a_layernorm",
                q_b: "self_attn.q_b_proj",
                kv_a: "self_attn.kv_a_proj_with_mqa",
                kv_a_norm: "self_attn.kv_a_layernorm",
                kv_b: "self_attn.kv_b_proj",
                k_b: None,
                v_b: "",
                out: "self_attn.o_proj",
            },
            Source::Gguf => MlaNames {
                layer_prefix: "blk",
                q: "attn_q",
                q_a: "attn_q_a",
                q_a_norm: "attn_q_a_norm",
                q_b: "attn_q_b",
                kv_a: "attn_kv_a_mqa",
                kv_a_norm: "attn_kv_a_norm",
                kv_b: "attn_kv_b",
                k_b: Some("attn_k_b"),
                v_b: "attn_v_b",
                out: "attn_output",
            },
        };
        let name = |part: &str| format!("{}.{layer}.{part}", n.layer_prefix);
        let linear = |part: &str, out: usize, inp: usize| {
            let base = name(part);
            Linear::new(
                w.matrix(&base, out, inp)?,
                w.optional_bias(&base, out)?,
                out,
                inp,
            )
        };
        let norm = |part: &str, dim: usize| -> Result<Norm, ModelError> {
            Ok(Norm::new(w.vector(&name(part), dim)?, c.norm_eps, 0.0))
        };
        let q_dim = heads * (nope + rope_dim);
        let q = match dims.q_lora_rank {
            None => QueryProjection::Direct(linear(n.q, q_dim, hidden)?),
            Some(q_rank) => QueryProjection::LowRank {
                a: linear(n.q_a, q_rank, hidden)?,
                norm: norm(n.q_a_norm, q_rank)?,
                b: linear(n.q_b, q_dim, q_rank)?,
            },
        };
        // Newer llama.cpp files split the key and value up-projections per head.
        let separate_kb = n
            .k_b
            .and_then(|k_b| w.optional(&format!("{}.weight", name(k_b))));
        let (k_absorb, v_up) = match separate_kb {
            Some(k_b) => {
                let v_b = w.required(&format!("{}.weight", name(n.v_b)))?;
                (
                    dense_f32(&k_b, &[heads, rank, nope])?,
                    dense_f32(&v_b, &[heads, v, rank])?,
                )
            }
            None => {
                // `[heads · (nope + v), rank]`: per head its key rows, then its value rows.
                let kv_b = w.required(&format!("{}.weight", name(n.kv_b)))?;
                let all = dense_f32(&kv_b, &[heads * (nope + v), rank])?;
                let mut k_absorb = vec![0f32; heads * rank * nope];
                let mut v_up = Vec::with_capacity(heads * v * rank);
                for (h, block) in all.chunks_exact((nope + v) * rank).enumerate() {
                    let (k_rows, v_rows) = block.split_at(nope * rank);
                    for (d, row) in k_rows.chunks_exact(rank).enumerate() {
                        for (r, &x) in row.iter().enumerate() {
                            k_absorb[(h * rank + r) * nope + d] = x;
                        }
                    }
                    v_up.extend_from_slice(v_rows);
                }
                (k_absorb, v_up)
            }
        };
        Ok(LatentAttention {
            q,
            kv_a: linear(n.kv_a, rank + rope_dim, hidden)?,
            kv_norm: norm(n.kv_a_norm, rank)?,
            k_absorb,
            v_up,
            o: linear(n.out, hidden, heads * v)?,
            rope,
            dims: dims.clone(),
            num_heads: heads,
            scale: c.attention_scale,
        })
    }

    /// Attention of `x` (`n` normalized rows at positions `cache.len()..`); appends their latent rows
    /// to `layer` of `cache` and writes `out` (`n × hidden`).
    pub fn forward(&self, x: &[f32], n: usize, cache: &mut KvCache, layer: usize, out: &mut [f32]) {
        let MlaConfig {
            qk_nope_head_dim: nope,
            qk_rope_head_dim: rope,
            v_head_dim: v,
            kv_lora_rank: rank,
            ..
        } = self.dims;
        let heads = self.num_heads;
        let qk = nope + rope;
        let start = cache.len();

        let mut q = vec![0f32; n * heads * qk];
        match &self.q {
            QueryProjection::Direct(p) => p.forward(x, n, &mut q),
            QueryProjection::LowRank { a, norm, b } => {
                let mut low = vec![0f32; n * a.out_features()];
                a.forward(x, n, &mut low);
                norm.forward(&mut low);
                b.forward(&low, n, &mut q);
            }
        }
        let mut q_rope: Vec<f32> = q
            .chunks_exact(qk)
            .flat_map(|head| head[nope..].iter().copied())
            .collect();
        self.rope.apply(&mut q_rope, n, start, rope);

        let row = rank + rope;
        let mut latent = vec![0f32; n * row];
        self.kv_a.forward(x, n, &mut latent);
        let mut k_rope: Vec<f32> = latent
            .chunks_exact(row)
            .flat_map(|r| r[rank..].iter().copied())
            .collect();
        self.rope.apply(&mut k_rope, n, start, rope);
        for (r, k) in latent.chunks_exact_mut(row).zip(k_rope.chunks_exact(rope)) {
            self.kv_norm.forward(&mut r[..rank]);
            r[rank..].copy_from_slice(k);
        }
        cache.append(layer, &latent, &[]);

        let rows = cache.layer(layer);
        let mut context = vec![0f32; n * heads * v];
        let contexts: Vec<Mutex<&mut [f32]>> =
            context.chunks_exact_mut(v).map(Mutex::new).collect();
        pool::parallel_for(n * heads, |task| {
            let (t, h) = (task / heads, task % heads);
            let q_nope = &q[task * qk..task * qk + nope];
            let q_pe = &q_rope[task * rope..(task + 1) * rope];
            let absorb = &self.k_absorb[h * rank * nope..(h + 1) * rank * nope];
            let q_latent: Vec<f32> = absorb
                .chunks_exact(nope)
                .map(|k_row| ops::dot(k_row, q_nope))
                .collect();
            let positions = 0..start + t + 1;
            let mut scores: Vec<f32> = rows
                .key_runs(positions.clone())
                .flat_map(|(_, run)| run.chunks_exact(row))
                .map(|r| {
                    (ops::dot(&q_latent, &r[..rank]) + ops::dot(q_pe, &r[rank..])) * self.scale
                })
                .collect();
            ops::softmax(&mut scores);
            let mut latent_context = vec![0f32; rank];
            let latents = rows
                .key_runs(positions)
                .flat_map(|(_, run)| run.chunks_exact(row));
            for (r, &p) in latents.zip(&scores) {
                ops::axpy(p, &r[..rank], &mut latent_context);
            }
            let up = &self.v_up[h * v * rank..(h + 1) * v * rank];
            let mut ctx = contexts[task].lock().unwrap_or_else(|e| e.into_inner());
            for (c, v_row) in ctx.iter_mut().zip(up.chunks_exact(rank)) {
                *c = ops::dot(v_row, &latent_context);
            }
        });
        drop(contexts);
        self.o.forward(&context, n, out);
    }
}
