//! The decoder-only transformer every architecture here is a variant of: attention, then a
//! feed-forward that is dense or mixture-of-experts per layer.

use super::attention::AttentionScratch;
use super::lightning::LightningAttention;
use super::mla::LatentAttention;
use super::moe_ffn::{HfMoeNames, MoeFfn, MoeNaming, RoutingObserver};
use super::{Attention, Embedding, GatedFfn, Linear, Norm, Rope};
use crate::config::{AttentionKind, ModelConfig};
use crate::kv_cache::KvCache;
use crate::moe::ExpertScratch;
use crate::weights::{vector_f32, Global, Naming, Part, Weights};
use crate::{BatchItem, Model, ModelError};
use conch_formats::TensorStore;
use conch_kernels::ops;

/// RMS norms of queries and keys before rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QkNorm {
    None,
    /// One norm over each head (Qwen 3, Gemma 3).
    PerHead,
    /// One norm over the whole query (and key) projection, all heads together (OLMoE).
    WholeProjection,
    /// Per head where the file has the norms (GLM-4.5's `use_qk_norm`).
    PerHeadIfPresent,
}

/// What distinguishes one architecture from another, beyond its [`ModelConfig`].
#[derive(Clone, Copy, Debug)]
pub struct DecoderSpec {
    pub qk_norm: QkNorm,
    /// Extra norms after attention and after the feed-forward, before the residual add (Gemma).
    pub sandwich_norms: bool,
    /// Embeddings are multiplied by `sqrt(hidden_size)` (Gemma).
    pub scale_embeddings: bool,
    /// Hugging Face norm weights are stored as `w` for `x · (1 + w)` (Gemma).
    pub hf_norm_offset: f32,
    /// Hugging Face name of the norm before the feed-forward.
    pub hf_ffn_norm: &'static str,
    /// Hugging Face names of the MoE tensors, for architectures with MoE layers.
    pub hf_moe: Option<HfMoeNames>,
    /// GGUF name of the norm before the feed-forward (`ffn_norm`; GLM-4.5's `post_attention_norm`).
    pub gguf_ffn_norm: &'static str,
    /// Hugging Face name (in the layer) of per-head attention sinks, for architectures with them
    /// (GGUF: `attn_sinks.weight`).
    pub sinks: Option<&'static str>,
    /// Layer norms (with their biases when the file has them) instead of RMS norms (PhiMoE).
    pub layer_norm: bool,
}

/// A layer's attention.
pub enum LayerAttention {
    /// Grouped-query attention with a K/V cache.
    Standard(Attention),
    /// Lightning (linear, decayed) attention (MiniMax-Text-01).
    Lightning(LightningAttention),
    /// Multi-head latent attention with a latent cache (DeepSeek).
    Latent(LatentAttention),
}

/// A layer's feed-forward.
// One per layer, so the variants' size difference costs nothing worth an indirection.
#[allow(clippy::large_enum_variant)]
pub enum FeedForward {
    Dense(GatedFfn),
    Moe(MoeFfn),
}

/// Where the tensors come from; decides names and format-specific conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Gguf,
    Hf,
}

pub struct DecoderLayer {
    pub attn_norm: Norm,
    pub attn: LayerAttention,
    pub post_attn_norm: Option<Norm>,
    pub ffn_norm: Norm,
    pub ffn: FeedForward,
    pub post_ffn_norm: Option<Norm>,
}

pub struct Decoder {
    config: ModelConfig,
    embedding: Embedding,
    embed_scale: Option<f32>,
    layers: Vec<DecoderLayer>,
    final_norm: Norm,
    output: Linear,
}

impl Decoder {
    /// Builds the model from `store`, checking every tensor's presence and shape against `config`.
    pub fn load(
        config: ModelConfig,
        store: &dyn TensorStore,
        source: Source,
        spec: &DecoderSpec,
    ) -> Result<Decoder, ModelError> {
        let naming = match source {
            Source::Gguf => Naming::Gguf,
            Source::Hf => Naming::Hf {
                ffn_norm: spec.hf_ffn_norm,
            },
        };
        let w = Weights { store };
        let c = &config;
        let (hidden, q_dim, kv_dim) = (c.hidden_size, c.q_dim(), c.kv_dim());
        let norm_offset = if source == Source::Hf {
            spec.hf_norm_offset
        } else {
            0.0
        };
        let norm = |base: &str, dim: usize| -> Result<Norm, ModelError> {
            let weight = w.vector(base, dim)?;
            Ok(if spec.layer_norm {
                Norm::layer_norm(weight, w.optional_bias(base, dim)?, c.norm_eps)
            } else {
                Norm::new(weight, c.norm_eps, norm_offset)
            })
        };
        let linear = |base: &str, out: usize, inp: usize| -> Result<Linear, ModelError> {
            Linear::new(
                w.matrix(base, out, inp)?,
                w.optional_bias(base, out)?,
                out,
                inp,
            )
        };

        let embedding = Embedding::new(
            w.matrix(naming.global(Global::Embedding), c.vocab_size, hidden)?,
            c.vocab_size,
            hidden,
        )?;
        if source == Source::Gguf && w.optional("rope_factors_short.weight").is_some() {
            // llama.cpp switches these by context size; transformers (the reference here) does not.
            return Err(ModelError::Unsupported(
                "LongRoPE factors in a GGUF file (Phi-3.5); load the Hugging Face checkpoint"
                    .into(),
            ));
        }
        // llama.cpp's converter stores Llama 3 rope scaling as per-frequency divisors.
        let rope_divisors = match source {
            Source::Gguf => w
                .optional("rope_freqs.weight")
                .map(|t| vector_f32(&t, c.rope.rotary_dim / 2))
                .transpose()?,
            Source::Hf => None,
        };
        let qk_norm_dims = match spec.qk_norm {
            QkNorm::None => None,
            QkNorm::PerHead => Some((c.head_dim, c.head_dim)),
            QkNorm::PerHeadIfPresent => {
                let first = naming.layer(0, Part::QNorm);
                w.optional(&format!("{first}.weight"))
                    .map(|_| (c.head_dim, c.head_dim))
            }
            QkNorm::WholeProjection => Some((q_dim, kv_dim)),
        };
        let moe_naming = match (source, spec.hf_moe) {
            (Source::Gguf, _) => Some(MoeNaming::Gguf),
            (Source::Hf, names) => names.map(MoeNaming::Hf),
        };
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let name = |p: Part| naming.layer(i, p);
            let rope_config = c.rope_for_layer(i);
            // llama.cpp applies its frequency factors to full-attention layers only.
            let divisors = if c.layer_kinds[i] == AttentionKind::Full {
                rope_divisors.as_deref()
            } else {
                None
            };
            let rope = Rope::new(rope_config, divisors)?;
            let lightning_layer = c.lightning.as_ref().is_some_and(|l| l.linear_layers[i]);
            // Next to lightning layers, softmax layers repeat their KV heads so every layer's
            // cache rows have one key per query head.
            let kv_projection = |part: Part| -> Result<Linear, ModelError> {
                let base = name(part);
                match &c.lightning {
                    Some(_) => Linear::new(
                        repeat_kv_heads(w.matrix(&base, kv_dim, hidden)?, c)?,
                        w.optional_bias(&base, kv_dim)?
                            .map(|b| repeat_rows(&b, c.num_kv_heads, c.num_heads)),
                        q_dim,
                        hidden,
                    ),
                    None => linear(&base, kv_dim, hidden),
                }
            };
            let attn = match &c.mla {
                Some(dims) => {
                    LayerAttention::Latent(LatentAttention::load(&w, source, i, c, dims, rope)?)
                }
                None if lightning_layer => {
                    let part = |hf: &str, gguf: &str| match source {
                        Source::Hf => format!("model.layers.{i}.self_attn.{hf}"),
                        Source::Gguf => format!("blk.{i}.{gguf}"),
                    };
                    LayerAttention::Lightning(LightningAttention {
                        qkv: linear(&part("qkv_proj", "attn_qkv"), 3 * q_dim, hidden)?,
                        gate: linear(&part("output_gate", "attn_gate"), q_dim, hidden)?,
                        norm: Norm::new(
                            w.vector(&part("norm", "attn_norm_2"), q_dim)?,
                            c.norm_eps,
                            0.0,
                        ),
                        out: linear(&part("out_proj", "attn_output"), hidden, q_dim)?,
                        slopes: LightningAttention::slopes(c.num_heads, i, c.num_layers),
                        head_dim: c.head_dim,
                    })
                }
                None => LayerAttention::Standard(Attention {
                    q: linear(&name(Part::Q), q_dim, hidden)?,
                    k: kv_projection(Part::K)?,
                    v: kv_projection(Part::V)?,
                    o: linear(&name(Part::Out), hidden, q_dim)?,
                    q_norm: qk_norm_dims
                        .map(|(q, _)| norm(&name(Part::QNorm), q))
                        .transpose()?,
                    k_norm: qk_norm_dims
                        .map(|(_, k)| norm(&name(Part::KNorm), k))
                        .transpose()?,
                    rope,
                    num_heads: c.num_heads,
                    num_kv_heads: if c.lightning.is_some() {
                        c.num_heads
                    } else {
                        c.num_kv_heads
                    },
                    head_dim: c.head_dim,
                    window: match c.layer_kinds[i] {
                        AttentionKind::Sliding => c.sliding_window,
                        AttentionKind::Full => None,
                    },
                    scale: c.attention_scale,
                    softcap: c.attn_logit_softcap,
                    clip_qkv: c.clip_qkv,
                    sinks: spec
                        .sinks
                        .map(|part| {
                            let sink_name = match source {
                                Source::Gguf => format!("blk.{i}.attn_sinks.weight"),
                                Source::Hf => format!("model.layers.{i}.{part}"),
                            };
                            vector_f32(&w.required(&sink_name)?, c.num_heads)
                        })
                        .transpose()?,
                }),
            };
            let ffn = match (&c.moe, moe_naming) {
                (Some(moe), Some(naming)) if moe.sparse_layers[i] => {
                    FeedForward::Moe(MoeFfn::load(&w, naming, i, c, moe)?)
                }
                (Some(_), None) => {
                    return Err(ModelError::Unsupported(format!(
                        "{} has no mixture-of-experts layers",
                        c.arch
                    )))
                }
                _ => FeedForward::Dense(GatedFfn {
                    gate: linear(&name(Part::Gate), c.intermediate_size, hidden)?,
                    up: linear(&name(Part::Up), c.intermediate_size, hidden)?,
                    down: linear(&name(Part::Down), hidden, c.intermediate_size)?,
                    activation: c.activation,
                }),
            };
            layers.push(DecoderLayer {
                attn_norm: norm(&name(Part::AttnNorm), hidden)?,
                attn,
                post_attn_norm: spec
                    .sandwich_norms
                    .then(|| norm(&name(Part::PostAttnNorm), hidden))
                    .transpose()?,
                ffn_norm: match source {
                    Source::Gguf => norm(&format!("blk.{i}.{}", spec.gguf_ffn_norm), hidden)?,
                    Source::Hf => norm(&name(Part::FfnNorm), hidden)?,
                },
                ffn,
                post_ffn_norm: spec
                    .sandwich_norms
                    .then(|| norm(&name(Part::PostFfnNorm), hidden))
                    .transpose()?,
            });
        }
        let final_norm = norm(naming.global(Global::OutputNorm), hidden)?;
        let output_name = format!("{}.weight", naming.global(Global::Output));
        // A bias may come with a tied output too (ERNIE's `use_bias`).
        let output_bias = w.optional_bias(naming.global(Global::Output), c.vocab_size)?;
        let output = match w.optional(&output_name) {
            Some(t) if !c.tie_word_embeddings => Linear::new(t, output_bias, c.vocab_size, hidden)?,
            // Some tied checkpoints still carry a copy of the embedding as lm_head; either is right.
            Some(_) | None if c.tie_word_embeddings => {
                Linear::new(embedding.table().clone(), output_bias, c.vocab_size, hidden)?
            }
            _ => return Err(ModelError::MissingTensor(output_name)),
        };
        let embed_scale = if spec.scale_embeddings {
            Some((hidden as f64).sqrt() as f32)
        } else {
            c.embedding_multiplier
        };
        Ok(Decoder {
            config,
            embedding,
            embed_scale,
            layers,
            final_norm,
            output,
        })
    }

    fn check_input(&self, tokens: &[u32], cache: &KvCache) -> Result<(), ModelError> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        let vocab_size = self.config.vocab_size;
        if let Some(&token) = tokens.iter().find(|t| **t as usize >= vocab_size) {
            return Err(ModelError::TokenOutOfRange { token, vocab_size });
        }
        let (have, want) = (cache.layout(), self.config.kv_layout());
        if have != want {
            return Err(ModelError::CacheMismatch(format!(
                "cache rows are {have:?}, the model's are {want:?}"
            )));
        }
        Ok(())
    }
}

impl Decoder {
    /// The forward pass of [`Model::forward_batch`].
    fn run(
        &self,
        batch: &mut [BatchItem<'_>],
        observer: Option<&mut dyn RoutingObserver>,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        for item in batch.iter_mut() {
            self.check_input(item.tokens, item.cache)?;
            item.cache.reserve(item.tokens.len())?;
        }
        let mut first_rows = Vec::with_capacity(batch.len());
        let mut n = 0;
        for item in batch.iter() {
            first_rows.push(n);
            n += item.tokens.len();
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let result = self.run_layers(batch, &first_rows, n, observer);
        if result.is_err() {
            batch.iter_mut().for_each(|b| b.cache.discard_uncommitted());
        }
        result
    }

    /// [`Decoder::run`] once the caches have room: `n` rows, item `i`'s from `first_rows[i]`.
    fn run_layers(
        &self,
        batch: &mut [BatchItem<'_>],
        first_rows: &[usize],
        n: usize,
        mut observer: Option<&mut dyn RoutingObserver>,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let c = &self.config;
        let hidden = c.hidden_size;

        let mut x = vec![0f32; n * hidden];
        let tokens = batch.iter().flat_map(|item| item.tokens.iter());
        for (row, &token) in x.chunks_exact_mut(hidden).zip(tokens) {
            self.embedding.lookup(token as usize, row)?;
        }
        if let Some(s) = self.embed_scale {
            ops::scale(&mut x, s);
        }

        let mut h = vec![0f32; n * hidden];
        let mut branch = vec![0f32; n * hidden];
        let kv_width = match c.lightning {
            Some(_) => c.q_dim(),
            None => c.kv_dim(),
        };
        let mut attn_scratch = AttentionScratch::new(n, c.q_dim(), kv_width);
        let mut gate = vec![0f32; n * c.intermediate_size];
        let mut up = vec![0f32; n * c.intermediate_size];
        let mut expert_scratch = ExpertScratch::default();
        let residual = c.residual_multiplier.unwrap_or(1.0);
        for (i, layer) in self.layers.iter().enumerate() {
            h.copy_from_slice(&x);
            layer.attn_norm.forward(&mut h);
            match &layer.attn {
                LayerAttention::Standard(attn) => {
                    attn.forward(&h, batch, first_rows, i, &mut attn_scratch, &mut branch)
                }
                // These run sequence by sequence.
                LayerAttention::Latent(attn) => {
                    for (item, &first) in batch.iter_mut().zip(first_rows) {
                        let rows = first * hidden..(first + item.tokens.len()) * hidden;
                        let count = item.tokens.len();
                        attn.forward(&h[rows.clone()], count, item.cache, i, &mut branch[rows]);
                    }
                }
                LayerAttention::Lightning(attn) => {
                    for (item, &first) in batch.iter_mut().zip(first_rows) {
                        let rows = first * hidden..(first + item.tokens.len()) * hidden;
                        let count = item.tokens.len();
                        attn.forward(&h[rows.clone()], count, item.cache, i, &mut branch[rows]);
                    }
                }
            }
            if let Some(norm) = &layer.post_attn_norm {
                norm.forward(&mut branch);
            }
            let attn_factors = c.lightning.as_ref().map(|l| match l.linear_layers[i] {
                true => (l.linear_attn_alpha, l.linear_attn_beta),
                false => (l.full_attn_alpha, l.full_attn_beta),
            });
            add_residual(&mut x, &h, &branch, residual, attn_factors);

            h.copy_from_slice(&x);
            layer.ffn_norm.forward(&mut h);
            match &layer.ffn {
                FeedForward::Dense(ffn) => ffn.forward(&h, n, &mut gate, &mut up, &mut branch),
                FeedForward::Moe(moe) => {
                    let routing = moe.forward(&h, n, hidden, &mut expert_scratch, &mut branch)?;
                    if let Some(obs) = observer.as_deref_mut() {
                        report_routing(obs, i, batch, first_rows, &routing);
                    }
                }
            }
            if let Some(norm) = &layer.post_ffn_norm {
                norm.forward(&mut branch);
            }
            let mlp_factors = c.lightning.as_ref().map(|l| (l.mlp_alpha, l.mlp_beta));
            add_residual(&mut x, &h, &branch, residual, mlp_factors);
        }
        for item in batch.iter_mut() {
            item.cache.commit(item.tokens.len());
        }

        // The rows whose logits are wanted, gathered so the output matrix streams once for all.
        let mut wanted = Vec::new();
        for (item, &first) in batch.iter().zip(first_rows) {
            let last = first + item.tokens.len();
            let from = if item.all_logits { first } else { last - 1 };
            wanted.extend(from..last);
        }
        let mut rows = Vec::with_capacity(wanted.len() * hidden);
        for &r in &wanted {
            rows.extend_from_slice(&x[r * hidden..(r + 1) * hidden]);
        }
        drop(x);
        self.final_norm.forward(&mut rows);
        let vocab = c.vocab_size;
        let mut logits = vec![0f32; wanted.len() * vocab];
        self.output.forward(&rows, wanted.len(), &mut logits);
        if let Some(d) = c.logit_divisor {
            ops::scale(&mut logits, 1.0 / d);
        }
        if let Some(cap) = c.final_logit_softcap {
            ops::softcap(&mut logits, cap);
        }
        let mut out = Vec::with_capacity(batch.len());
        let mut rest = &logits[..];
        for item in batch.iter() {
            let count = if item.all_logits {
                item.tokens.len()
            } else {
                1
            };
            let (mine, tail) = rest.split_at(count * vocab);
            out.push(mine.to_vec());
            rest = tail;
        }
        Ok(out)
    }
}

/// Tells `observer` each sequence's routing in a layer, with the positions of its tokens.
fn report_routing(
    observer: &mut dyn RoutingObserver,
    layer: usize,
    batch: &[BatchItem<'_>],
    first_rows: &[usize],
    routing: &crate::moe::Routing,
) {
    let k = routing.top_k;
    for (item, &first) in batch.iter().zip(first_rows) {
        let rows = first * k..(first + item.tokens.len()) * k;
        let part = crate::moe::Routing {
            top_k: k,
            ids: routing.ids[rows.clone()].to_vec(),
            weights: routing.weights[rows].to_vec(),
        };
        // Called before the caches commit, so their length is still the first new position.
        observer.observe(layer, item.cache.len(), &part);
    }
}

/// `x += multiplier · branch`, or with MiniMax's `(α, β)` factors `x = α · normed + β · branch`
/// (the residual is the block's normalized input).
fn add_residual(
    x: &mut [f32],
    normed: &[f32],
    branch: &[f32],
    multiplier: f32,
    normed_factors: Option<(f32, f32)>,
) {
    match normed_factors {
        None => ops::axpy(multiplier, branch, x),
        Some((alpha, beta)) => {
            for ((xv, &hv), &bv) in x.iter_mut().zip(normed).zip(branch) {
                *xv = alpha * hv + beta * bv;
            }
        }
    }
}

/// The rows of `t` (`[kv_heads · head_dim, cols]`) with each KV head repeated for the query heads
/// that share it, giving `[heads · head_dim, cols]`.
fn repeat_kv_heads(
    t: conch_formats::Tensor,
    c: &ModelConfig,
) -> Result<conch_formats::Tensor, ModelError> {
    let cols = t.shape[1];
    let row_bytes = t
        .dtype
        .bytes_for(cols)
        .ok_or_else(|| ModelError::BadTensor {
            name: t.name.clone(),
            msg: format!("rows of {cols} values are not whole blocks"),
        })?;
    let head_bytes = row_bytes * c.head_dim;
    let group = c.num_heads / c.num_kv_heads;
    let mut data = Vec::with_capacity(head_bytes * c.num_heads);
    for h in 0..c.num_heads {
        let kv = h / group;
        data.extend_from_slice(&t.data[kv * head_bytes..(kv + 1) * head_bytes]);
    }
    Ok(conch_formats::Tensor {
        name: t.name,
        dtype: t.dtype,
        shape: vec![c.num_heads * c.head_dim, cols],
        data: conch_formats::Bytes::from_vec(data),
    })
}

/// `values` (`kv_heads` blocks) with each block repeated for the `heads / kv_heads` query heads.
fn repeat_rows(values: &[f32], kv_heads: usize, heads: usize) -> Vec<f32> {
    let block = values.len() / kv_heads;
    (0..heads)
        .flat_map(|h| {
            values[(h / (heads / kv_heads)) * block..][..block]
                .iter()
                .copied()
        })
        .collect()
}

impl Model for Decoder {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn forward_batch(
        &self,
        batch: &mut [BatchItem<'_>],
        observer: Option<&mut dyn RoutingObserver>,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        self.run(batch, observer)
    }
}
