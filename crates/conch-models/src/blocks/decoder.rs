//! The decoder-only transformer every architecture here is a variant of: attention, then a
//! feed-forward that is dense or mixture-of-experts per layer.

use super::attention::AttentionScratch;
use super::moe_ffn::{HfMoeNames, MoeFfn, MoeNaming, RoutingObserver};
use super::{Attention, Embedding, GatedFfn, Linear, RmsNorm, Rope};
use crate::config::{AttentionKind, ModelConfig};
use crate::kv_cache::KvCache;
use crate::moe::ExpertScratch;
use crate::weights::{vector_f32, Global, Naming, Part, Weights};
use crate::{Model, ModelError};
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
}

/// A layer's feed-forward.
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
    pub attn_norm: RmsNorm,
    pub attn: Attention,
    pub post_attn_norm: Option<RmsNorm>,
    pub ffn_norm: RmsNorm,
    pub ffn: FeedForward,
    pub post_ffn_norm: Option<RmsNorm>,
}

pub struct Decoder {
    config: ModelConfig,
    embedding: Embedding,
    embed_scale: Option<f32>,
    layers: Vec<DecoderLayer>,
    final_norm: RmsNorm,
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
        let norm = |base: &str, dim: usize| -> Result<RmsNorm, ModelError> {
            Ok(RmsNorm::new(w.vector(base, dim)?, c.norm_eps, norm_offset))
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
            let attn = Attention {
                q: linear(&name(Part::Q), q_dim, hidden)?,
                k: linear(&name(Part::K), kv_dim, hidden)?,
                v: linear(&name(Part::V), kv_dim, hidden)?,
                o: linear(&name(Part::Out), hidden, q_dim)?,
                q_norm: qk_norm_dims
                    .map(|(q, _)| norm(&name(Part::QNorm), q))
                    .transpose()?,
                k_norm: qk_norm_dims
                    .map(|(_, k)| norm(&name(Part::KNorm), k))
                    .transpose()?,
                rope: Rope::new(rope_config, divisors)?,
                num_heads: c.num_heads,
                num_kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
                window: match c.layer_kinds[i] {
                    AttentionKind::Sliding => c.sliding_window,
                    AttentionKind::Full => None,
                },
                scale: c.attention_scale,
                softcap: c.attn_logit_softcap,
                clip_qkv: c.clip_qkv,
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
        if cache.num_layers() != self.config.num_layers || cache.kv_dim() != self.config.kv_dim() {
            return Err(ModelError::CacheMismatch(format!(
                "cache has {} layers of width {}, model has {} of width {}",
                cache.num_layers(),
                cache.kv_dim(),
                self.config.num_layers,
                self.config.kv_dim()
            )));
        }
        Ok(())
    }
}

impl Decoder {
    /// The forward pass of [`Model::forward`], reporting each MoE layer's routing to `observer`.
    fn run(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
        mut observer: Option<&mut dyn RoutingObserver>,
    ) -> Result<Vec<f32>, ModelError> {
        self.check_input(tokens, cache)?;
        cache.reserve(tokens.len())?;
        let c = &self.config;
        let n = tokens.len();
        let hidden = c.hidden_size;
        let start = cache.len();

        let mut x = vec![0f32; n * hidden];
        for (row, &token) in x.chunks_exact_mut(hidden).zip(tokens) {
            self.embedding.lookup(token as usize, row)?;
        }
        if let Some(s) = self.embed_scale {
            ops::scale(&mut x, s);
        }

        let mut h = vec![0f32; n * hidden];
        let mut branch = vec![0f32; n * hidden];
        let mut attn_scratch = AttentionScratch::new(n, c.q_dim(), c.kv_dim());
        let mut gate = vec![0f32; n * c.intermediate_size];
        let mut up = vec![0f32; n * c.intermediate_size];
        let mut expert_scratch = ExpertScratch::default();
        let residual = c.residual_multiplier.unwrap_or(1.0);
        for (i, layer) in self.layers.iter().enumerate() {
            h.copy_from_slice(&x);
            layer.attn_norm.forward(&mut h);
            layer
                .attn
                .forward(&h, n, cache, i, &mut attn_scratch, &mut branch);
            if let Some(norm) = &layer.post_attn_norm {
                norm.forward(&mut branch);
            }
            ops::axpy(residual, &branch, &mut x);

            h.copy_from_slice(&x);
            layer.ffn_norm.forward(&mut h);
            match &layer.ffn {
                FeedForward::Dense(ffn) => ffn.forward(&h, n, &mut gate, &mut up, &mut branch),
                FeedForward::Moe(moe) => {
                    let routing = moe.forward(&h, n, hidden, &mut expert_scratch, &mut branch)?;
                    if let Some(obs) = observer.as_deref_mut() {
                        obs.observe(i, start, &routing);
                    }
                }
            }
            if let Some(norm) = &layer.post_ffn_norm {
                norm.forward(&mut branch);
            }
            ops::axpy(residual, &branch, &mut x);
        }
        cache.commit(n);

        let rows = if all_logits {
            &mut x[..]
        } else {
            &mut x[(n - 1) * hidden..]
        };
        let out_rows = rows.len() / hidden;
        self.final_norm.forward(rows);
        let mut logits = vec![0f32; out_rows * c.vocab_size];
        self.output.forward(rows, out_rows, &mut logits);
        if let Some(d) = c.logit_divisor {
            ops::scale(&mut logits, 1.0 / d);
        }
        if let Some(cap) = c.final_logit_softcap {
            ops::softcap(&mut logits, cap);
        }
        Ok(logits)
    }
}

impl Model for Decoder {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(self.config.num_layers, self.config.kv_dim(), capacity)
    }

    fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
    ) -> Result<Vec<f32>, ModelError> {
        self.run(tokens, cache, all_logits, None)
    }

    fn forward_observed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
        observer: &mut dyn RoutingObserver,
    ) -> Result<Vec<f32>, ModelError> {
        self.run(tokens, cache, all_logits, Some(observer))
    }
}
