//! One normalized model configuration, read from a Hugging Face `config.json` or GGUF metadata.
//!
//! Both sources are turned into the same [`ModelConfig`]; everything downstream (blocks,
//! architectures, the KV cache) reads only this. [`ModelConfig::validate`] rejects inconsistent
//! or absurd values with a message naming the field.

use crate::arch::Arch;
use crate::moe::{ExpertActivation, GroupLimit, GroupScore, Normalization, RouterConfig, Scoring};
use crate::ModelError;
use conch_formats::MetaValue;
use conch_kernels::ops::{RopeScaling, RopeStyle};
use serde_json::Value;

/// Upper bounds that no real checkpoint comes near; they keep size products far from overflow and
/// turn a damaged header into an error instead of a huge allocation.
const MAX_DIM: usize = 1 << 20;
const MAX_VOCAB: usize = 1 << 24;
const MAX_LAYERS: usize = 1 << 12;
const MAX_HEADS: usize = 1 << 12;

/// The feed-forward gate activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SiLU (SwiGLU feed-forward): Llama, Qwen.
    Silu,
    /// GELU, tanh approximation (GeGLU feed-forward): Gemma's `gelu_pytorch_tanh`.
    GeluTanh,
}

impl Activation {
    fn from_hf_name(name: &str) -> Result<Activation, ModelError> {
        match name {
            "silu" | "swish" => Ok(Activation::Silu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(Activation::GeluTanh),
            other => Err(ModelError::Unsupported(format!(
                "activation function {other:?}"
            ))),
        }
    }
}

/// Which keys a layer's attention may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKind {
    /// Every earlier position.
    Full,
    /// Only the last `sliding_window` positions (including the query's own).
    Sliding,
}

/// Rotary embedding parameters for one kind of layer.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub theta: f32,
    pub scaling: RopeScaling,
    /// Leading dimensions of each head that are rotated (the whole head unless partial rotary).
    pub rotary_dim: usize,
    pub style: RopeStyle,
}

/// Everything the dense architectures need to know, normalized across file formats.
///
/// Architectures with other layer kinds (mixture-of-experts feed-forwards, say) extend this with
/// optional sections parsed next to the dense fields, leaving these as they are.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub norm_eps: f32,
    /// The context length the model was trained for (informational; the cache capacity is the caller's).
    pub context_length: usize,
    /// The output projection reuses the token embedding matrix.
    pub tie_word_embeddings: bool,
    pub activation: Activation,
    /// Rotary embedding of full-attention layers (and of all layers when `local_rope` is `None`).
    pub rope: RopeConfig,
    /// Rotary embedding of sliding-window layers when it differs (Gemma 3's local base frequency).
    pub local_rope: Option<RopeConfig>,
    /// Window length of [`AttentionKind::Sliding`] layers.
    pub sliding_window: Option<usize>,
    /// One entry per layer.
    pub layer_kinds: Vec<AttentionKind>,
    /// Multiplier of `q·k` before the softmax.
    pub attention_scale: f32,
    pub attn_logit_softcap: Option<f32>,
    pub final_logit_softcap: Option<f32>,
    /// Queries, keys and values are clamped to `±clip_qkv` after their projections (OLMoE).
    pub clip_qkv: Option<f32>,
    /// Embeddings are multiplied by this (GraniteMoE's `embedding_multiplier`).
    pub embedding_multiplier: Option<f32>,
    /// Every residual branch is multiplied by this before it is added (GraniteMoE).
    pub residual_multiplier: Option<f32>,
    /// Logits are divided by this (GraniteMoE's `logits_scaling`).
    pub logit_divisor: Option<f32>,
    /// The mixture-of-experts feed-forward; `None` for dense models.
    pub moe: Option<MoeConfig>,
    /// Multi-head latent attention instead of grouped-query attention (DeepSeek).
    pub mla: Option<MlaConfig>,
    /// Lightning-attention hybrid layers (MiniMax-Text-01).
    pub lightning: Option<LightningConfig>,
}

/// Multi-head latent attention (DeepSeek-V2/V3): queries optionally through a low-rank bottleneck,
/// keys and values rebuilt per head from one shared latent vector per position, plus one rotary key
/// shared by all heads. [`ModelConfig::head_dim`] is `qk_nope_head_dim + qk_rope_head_dim`.
#[derive(Clone, Debug, PartialEq)]
pub struct MlaConfig {
    /// Rank of the query bottleneck; `None` for a direct query projection (DeepSeek-V2-Lite).
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
}

/// MiniMax-Text-01's hybrid layers: lightning (linear, decayed) attention in most layers, softmax
/// attention in the others, and residuals taken from the *normalized* input:
/// `x ← α · norm(x) + β · block(norm(x))` for both the attention and the feed-forward.
#[derive(Clone, Debug, PartialEq)]
pub struct LightningConfig {
    /// Per layer: `true` for lightning attention, `false` for softmax attention.
    pub linear_layers: Vec<bool>,
    pub linear_attn_alpha: f32,
    pub linear_attn_beta: f32,
    pub full_attn_alpha: f32,
    pub full_attn_beta: f32,
    pub mlp_alpha: f32,
    pub mlp_beta: f32,
}

/// The mixture-of-experts feed-forward of an architecture that has one.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    /// The routing rule: expert count, experts per token, scoring, normalisation, scaling.
    pub router: RouterConfig,
    /// Inner width of each routed expert.
    pub expert_intermediate_size: usize,
    /// Inner width of the shared expert (several shared experts are stored as one wider FFN);
    /// 0 when there is none.
    pub shared_intermediate_size: usize,
    /// The shared expert's output is scaled per token by `sigmoid(gate · x)` (Qwen2-MoE).
    pub shared_expert_gate: bool,
    /// One entry per layer: `true` where the feed-forward is MoE, `false` where it is a dense FFN of
    /// [`ModelConfig::intermediate_size`].
    pub sparse_layers: Vec<bool>,
    /// The experts' gating nonlinearity (SwiGLU; gpt-oss's clamped variant).
    pub activation: ExpertActivation,
}

impl MoeConfig {
    pub fn n_expert(&self) -> usize {
        self.router.n_expert
    }

    /// Experts used per token.
    pub fn top_k(&self) -> usize {
        self.router.top_k
    }

    /// The routing rule in words, e.g. "softmax, top-2 of 8, renormalised".
    pub fn routing_description(&self) -> String {
        let r = &self.router;
        let scoring = match r.scoring {
            Scoring::Softmax => "softmax".to_string(),
            Scoring::Sigmoid => "sigmoid".to_string(),
            Scoring::SoftmaxOfTopK => "softmax over the chosen logits".to_string(),
            Scoring::SparseMixer { jitter_eps } => format!("sparsemixer (jitter {jitter_eps})"),
        };
        let mut parts = vec![scoring, format!("top-{} of {}", r.top_k, r.n_expert)];
        if let Some(g) = r.group_limit {
            let score = match g.score {
                GroupScore::Max => "best",
                GroupScore::SumOfTop2 => "sum of top 2",
            };
            parts.push(format!(
                "best {} of {} groups by {score}",
                g.topk_group, g.n_group
            ));
        }
        match r.normalization {
            Normalization::None => {}
            Normalization::Sum => parts.push("renormalised".into()),
            Normalization::SumClamped { min } => {
                parts.push(format!("renormalised (sum clamped at {min})"))
            }
        }
        if r.scaling != 1.0 {
            parts.push(format!("scaled by {}", r.scaling));
        }
        if self.shared_intermediate_size > 0 {
            parts.push(format!(
                "shared expert of width {}{}",
                self.shared_intermediate_size,
                if self.shared_expert_gate {
                    ", gated"
                } else {
                    ""
                }
            ));
        }
        parts.join(", ")
    }

    /// Layers whose feed-forward is MoE.
    pub fn num_sparse_layers(&self) -> usize {
        self.sparse_layers.iter().filter(|s| **s).count()
    }
}

/// Weights of a model counted from its configuration (biases and q/k norm weights left out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParameterCounts {
    pub total: u64,
    /// Used for one token: every routed expert beyond the `top_k` chosen ones is left out.
    pub active: u64,
}

impl ModelConfig {
    /// Rotary parameters of layer `layer`.
    pub fn rope_for_layer(&self, layer: usize) -> &RopeConfig {
        match (self.layer_kinds[layer], &self.local_rope) {
            (AttentionKind::Sliding, Some(local)) => local,
            _ => &self.rope,
        }
    }

    /// Total and per-token active weight counts, from the configuration alone.
    pub fn parameter_counts(&self) -> ParameterCounts {
        let (h, v) = (self.hidden_size as u64, self.vocab_size as u64);
        let (q, kv) = (self.q_dim() as u64, self.kv_dim() as u64);
        let ffn = |inner: usize| 3 * h * inner as u64;
        let attention = match &self.mla {
            None => 2 * h * q + 2 * h * kv,
            Some(m) => {
                let heads = self.num_heads as u64;
                let (rank, rope) = (m.kv_lora_rank as u64, m.qk_rope_head_dim as u64);
                let (nope, v) = (m.qk_nope_head_dim as u64, m.v_head_dim as u64);
                let query = match m.q_lora_rank {
                    None => h * q,
                    Some(r) => h * r as u64 + r as u64 + r as u64 * q,
                };
                query + h * (rank + rope) + rank + heads * (nope + v) * rank + heads * v * h
            }
        } + 2 * h;
        let mut total = v * h + h + if self.tie_word_embeddings { 0 } else { v * h };
        let mut active = total;
        for layer in 0..self.num_layers {
            total += attention;
            active += attention;
            match &self.moe {
                Some(m) if m.sparse_layers[layer] => {
                    let shared = if m.shared_intermediate_size > 0 {
                        ffn(m.shared_intermediate_size) + if m.shared_expert_gate { h } else { 0 }
                    } else {
                        0
                    };
                    let fixed = m.n_expert() as u64 * h + shared;
                    let expert = ffn(m.expert_intermediate_size);
                    total += fixed + m.n_expert() as u64 * expert;
                    active += fixed + m.top_k() as u64 * expert;
                }
                _ => {
                    total += ffn(self.intermediate_size);
                    active += ffn(self.intermediate_size);
                }
            }
        }
        ParameterCounts { total, active }
    }

    /// Width of the concatenated query heads.
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of the concatenated key (or value) heads.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// What the KV cache keeps per position and layer: the K and V rows, or for latent attention
    /// the latent vector and the shared rotary key (values are recomputed from it).
    pub fn kv_layout(&self) -> crate::KvLayout {
        let (key_width, value_width) = match (&self.mla, &self.lightning) {
            (Some(m), _) => (m.kv_lora_rank + m.qk_rope_head_dim, 0),
            // Lightning layers keep a key per query head; softmax layers are widened to match.
            (None, Some(_)) => (self.q_dim(), self.q_dim()),
            (None, None) => (self.kv_dim(), self.kv_dim()),
        };
        crate::KvLayout {
            layers: self.num_layers,
            key_width,
            value_width,
            recurrent: self.lightning.is_some(),
        }
    }

    /// Reads a Hugging Face `config.json` (old `rope_theta`/`rope_scaling` keys and transformers 5's
    /// `rope_parameters` both accepted).
    pub fn from_hf_json(json: &Value) -> Result<ModelConfig, ModelError> {
        let obj = json
            .as_object()
            .ok_or_else(|| config_err("config.json is not a JSON object"))?;
        let model_type = obj
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| config_err("config.json has no \"model_type\""))?;
        let arch = Arch::from_hf_model_type(model_type).ok_or_else(|| {
            let hint = if obj.contains_key("text_config") {
                " (multimodal checkpoints are not supported; use the text-only model)"
            } else {
                ""
            };
            ModelError::Unsupported(format!("model_type {model_type:?}{hint}"))
        })?;
        let hf = HfKeys(obj);
        let hidden_size = hf.usize("hidden_size")?;
        let num_heads = hf.usize("num_attention_heads")?;
        let mla = match arch {
            Arch::Deepseek2 => Some(MlaConfig {
                q_lora_rank: hf.opt_usize("q_lora_rank")?,
                kv_lora_rank: hf.usize("kv_lora_rank")?,
                qk_nope_head_dim: hf.usize("qk_nope_head_dim")?,
                qk_rope_head_dim: hf.usize("qk_rope_head_dim")?,
                v_head_dim: hf.usize("v_head_dim")?,
            }),
            _ => None,
        };
        let num_kv_heads = match &mla {
            Some(_) => num_heads,
            None => hf.opt_usize("num_key_value_heads")?.unwrap_or(num_heads),
        };
        let head_dim = match (&mla, hf.opt_usize("head_dim")?) {
            (Some(m), _) => m.qk_nope_head_dim + m.qk_rope_head_dim,
            (None, Some(d)) => d,
            (None, None) => derived_head_dim(hidden_size, num_heads)?,
        };
        let num_layers = hf.usize("num_hidden_layers")?;
        let activation_name = hf
            .opt_str("hidden_activation")?
            .or(hf.opt_str("hidden_act")?)
            .unwrap_or(match arch {
                Arch::Gemma3 => "gelu_pytorch_tanh",
                _ => "silu",
            });
        // transformers 5 may keep the factor inside a flat `rope_parameters`.
        let partial_in_rope = match obj.get("rope_parameters").and_then(Value::as_object) {
            Some(params) => HfKeys(params).opt_f32("partial_rotary_factor")?,
            None => None,
        };
        let partial_rotary = match hf.opt_f32("partial_rotary_factor")? {
            Some(f) => f,
            None => partial_in_rope.unwrap_or(1.0),
        };
        let rotary_dim = match (&mla, hf.opt_usize("rotary_dim")?) {
            (Some(m), _) => m.qk_rope_head_dim,
            (None, Some(d)) if arch == Arch::MiniMaxText01 => d,
            (None, _) => rotary_dim(head_dim, partial_rotary)?,
        };

        // Per-layer-type rope parameters (transformers 5 for Gemma 3), a flat `rope_parameters`,
        // or the old `rope_theta` + `rope_scaling` (+ Gemma's `rope_local_base_freq`).
        let default_theta = if arch == Arch::Gemma3 {
            1_000_000.0
        } else {
            10_000.0
        };
        let rope_params = obj.get("rope_parameters").filter(|v| !v.is_null());
        let (global, local) = match rope_params {
            Some(p)
                if p.get("full_attention").is_some() || p.get("sliding_attention").is_some() =>
            {
                let global = match p.get("full_attention") {
                    Some(g) => parse_hf_rope(g, default_theta, &hf)?,
                    None => (default_theta, RopeScaling::None),
                };
                let local = p
                    .get("sliding_attention")
                    .map(|l| parse_hf_rope(l, 10_000.0, &hf))
                    .transpose()?;
                (global, local)
            }
            Some(p) => (
                parse_hf_rope(p, hf.opt_f32("rope_theta")?.unwrap_or(default_theta), &hf)?,
                None,
            ),
            None => {
                let theta = hf.opt_f32("rope_theta")?.unwrap_or(default_theta);
                let scaling = match obj.get("rope_scaling").filter(|v| !v.is_null()) {
                    Some(s) => parse_hf_rope(s, theta, &hf)?.1,
                    None => RopeScaling::None,
                };
                let local = match (arch, hf.opt_f32("rope_local_base_freq")?) {
                    (_, Some(t)) => Some((t, RopeScaling::None)),
                    (Arch::Gemma3, None) => Some((10_000.0, RopeScaling::None)),
                    _ => None,
                };
                ((theta, scaling), local)
            }
        };
        // ERNIE rotates interleaved pairs in Hugging Face checkpoints too.
        let style = match arch {
            Arch::Ernie45Moe => RopeStyle::Interleaved,
            // DeepSeek-V2 rotates complex pairs; V3 too unless `rope_interleave` is false.
            Arch::Deepseek2 if hf.opt_bool("rope_interleave")?.unwrap_or(true) => {
                RopeStyle::Interleaved
            }
            _ => RopeStyle::Neox,
        };
        let rope_of = |(theta, scaling): (f32, RopeScaling)| RopeConfig {
            theta,
            scaling,
            rotary_dim,
            style,
        };

        let layer_kinds = hf_layer_kinds(arch, &hf, num_layers)?;
        let sliding_window = if layer_kinds.contains(&AttentionKind::Sliding) {
            Some(
                hf.opt_usize("sliding_window")?
                    .ok_or_else(|| config_err("sliding-window layers but no \"sliding_window\""))?,
            )
        } else {
            None
        };
        let attention_scale = match (hf.opt_f32("query_pre_attn_scalar")?, arch) {
            (Some(s), Arch::Gemma3) => positive("query_pre_attn_scalar", s)?.powf(-0.5),
            (_, Arch::GraniteMoe) => hf
                .opt_f32("attention_multiplier")?
                .unwrap_or((head_dim as f32).powf(-0.5)),
            _ => (head_dim as f32).powf(-0.5),
        };
        let attention_scale = yarn_sharpened(attention_scale, mla.is_some(), &global.1);
        let granite = |key: &str| -> Result<Option<f32>, ModelError> {
            match arch {
                Arch::GraniteMoe => hf.opt_f32(key),
                _ => Ok(None),
            }
        };
        let config = ModelConfig {
            arch,
            vocab_size: hf.usize("vocab_size")?,
            hidden_size,
            intermediate_size: hf.usize("intermediate_size")?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            norm_eps: hf.opt_f32("rms_norm_eps")?.unwrap_or(1e-6),
            context_length: hf.opt_usize("max_position_embeddings")?.unwrap_or(0),
            tie_word_embeddings: hf
                .opt_bool("tie_word_embeddings")?
                .unwrap_or(arch == Arch::Gemma3),
            activation: Activation::from_hf_name(activation_name)?,
            rope: rope_of(global),
            local_rope: local.map(rope_of),
            sliding_window,
            layer_kinds,
            attention_scale,
            // transformers' Gemma 3 reads attn_logit_softcapping but never applies it (every
            // release has it null); Gemma 2 does apply it.
            attn_logit_softcap: match arch {
                Arch::Gemma3 => None,
                _ => hf.opt_f32("attn_logit_softcapping")?,
            },
            final_logit_softcap: hf.opt_f32("final_logit_softcapping")?,
            clip_qkv: hf.opt_f32("clip_qkv")?,
            embedding_multiplier: granite("embedding_multiplier")?,
            residual_multiplier: granite("residual_multiplier")?,
            logit_divisor: granite("logits_scaling")?,
            moe: hf_moe(arch, model_type, &hf, num_layers)?,
            mla,
            lightning: match arch {
                Arch::MiniMaxText01 => Some(hf_lightning(&hf, num_layers)?),
                _ => None,
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads GGUF metadata through `get` (a key → value lookup). `vocab_from_embedding` is the row
    /// count of `token_embd.weight`, used when `{arch}.vocab_size` is absent; `has_output` says
    /// whether a separate `output.weight` exists.
    pub fn from_gguf_metadata(
        get: &dyn Fn(&str) -> Option<MetaValue>,
        vocab_from_embedding: Option<usize>,
        has_output: bool,
    ) -> Result<ModelConfig, ModelError> {
        let arch_name = match get("general.architecture") {
            Some(MetaValue::String(s)) => s,
            Some(_) => return Err(config_err("general.architecture is not a string")),
            None => return Err(config_err("GGUF metadata has no general.architecture")),
        };
        let arch = Arch::from_gguf_name(&arch_name)
            .ok_or_else(|| ModelError::Unsupported(format!("GGUF architecture {arch_name:?}")))?;
        let meta = GgufKeys {
            get,
            arch: &arch_name,
        };
        // llama.cpp's converter writes Mixtral as `llama` with experts.
        let arch = match arch {
            Arch::Llama if meta.opt_usize("expert_count")?.is_some_and(|n| n > 0) => Arch::Mixtral,
            other => other,
        };
        let hidden_size = meta.usize("embedding_length")?;
        let num_heads = meta.usize("attention.head_count")?;
        // llama.cpp's DeepSeek files describe the absorbed (latent) attention in key_length /
        // value_length and the per-head sizes in the `_mla` keys.
        let mla = match arch {
            Arch::Deepseek2 => {
                let kv_lora_rank = meta.usize("attention.kv_lora_rank")?;
                let rope = meta.usize("rope.dimension_count")?;
                let key = match meta.opt_usize("attention.key_length_mla")? {
                    Some(k) => k,
                    None => meta.usize("attention.key_length")?,
                };
                let v_head_dim = match meta.opt_usize("attention.value_length_mla")? {
                    Some(v) => v,
                    None => meta.usize("attention.value_length")?,
                };
                if key <= rope {
                    return Err(config_err(format!(
                        "MLA key length {key} does not exceed the rotary dimension {rope}"
                    )));
                }
                Some(MlaConfig {
                    q_lora_rank: meta.opt_usize("attention.q_lora_rank")?.filter(|r| *r > 0),
                    kv_lora_rank,
                    qk_nope_head_dim: key - rope,
                    qk_rope_head_dim: rope,
                    v_head_dim,
                })
            }
            _ => None,
        };
        let num_kv_heads = match &mla {
            Some(_) => num_heads,
            None => meta
                .opt_usize("attention.head_count_kv")?
                .unwrap_or(num_heads),
        };
        let head_dim = match (&mla, meta.opt_usize("attention.key_length")?) {
            (Some(m), _) => m.qk_nope_head_dim + m.qk_rope_head_dim,
            (None, Some(d)) => d,
            (None, None) => derived_head_dim(hidden_size, num_heads)?,
        };
        if let (None, Some(v)) = (&mla, meta.opt_usize("attention.value_length")?) {
            if v != head_dim {
                return Err(config_err(format!(
                    "attention.value_length {v} differs from key_length {head_dim}"
                )));
            }
        }
        let num_layers = meta.usize("block_count")?;
        let rotary_dim = meta.opt_usize("rope.dimension_count")?.unwrap_or(head_dim);
        let vocab_size = match meta.opt_usize("vocab_size")? {
            Some(v) => v,
            None => vocab_from_embedding
                .ok_or_else(|| config_err("no vocab_size and no token_embd.weight"))?,
        };
        // llama.cpp rotates llama's pairs interleaved (its converter permutes Q/K to match);
        // Qwen 2/3 and Gemma 3 use the NeoX half split.
        let style = match arch {
            Arch::Llama | Arch::Mixtral | Arch::GraniteMoe | Arch::Ernie45Moe | Arch::Deepseek2 => {
                RopeStyle::Interleaved
            }
            Arch::Qwen2
            | Arch::Qwen3
            | Arch::Gemma3
            | Arch::Qwen2Moe
            | Arch::Qwen3Moe
            | Arch::Olmoe
            | Arch::MiniMaxM2
            | Arch::Glm4Moe
            | Arch::GptOss
            | Arch::PhiMoe
            | Arch::MiniMaxText01 => RopeStyle::Neox,
        };
        let rope = RopeConfig {
            theta: meta.opt_f32("rope.freq_base")?.unwrap_or(10_000.0),
            scaling: gguf_rope_scaling(&meta)?,
            rotary_dim,
            style,
        };

        let (layer_kinds, sliding_window, local_rope) =
            match meta.opt_usize("attention.sliding_window")? {
                // gpt-oss alternates sliding and full layers, all with the same rotary embedding.
                Some(window) if window > 0 && arch == Arch::GptOss => {
                    let kinds = gguf_sliding_pattern(&meta, num_layers, 2)?;
                    (kinds, Some(window), None)
                }
                Some(window) if window > 0 && arch == Arch::Gemma3 => {
                    let kinds = gguf_sliding_pattern(&meta, num_layers, 6)?;
                    let local = RopeConfig {
                        theta: meta.opt_f32("rope.freq_base_swa")?.unwrap_or(10_000.0),
                        scaling: RopeScaling::None,
                        rotary_dim,
                        style,
                    };
                    (kinds, Some(window), Some(local))
                }
                _ => (vec![AttentionKind::Full; num_layers], None, None),
            };
        // llama.cpp's gemma3 scales by 1/sqrt(head_dim), except the 27B (62 layers) whose
        // query_pre_attn_scalar is hidden/heads; an explicit attention.scale wins.
        let attention_scale = match meta.opt_f32("attention.scale")? {
            Some(s) => s,
            None if arch == Arch::Gemma3 && num_layers == 62 => {
                ((hidden_size / num_heads.max(1)) as f32).powf(-0.5)
            }
            None => (head_dim as f32).powf(-0.5),
        };
        let attention_scale = yarn_sharpened(attention_scale, mla.is_some(), &rope.scaling);
        let moe = gguf_moe(arch, &meta, num_layers)?;
        let intermediate_size = match (meta.opt_usize("feed_forward_length")?, &moe) {
            (Some(n), _) => n,
            (None, Some(m)) => m.expert_intermediate_size,
            (None, None) => meta.usize("feed_forward_length")?,
        };
        let granite = |key: &str| -> Result<Option<f32>, ModelError> {
            match arch {
                Arch::GraniteMoe => meta.opt_f32(key),
                _ => Ok(None),
            }
        };
        let config = ModelConfig {
            arch,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            norm_eps: meta
                .opt_f32("attention.layer_norm_rms_epsilon")?
                .unwrap_or(1e-6),
            context_length: meta.opt_usize("context_length")?.unwrap_or(0),
            tie_word_embeddings: !has_output,
            activation: if arch == Arch::Gemma3 {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            rope,
            local_rope,
            sliding_window,
            layer_kinds,
            attention_scale,
            // As in transformers (see from_hf_json), Gemma 3 never applies attention soft-capping.
            attn_logit_softcap: match arch {
                Arch::Gemma3 => None,
                _ => meta.opt_f32("attn_logit_softcapping")?,
            },
            final_logit_softcap: meta.opt_f32("final_logit_softcapping")?,
            clip_qkv: meta.opt_f32("attention.clamp_kqv")?,
            embedding_multiplier: granite("embedding_scale")?,
            residual_multiplier: granite("residual_scale")?,
            logit_divisor: granite("logit_scale")?,
            moe,
            mla,
            lightning: match arch {
                Arch::MiniMaxText01 => Some(gguf_lightning(&meta, num_layers)?),
                _ => None,
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks sizes are non-zero, bounded and mutually consistent.
    pub fn validate(&self) -> Result<(), ModelError> {
        let sizes = [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("hidden_size", self.hidden_size, MAX_DIM),
            ("intermediate_size", self.intermediate_size, MAX_DIM),
            ("num_layers", self.num_layers, MAX_LAYERS),
            ("num_heads", self.num_heads, MAX_HEADS),
            ("num_kv_heads", self.num_kv_heads, MAX_HEADS),
            ("head_dim", self.head_dim, MAX_DIM),
        ];
        for (name, value, max) in sizes {
            if value == 0 {
                return Err(config_err(format!("{name} is 0")));
            }
            if value > max {
                return Err(config_err(format!(
                    "{name} {value} is larger than the supported {max}"
                )));
            }
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(config_err(format!(
                "num_kv_heads {} does not divide num_heads {}",
                self.num_kv_heads, self.num_heads
            )));
        }
        if self.q_dim() > MAX_DIM {
            return Err(config_err(format!(
                "num_heads * head_dim = {} is too large",
                self.q_dim()
            )));
        }
        for rope in std::iter::once(&self.rope).chain(&self.local_rope) {
            if rope.rotary_dim % 2 != 0 || rope.rotary_dim > self.head_dim {
                return Err(config_err(format!(
                    "rotary dimension {} must be even and at most head_dim {}",
                    rope.rotary_dim, self.head_dim
                )));
            }
            if !(rope.theta.is_finite() && rope.theta > 0.0) {
                return Err(config_err(format!(
                    "rope theta {} is not a positive number",
                    rope.theta
                )));
            }
        }
        if self.layer_kinds.len() != self.num_layers {
            return Err(config_err(format!(
                "{} layer types for {} layers",
                self.layer_kinds.len(),
                self.num_layers
            )));
        }
        if self.layer_kinds.contains(&AttentionKind::Sliding)
            && self.sliding_window.is_none_or(|w| w == 0)
        {
            return Err(config_err(
                "sliding-window layers need a sliding_window > 0",
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return Err(config_err(format!(
                "norm epsilon {} is not a non-negative number",
                self.norm_eps
            )));
        }
        if !(self.attention_scale.is_finite() && self.attention_scale > 0.0) {
            return Err(config_err(format!(
                "attention scale {} is not a positive number",
                self.attention_scale
            )));
        }
        if let Some(l) = &self.lightning {
            if l.linear_layers.len() != self.num_layers {
                return Err(config_err(format!(
                    "{} lightning layer flags for {} layers",
                    l.linear_layers.len(),
                    self.num_layers
                )));
            }
        }
        if let Some(m) = &self.mla {
            for (name, value) in [
                ("kv_lora_rank", m.kv_lora_rank),
                ("qk_rope_head_dim", m.qk_rope_head_dim),
                ("v_head_dim", m.v_head_dim),
                ("q_lora_rank", m.q_lora_rank.unwrap_or(1)),
            ] {
                if value == 0 || value > MAX_DIM {
                    return Err(config_err(format!("MLA {name} {value} is out of range")));
                }
            }
            if m.qk_nope_head_dim + m.qk_rope_head_dim != self.head_dim
                || self.num_kv_heads != self.num_heads
            {
                return Err(config_err(
                    "MLA head sizes disagree with head_dim / num_kv_heads",
                ));
            }
        }
        if let Some(m) = &self.moe {
            m.router.validate()?;
            if m.sparse_layers.len() != self.num_layers {
                return Err(config_err(format!(
                    "{} MoE layer flags for {} layers",
                    m.sparse_layers.len(),
                    self.num_layers
                )));
            }
            for (name, value) in [
                ("expert intermediate size", m.expert_intermediate_size),
                (
                    "shared expert intermediate size",
                    m.shared_intermediate_size,
                ),
                ("expert count", m.router.n_expert),
            ] {
                if value > MAX_DIM {
                    return Err(config_err(format!(
                        "{name} {value} is larger than the supported {MAX_DIM}"
                    )));
                }
            }
            if m.expert_intermediate_size == 0 {
                return Err(config_err("expert intermediate size is 0"));
            }
        }
        for (name, cap) in [
            ("attn_logit_softcap", self.attn_logit_softcap),
            ("final_logit_softcap", self.final_logit_softcap),
            ("clip_qkv", self.clip_qkv),
            ("embedding_multiplier", self.embedding_multiplier),
            ("residual_multiplier", self.residual_multiplier),
            ("logit_divisor", self.logit_divisor),
        ] {
            if let Some(c) = cap {
                positive(name, c)?;
            }
        }
        Ok(())
    }
}

fn config_err(msg: impl Into<String>) -> ModelError {
    ModelError::Config(msg.into())
}

fn positive(name: &str, v: f32) -> Result<f32, ModelError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(config_err(format!("{name} {v} is not a positive number")))
    }
}

fn derived_head_dim(hidden: usize, heads: usize) -> Result<usize, ModelError> {
    if heads == 0 {
        return Err(config_err("num_attention_heads is 0"));
    }
    if hidden % heads != 0 {
        return Err(config_err(format!(
            "hidden_size {hidden} is not divisible by num_attention_heads {heads} and no head_dim is given"
        )));
    }
    Ok(hidden / heads)
}

fn rotary_dim(head_dim: usize, partial: f32) -> Result<usize, ModelError> {
    if !(partial > 0.0 && partial <= 1.0) {
        return Err(config_err(format!(
            "partial_rotary_factor {partial} is not in (0, 1]"
        )));
    }
    Ok((head_dim as f32 * partial) as usize)
}

/// Typed access to a `config.json` object; wrong types are errors naming the key.
struct HfKeys<'a>(&'a serde_json::Map<String, Value>);

impl HfKeys<'_> {
    fn present(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>, ModelError> {
        self.present(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        config_err(format!("\"{key}\" is not a non-negative integer: {v}"))
                    })
            })
            .transpose()
    }
    fn usize(&self, key: &str) -> Result<usize, ModelError> {
        self.opt_usize(key)?
            .ok_or_else(|| config_err(format!("config.json has no \"{key}\"")))
    }
    fn opt_f32(&self, key: &str) -> Result<Option<f32>, ModelError> {
        self.present(key)
            .map(|v| {
                v.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| config_err(format!("\"{key}\" is not a number: {v}")))
            })
            .transpose()
    }
    fn opt_bool(&self, key: &str) -> Result<Option<bool>, ModelError> {
        self.present(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| config_err(format!("\"{key}\" is not a boolean: {v}")))
            })
            .transpose()
    }
    fn opt_str(&self, key: &str) -> Result<Option<&str>, ModelError> {
        self.present(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| config_err(format!("\"{key}\" is not a string: {v}")))
            })
            .transpose()
    }
}

/// One rope parameter object (`rope_parameters`, one of its per-layer-type entries, or the old
/// `rope_scaling`), with `theta` used when it has no `rope_theta`.
fn parse_hf_rope(
    params: &Value,
    theta: f32,
    top: &HfKeys,
) -> Result<(f32, RopeScaling), ModelError> {
    let obj = params
        .as_object()
        .ok_or_else(|| config_err(format!("rope parameters are not an object: {params}")))?;
    let p = HfKeys(obj);
    let theta = p.opt_f32("rope_theta")?.unwrap_or(theta);
    let kind = p
        .opt_str("rope_type")?
        .or(p.opt_str("type")?)
        .unwrap_or("default");
    let factor = || {
        p.opt_f32("factor")?
            .ok_or_else(|| config_err(format!("rope type {kind:?} needs a \"factor\"")))
    };
    let original_context = || -> Result<f32, ModelError> {
        match p.opt_usize("original_max_position_embeddings")? {
            Some(n) => Ok(n as f32),
            None => top
                .opt_usize("original_max_position_embeddings")?
                .or(top.opt_usize("max_position_embeddings")?)
                .map(|n| n as f32)
                .ok_or_else(|| {
                    config_err(format!(
                        "rope type {kind:?} needs original_max_position_embeddings"
                    ))
                }),
        }
    };
    let scaling = match kind {
        "default" | "none" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: positive("rope factor", factor()?)?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: positive("rope factor", factor()?)?,
            low_freq_factor: p.opt_f32("low_freq_factor")?.unwrap_or(1.0),
            high_freq_factor: p.opt_f32("high_freq_factor")?.unwrap_or(4.0),
            original_context: original_context()?,
        },
        "yarn" => RopeScaling::Yarn {
            factor: positive("rope factor", factor()?)?,
            original_context: original_context()?,
            beta_fast: p
                .opt_f32("beta_fast")?
                .filter(|b| *b != 0.0)
                .unwrap_or(32.0),
            beta_slow: p.opt_f32("beta_slow")?.filter(|b| *b != 0.0).unwrap_or(1.0),
            attention_factor: p.opt_f32("attention_factor")?,
            mscale: p.opt_f32("mscale")?,
            mscale_all_dim: p.opt_f32("mscale_all_dim")?,
            truncate: p.opt_bool("truncate")?.unwrap_or(true),
        },
        "longrope" => {
            let short_factor = match p.present("short_factor").map(|v| v.as_array()) {
                Some(Some(list)) => list
                    .iter()
                    .map(|v| v.as_f64().filter(|f| *f > 0.0).map(|f| f as f32))
                    .collect::<Option<Vec<f32>>>()
                    .ok_or_else(|| config_err("longrope short_factor must be positive numbers"))?,
                _ => {
                    return Err(config_err(
                        "longrope rope scaling needs a short_factor list",
                    ))
                }
            };
            // transformers' default multiplier, sqrt(1 + ln(s) / ln(original)) with s the context
            // extension, stands in for a missing mscale.
            let original = original_context()?;
            let extension = top
                .opt_usize("max_position_embeddings")?
                .map_or(1.0, |m| m as f32 / original);
            let default = match p.opt_f32("attention_factor")? {
                Some(a) => a,
                None if extension <= 1.0 => 1.0,
                None => (1.0 + extension.ln() / original.ln()).sqrt(),
            };
            RopeScaling::LongRope {
                short_factor,
                original_context: original as usize,
                short_mscale: p.opt_f32("short_mscale")?.unwrap_or(default),
                long_mscale: p.opt_f32("long_mscale")?.unwrap_or(default),
            }
        }
        other => return Err(ModelError::Unsupported(format!("rope type {other:?}"))),
    };
    if let RopeScaling::Llama3 {
        low_freq_factor,
        high_freq_factor,
        ..
    } = scaling
    {
        if low_freq_factor >= high_freq_factor {
            return Err(config_err(
                "llama3 rope: low_freq_factor must be below high_freq_factor",
            ));
        }
    }
    Ok((theta, scaling))
}

fn hf_layer_kinds(
    arch: Arch,
    hf: &HfKeys,
    num_layers: usize,
) -> Result<Vec<AttentionKind>, ModelError> {
    if let Some(types) = hf.present("layer_types") {
        let list = types
            .as_array()
            .ok_or_else(|| config_err("\"layer_types\" is not a list"))?;
        if list.len() != num_layers {
            return Err(config_err(format!(
                "\"layer_types\" has {} entries for {num_layers} layers",
                list.len()
            )));
        }
        return list
            .iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(AttentionKind::Full),
                Some("sliding_attention") => Ok(AttentionKind::Sliding),
                // MiniMax's lightning layers see every earlier position too.
                Some("linear_attention") if arch == Arch::MiniMaxText01 => Ok(AttentionKind::Full),
                _ => Err(ModelError::Unsupported(format!("layer type {t}"))),
            })
            .collect();
    }
    match arch {
        Arch::Gemma3 => {
            let pattern = match hf.opt_usize("sliding_window_pattern")? {
                Some(p) => p,
                None => hf.opt_usize("_sliding_window_pattern")?.unwrap_or(6),
            };
            if pattern == 0 {
                return Err(config_err("sliding_window_pattern is 0"));
            }
            Ok((0..num_layers)
                .map(|i| {
                    if (i + 1) % pattern != 0 {
                        AttentionKind::Sliding
                    } else {
                        AttentionKind::Full
                    }
                })
                .collect())
        }
        _ if hf.opt_bool("use_sliding_window")?.unwrap_or(false) => {
            let first = hf.opt_usize("max_window_layers")?.unwrap_or(0);
            Ok((0..num_layers)
                .map(|i| {
                    if i >= first {
                        AttentionKind::Sliding
                    } else {
                        AttentionKind::Full
                    }
                })
                .collect())
        }
        _ => Ok(vec![AttentionKind::Full; num_layers]),
    }
}

/// The MoE section of a `config.json` (hub and transformers-5 key names both accepted).
fn hf_moe(
    arch: Arch,
    model_type: &str,
    hf: &HfKeys,
    num_layers: usize,
) -> Result<Option<MoeConfig>, ModelError> {
    let (scoring, default_norm) = match arch {
        Arch::Mixtral | Arch::MiniMaxM2 | Arch::Ernie45Moe | Arch::MiniMaxText01 => {
            (Scoring::Softmax, true)
        }
        // transformers 5 writes no scoring_func for GLM-4.5 and DeepSeek-V3, which use sigmoid.
        Arch::Glm4Moe => (Scoring::Sigmoid, false),
        Arch::Deepseek2 if model_type == "deepseek_v3" => (Scoring::Sigmoid, false),
        Arch::Deepseek2 => (Scoring::Softmax, false),
        Arch::Qwen2Moe | Arch::Qwen3Moe | Arch::Olmoe => (Scoring::Softmax, false),
        Arch::GraniteMoe | Arch::GptOss => (Scoring::SoftmaxOfTopK, false),
        Arch::PhiMoe => (
            Scoring::SparseMixer {
                jitter_eps: hf.opt_f32("router_jitter_noise")?.unwrap_or(0.01),
            },
            false,
        ),
        Arch::Llama | Arch::Qwen2 | Arch::Qwen3 | Arch::Gemma3 => return Ok(None),
    };
    let scoring = match hf.opt_str("scoring_func")? {
        Some("sigmoid") => Scoring::Sigmoid,
        Some("softmax") => Scoring::Softmax,
        Some(other) => {
            return Err(ModelError::Unsupported(format!(
                "MoE scoring function {other:?}"
            )))
        }
        // transformers 5 writes no scoring_func for MiniMax-M2, which always uses sigmoid.
        None if arch == Arch::MiniMaxM2 => Scoring::Sigmoid,
        None => scoring,
    };
    let first_of = |keys: &[&str]| -> Result<usize, ModelError> {
        for key in keys {
            if let Some(v) = hf.opt_usize(key)? {
                return Ok(v);
            }
        }
        Err(config_err(format!("config.json has no \"{}\"", keys[0])))
    };
    let n_expert = first_of(&[
        "num_local_experts",
        "num_experts",
        "moe_num_experts",
        "n_routed_experts",
    ])?;
    let top_k = first_of(&["num_experts_per_tok", "moe_k"])?;
    let normalization = match hf.opt_bool("norm_topk_prob")?.unwrap_or(default_norm) {
        false => Normalization::None,
        true if arch == Arch::Ernie45Moe => Normalization::SumClamped {
            min: hf.opt_f32("moe_norm_min")?.unwrap_or(1e-12),
        },
        true => Normalization::Sum,
    };
    let expert_intermediate_size = match arch {
        Arch::Qwen2Moe | Arch::Qwen3Moe | Arch::Ernie45Moe | Arch::Glm4Moe | Arch::Deepseek2 => {
            hf.usize("moe_intermediate_size")?
        }
        _ => hf.usize("intermediate_size")?,
    };
    let sparse_layers = match arch {
        // Qwen-MoE: every decoder_sparse_step-th layer unless listed in mlp_only_layers.
        Arch::Qwen2Moe | Arch::Qwen3Moe => {
            let step = hf.opt_usize("decoder_sparse_step")?.unwrap_or(1);
            let dense_only: Vec<usize> = match hf.present("mlp_only_layers") {
                Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
                    config_err(format!(
                        "\"mlp_only_layers\" is not a list of layer numbers: {v}"
                    ))
                })?,
                None => Vec::new(),
            };
            (0..num_layers)
                .map(|i| step > 0 && (i + 1) % step == 0 && !dense_only.contains(&i))
                .collect()
        }
        // ERNIE: every moe_layer_interval-th layer from moe_layer_start_index to
        // moe_layer_end_index (-1: the last).
        Arch::Ernie45Moe => {
            let start = hf.opt_usize("moe_layer_start_index")?.unwrap_or(1);
            let end = match hf.present("moe_layer_end_index").and_then(Value::as_i64) {
                Some(e) if e >= 0 => e as usize,
                _ => num_layers.saturating_sub(1),
            };
            let interval = hf.opt_usize("moe_layer_interval")?.unwrap_or(1);
            (0..num_layers)
                .map(|i| interval > 0 && (i + 1) % interval == 0 && i >= start && i <= end)
                .collect()
        }
        // DeepSeek / GLM: dense before first_k_dense_replace, then every moe_layer_freq-th layer.
        Arch::Glm4Moe | Arch::Deepseek2 => {
            let first = hf.opt_usize("first_k_dense_replace")?.unwrap_or(0);
            let freq = hf.opt_usize("moe_layer_freq")?.unwrap_or(1);
            (0..num_layers)
                .map(|i| i >= first && freq > 0 && i % freq == 0)
                .collect()
        }
        _ => vec![true; num_layers],
    };
    let shared_intermediate_size = match arch {
        Arch::Qwen2Moe => hf
            .opt_usize("shared_expert_intermediate_size")?
            .unwrap_or(0),
        Arch::Ernie45Moe => {
            hf.opt_usize("moe_num_shared_experts")?.unwrap_or(0) * expert_intermediate_size
        }
        Arch::Glm4Moe | Arch::Deepseek2 => {
            hf.opt_usize("n_shared_experts")?.unwrap_or(0) * expert_intermediate_size
        }
        _ => 0,
    };
    let mut router = RouterConfig::new(n_expert, top_k, scoring, normalization);
    router.scaling = hf.opt_f32("routed_scaling_factor")?.unwrap_or(1.0);
    let group_score = match (arch, hf.opt_str("topk_method")?) {
        (_, Some("greedy")) => None,
        (_, Some("group_limited_greedy")) => Some(GroupScore::Max),
        (Arch::Glm4Moe, _) | (_, Some("noaux_tc")) => Some(GroupScore::SumOfTop2),
        (Arch::Deepseek2, None) if model_type == "deepseek_v3" => Some(GroupScore::SumOfTop2),
        _ => None,
    };
    if let Some(score) = group_score {
        router.group_limit = Some(GroupLimit {
            n_group: hf.opt_usize("n_group")?.unwrap_or(1),
            topk_group: hf.opt_usize("topk_group")?.unwrap_or(1),
            score,
        });
    }
    Ok(Some(MoeConfig {
        router,
        expert_intermediate_size,
        shared_intermediate_size,
        shared_expert_gate: arch == Arch::Qwen2Moe && shared_intermediate_size > 0,
        sparse_layers,
        activation: match arch {
            Arch::GptOss => ExpertActivation::ClampedSwiglu {
                alpha: hf.opt_f32("swiglu_alpha")?.unwrap_or(1.702),
                limit: hf.opt_f32("swiglu_limit")?.unwrap_or(7.0),
            },
            _ => ExpertActivation::Swiglu,
        },
    }))
}

/// MiniMax-Text-01's layer pattern and residual factors from `config.json`: transformers 5's
/// `layer_types` and `*_alpha_factor` / `*_beta_factor`, or the original `attn_type_list` (0 =
/// lightning) and `layernorm_*_alpha` / `_beta`.
fn hf_lightning(hf: &HfKeys, num_layers: usize) -> Result<LightningConfig, ModelError> {
    let list = |key: &str| -> Option<&Vec<Value>> {
        hf.present(key)
            .and_then(Value::as_array)
            .filter(|l| l.len() == num_layers)
    };
    let linear_layers = if let Some(types) = list("layer_types") {
        types
            .iter()
            .map(|t| t.as_str() == Some("linear_attention"))
            .collect()
    } else if let Some(types) = list("attn_type_list") {
        types.iter().map(|t| t.as_u64() == Some(0)).collect()
    } else {
        return Err(config_err(format!(
            "MiniMax needs \"layer_types\" or \"attn_type_list\" with {num_layers} entries"
        )));
    };
    let factor = |new: &str, old: &str| -> Result<f32, ModelError> {
        Ok(match hf.opt_f32(new)? {
            Some(f) => f,
            None => hf.opt_f32(old)?.unwrap_or(1.0),
        })
    };
    Ok(LightningConfig {
        linear_layers,
        linear_attn_alpha: factor(
            "linear_attn_alpha_factor",
            "layernorm_linear_attention_alpha",
        )?,
        linear_attn_beta: factor("linear_attn_beta_factor", "layernorm_linear_attention_beta")?,
        full_attn_alpha: factor("full_attn_alpha_factor", "layernorm_full_attention_alpha")?,
        full_attn_beta: factor("full_attn_beta_factor", "layernorm_full_attention_beta")?,
        mlp_alpha: factor("mlp_alpha_factor", "layernorm_mlp_alpha")?,
        mlp_beta: factor("mlp_beta_factor", "layernorm_mlp_beta")?,
    })
}

/// MiniMax-Text-01 in GGUF, as llama.cpp reads it: `attention.recurrent_layers` or every
/// `full_attention_interval`-th layer (default 8) softmax; one `residual_scale` for every α, β = 1.
fn gguf_lightning(meta: &GgufKeys, num_layers: usize) -> Result<LightningConfig, ModelError> {
    let (full, recurrent) = meta.value("attention.recurrent_layers");
    let linear_layers = match recurrent {
        Some(MetaValue::Array(items)) if items.len() == num_layers => items
            .iter()
            .map(|v| match v {
                MetaValue::Bool(b) => Ok(*b),
                other => Err(config_err(format!("{full} holds a non-bool {other:?}"))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(config_err(format!(
                "{full} is not a list of {num_layers} bools"
            )))
        }
        None => {
            let interval = meta
                .opt_usize("full_attention_interval")?
                .unwrap_or(8)
                .max(1);
            (0..num_layers).map(|i| (i + 1) % interval != 0).collect()
        }
    };
    let alpha = meta.opt_f32("residual_scale")?.unwrap_or(1.0);
    Ok(LightningConfig {
        linear_layers,
        linear_attn_alpha: alpha,
        linear_attn_beta: 1.0,
        full_attn_alpha: alpha,
        full_attn_beta: 1.0,
        mlp_alpha: alpha,
        mlp_beta: 1.0,
    })
}

/// The MoE section of GGUF metadata (llama.cpp's `{arch}.expert_*` keys), present when the file
/// has experts. Where a rule is not in the metadata, llama.cpp's fixed choice for the architecture
/// is used.
fn gguf_moe(
    arch: Arch,
    meta: &GgufKeys,
    num_layers: usize,
) -> Result<Option<MoeConfig>, ModelError> {
    let Some(n_expert) = meta.opt_usize("expert_count")?.filter(|n| *n > 0) else {
        return Ok(None);
    };
    let top_k = meta.usize("expert_used_count")?;
    let expert_intermediate_size = match meta.opt_usize("expert_feed_forward_length")? {
        Some(n) => n,
        None => meta.usize("feed_forward_length")?,
    };
    let scoring = match (arch, meta.opt_usize("expert_gating_func")?) {
        (Arch::GraniteMoe | Arch::GptOss, _) => Scoring::SoftmaxOfTopK,
        // GGUF has no jitter eps; transformers' default.
        (Arch::PhiMoe, _) => Scoring::SparseMixer { jitter_eps: 0.01 },
        (_, None | Some(1)) => Scoring::Softmax,
        (_, Some(2)) => Scoring::Sigmoid,
        (_, Some(other)) => {
            return Err(ModelError::Unsupported(format!(
                "{}.expert_gating_func {other}",
                meta.arch
            )))
        }
    };
    let default_norm = matches!(
        arch,
        Arch::Mixtral | Arch::Qwen3Moe | Arch::MiniMaxM2 | Arch::Ernie45Moe | Arch::MiniMaxText01
    );
    let normalization = match meta
        .opt_bool("expert_weights_norm")?
        .unwrap_or(default_norm)
    {
        _ if matches!(
            scoring,
            Scoring::SoftmaxOfTopK | Scoring::SparseMixer { .. }
        ) =>
        {
            Normalization::None
        }
        // GGUF has no moe_norm_min; transformers' default.
        true if arch == Arch::Ernie45Moe => Normalization::SumClamped { min: 1e-12 },
        true => Normalization::Sum,
        false => Normalization::None,
    };
    let mut router = RouterConfig::new(n_expert, top_k, scoring, normalization);
    router.scaling = meta.opt_f32("expert_weights_scale")?.unwrap_or(1.0);
    // GGUF does not say how groups are ranked: sigmoid routers (DeepSeek-V3, GLM-4.5) sum each
    // group's top two scores, softmax ones (DeepSeek-V2) take the best.
    if let Some(n_group) = meta.opt_usize("expert_group_count")?.filter(|n| *n > 1) {
        router.group_limit = Some(GroupLimit {
            n_group,
            topk_group: meta.usize("expert_group_used_count")?,
            score: if scoring == Scoring::Sigmoid {
                GroupScore::SumOfTop2
            } else {
                GroupScore::Max
            },
        });
    }
    // The shared count times the expert width where both are given: ERNIE's converter writes an
    // expert_shared_feed_forward_length that does not match its tensors.
    let shared_intermediate_size = match (
        meta.opt_usize("expert_shared_count")?,
        meta.opt_usize("expert_shared_feed_forward_length")?,
    ) {
        (Some(count), _) => count * expert_intermediate_size,
        (None, Some(n)) => n,
        (None, None) => 0,
    };
    let leading_dense = meta.opt_usize("leading_dense_block_count")?.unwrap_or(0);
    let step = meta
        .opt_usize("interleave_moe_layer_step")?
        .unwrap_or(1)
        .max(1);
    Ok(Some(MoeConfig {
        router,
        expert_intermediate_size,
        shared_intermediate_size,
        shared_expert_gate: arch == Arch::Qwen2Moe && shared_intermediate_size > 0,
        sparse_layers: (0..num_layers)
            .map(|i| i >= leading_dense && (i + 1) % step == 0)
            .collect(),
        // llama.cpp fixes gpt-oss's constants; GGUF carries none.
        activation: match arch {
            Arch::GptOss => ExpertActivation::GPT_OSS,
            _ => ExpertActivation::Swiglu,
        },
    }))
}

/// Typed access to `{arch}.*` GGUF keys; wrong types are errors naming the key.
struct GgufKeys<'a> {
    get: &'a dyn Fn(&str) -> Option<MetaValue>,
    arch: &'a str,
}

impl GgufKeys<'_> {
    fn value(&self, key: &str) -> (String, Option<MetaValue>) {
        let full = format!("{}.{key}", self.arch);
        let v = (self.get)(&full);
        (full, v)
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>, ModelError> {
        let (full, v) = self.value(key);
        v.map(|v| {
            meta_usize(&v)
                .ok_or_else(|| config_err(format!("{full} is not a non-negative integer: {v:?}")))
        })
        .transpose()
    }
    fn usize(&self, key: &str) -> Result<usize, ModelError> {
        self.opt_usize(key)?
            .ok_or_else(|| config_err(format!("GGUF metadata has no {}.{key}", self.arch)))
    }
    fn opt_f32(&self, key: &str) -> Result<Option<f32>, ModelError> {
        let (full, v) = self.value(key);
        v.map(|v| match v {
            MetaValue::F32(f) => Ok(f),
            MetaValue::F64(f) => Ok(f as f32),
            other => meta_usize(&other)
                .map(|n| n as f32)
                .ok_or_else(|| config_err(format!("{full} is not a number: {other:?}"))),
        })
        .transpose()
    }
    fn opt_bool(&self, key: &str) -> Result<Option<bool>, ModelError> {
        let (full, v) = self.value(key);
        v.map(|v| match v {
            MetaValue::Bool(b) => Ok(b),
            other => Err(config_err(format!("{full} is not a boolean: {other:?}"))),
        })
        .transpose()
    }
    fn opt_str(&self, key: &str) -> Result<Option<String>, ModelError> {
        let (full, v) = self.value(key);
        v.map(|v| match v {
            MetaValue::String(s) => Ok(s),
            other => Err(config_err(format!("{full} is not a string: {other:?}"))),
        })
        .transpose()
    }
}

fn meta_usize(v: &MetaValue) -> Option<usize> {
    let n: i128 = match *v {
        MetaValue::U8(x) => x.into(),
        MetaValue::I8(x) => x.into(),
        MetaValue::U16(x) => x.into(),
        MetaValue::I16(x) => x.into(),
        MetaValue::U32(x) => x.into(),
        MetaValue::I32(x) => x.into(),
        MetaValue::U64(x) => x.into(),
        MetaValue::I64(x) => x.into(),
        _ => return None,
    };
    usize::try_from(n).ok()
}

/// DeepSeek's YaRN (latent attention) also sharpens the softmax by `mscale(mscale_all_dim)²`.
fn yarn_sharpened(scale: f32, latent_attention: bool, scaling: &RopeScaling) -> f32 {
    match scaling {
        RopeScaling::Yarn {
            factor,
            mscale_all_dim: Some(m),
            ..
        } if latent_attention && *m != 0.0 => {
            let mscale = 0.1 * m * factor.ln() + 1.0;
            scale * mscale * mscale
        }
        _ => scale,
    }
}

fn gguf_rope_scaling(meta: &GgufKeys) -> Result<RopeScaling, ModelError> {
    let kind = meta.opt_str("rope.scaling.type")?;
    let factor = match meta.opt_f32("rope.scaling.factor")? {
        Some(f) => Some(f),
        // Older files: rope.scale_linear.
        None => meta.opt_f32("rope.scale_linear")?,
    };
    match (kind.as_deref(), factor) {
        (None | Some("none"), None) => Ok(RopeScaling::None),
        (None | Some("linear"), Some(1.0)) => Ok(RopeScaling::None),
        (None | Some("linear"), Some(f)) => Ok(RopeScaling::Linear {
            factor: positive("rope.scaling.factor", f)?,
        }),
        (Some("none"), Some(_)) => Ok(RopeScaling::None),
        (Some("yarn"), Some(f)) => {
            let factor = positive("rope.scaling.factor", f)?;
            let original = meta
                .opt_usize("rope.scaling.original_context_length")?
                .ok_or_else(|| {
                    config_err("yarn rope scaling without rope.scaling.original_context_length")
                })?;
            // llama.cpp multiplies its own 0.1·ln(factor)+1 by yarn_attn_factor.
            let attention_factor = meta
                .opt_f32("rope.scaling.yarn_attn_factor")?
                .map(|a| a * (0.1 * factor.ln() + 1.0));
            // The converter stores 0.1·mscale_all_dim. Like llama.cpp, take mscale equal to it
            // for DeepSeek-V2/V3 (their checkpoints set both alike) and 1 elsewhere.
            let mscale_all_dim = meta
                .opt_f32("rope.scaling.yarn_log_multiplier")?
                .map(|m| m / 0.1);
            let mscale = mscale_all_dim.map(|m| match &*meta.arch {
                "deepseek2" => m,
                _ => 1.0,
            });
            Ok(RopeScaling::Yarn {
                factor,
                original_context: original as f32,
                beta_fast: meta.opt_f32("rope.scaling.yarn_beta_fast")?.unwrap_or(32.0),
                beta_slow: meta.opt_f32("rope.scaling.yarn_beta_slow")?.unwrap_or(1.0),
                attention_factor,
                mscale,
                mscale_all_dim,
                // gpt-oss is released with `truncate: false`, which GGUF cannot record.
                truncate: meta.arch != "gpt-oss",
            })
        }
        (Some(other), _) => Err(ModelError::Unsupported(format!(
            "GGUF rope scaling type {other:?}"
        ))),
    }
}

/// llama.cpp's rule: an explicit per-layer bool list, or a period `n` (`default_period`) where
/// layer `i` slides when `i % n < n - 1`.
fn gguf_sliding_pattern(
    meta: &GgufKeys,
    num_layers: usize,
    default_period: usize,
) -> Result<Vec<AttentionKind>, ModelError> {
    let (full, value) = meta.value("attention.sliding_window_pattern");
    let kind = |sliding: bool| {
        if sliding {
            AttentionKind::Sliding
        } else {
            AttentionKind::Full
        }
    };
    match value {
        Some(MetaValue::Array(items)) => {
            if items.len() != num_layers {
                return Err(config_err(format!(
                    "{full} has {} entries for {num_layers} layers",
                    items.len()
                )));
            }
            items
                .iter()
                .map(|v| match v {
                    MetaValue::Bool(b) => Ok(kind(*b)),
                    other => Err(config_err(format!("{full} holds a non-bool {other:?}"))),
                })
                .collect()
        }
        other => {
            let period = match other {
                Some(v) => meta_usize(&v)
                    .ok_or_else(|| config_err(format!("{full} is not an integer or list")))?,
                None => default_period,
            };
            Ok((0..num_layers)
                .map(|i| kind(period == 0 || i % period < period - 1))
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn llama_json() -> Value {
        json!({
            "model_type": "llama", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 2048,
            "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
            "tie_word_embeddings": true
        })
    }

    fn expect_config_error(json: Value, needle: &str) {
        match ModelConfig::from_hf_json(&json) {
            Err(e) => assert!(
                e.to_string().contains(needle),
                "error {e:?} does not mention {needle:?}"
            ),
            Ok(c) => panic!("accepted a bad config: {c:?}"),
        }
    }

    #[test]
    fn old_style_llama_keys() {
        let c = ModelConfig::from_hf_json(&llama_json()).unwrap();
        assert_eq!(
            (c.arch, c.head_dim, c.num_kv_heads, c.context_length),
            (Arch::Llama, 16, 2, 2048)
        );
        assert_eq!(c.rope.theta, 500000.0);
        assert_eq!(c.rope.style, RopeStyle::Neox);
        assert!(
            matches!(c.rope.scaling, RopeScaling::Llama3 { factor, original_context, .. } if factor == 32.0 && original_context == 8192.0)
        );
        assert!(c.tie_word_embeddings && c.local_rope.is_none() && c.sliding_window.is_none());
        assert_eq!(c.attention_scale, 0.25);
    }

    #[test]
    fn transformers5_rope_parameters_match_old_keys() {
        let mut new = llama_json();
        let obj = new.as_object_mut().unwrap();
        let mut params = obj.remove("rope_scaling").unwrap();
        params["rope_theta"] = obj.remove("rope_theta").unwrap();
        obj.insert("rope_parameters".into(), params);
        assert_eq!(
            ModelConfig::from_hf_json(&new).unwrap(),
            ModelConfig::from_hf_json(&llama_json()).unwrap()
        );
    }

    #[test]
    fn kv_heads_default_to_heads() {
        let mut j = llama_json();
        j.as_object_mut().unwrap().remove("num_key_value_heads");
        assert_eq!(ModelConfig::from_hf_json(&j).unwrap().num_kv_heads, 4);
    }

    #[test]
    fn gemma3_old_style_config() {
        // The shape of google/gemma-3-1b-it's config.json.
        let j = json!({
            "model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 1152, "intermediate_size": 6912,
            "num_hidden_layers": 26, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
            "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
            "sliding_window": 512, "sliding_window_pattern": 6, "hidden_activation": "gelu_pytorch_tanh",
            "final_logit_softcapping": null, "attn_logit_softcapping": null, "max_position_embeddings": 32768
        });
        let c = ModelConfig::from_hf_json(&j).unwrap();
        assert!(c.tie_word_embeddings);
        assert_eq!(c.activation, Activation::GeluTanh);
        assert_eq!(c.sliding_window, Some(512));
        assert_eq!(c.layer_kinds[4], AttentionKind::Sliding);
        assert_eq!(c.layer_kinds[5], AttentionKind::Full);
        assert_eq!(
            c.layer_kinds
                .iter()
                .filter(|k| **k == AttentionKind::Full)
                .count(),
            4
        );
        assert_eq!(c.rope.scaling, RopeScaling::Linear { factor: 8.0 });
        assert_eq!(c.rope.theta, 1e6);
        let local = c.local_rope.as_ref().unwrap();
        assert_eq!((local.theta, &local.scaling), (10000.0, &RopeScaling::None));
        assert_eq!(c.rope_for_layer(0).theta, 10000.0);
        assert_eq!(c.rope_for_layer(5).theta, 1e6);
        assert_eq!(c.attention_scale, 1.0 / 16.0);
    }

    #[test]
    fn qwen2_sliding_window_only_when_enabled() {
        let mut j = json!({
            "model_type": "qwen2", "vocab_size": 100, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
            "sliding_window": 32768, "max_window_layers": 2, "use_sliding_window": false
        });
        let c = ModelConfig::from_hf_json(&j).unwrap();
        assert!(
            c.layer_kinds.iter().all(|k| *k == AttentionKind::Full) && c.sliding_window.is_none()
        );
        j["use_sliding_window"] = json!(true);
        let c = ModelConfig::from_hf_json(&j).unwrap();
        assert_eq!(c.layer_kinds[..2], [AttentionKind::Full; 2]);
        assert_eq!(c.layer_kinds[2..], [AttentionKind::Sliding; 2]);
        assert_eq!(c.sliding_window, Some(32768));
    }

    #[test]
    fn inconsistent_configs_are_named() {
        let mut j = llama_json();
        j["hidden_size"] = json!(66);
        expect_config_error(j, "not divisible by num_attention_heads");
        let mut j = llama_json();
        j["num_key_value_heads"] = json!(3);
        expect_config_error(j, "does not divide num_heads");
        let mut j = llama_json();
        j["num_hidden_layers"] = json!(0);
        expect_config_error(j, "num_layers is 0");
        let mut j = llama_json();
        j["vocab_size"] = json!(1u64 << 40);
        expect_config_error(j, "vocab_size");
        let mut j = llama_json();
        j["intermediate_size"] = json!("big");
        expect_config_error(j, "\"intermediate_size\" is not a non-negative integer");
        let mut j = llama_json();
        j.as_object_mut().unwrap().remove("hidden_size");
        expect_config_error(j, "no \"hidden_size\"");
        let mut j = llama_json();
        j["rope_scaling"] = json!({"rope_type": "linear"});
        expect_config_error(j, "needs a \"factor\"");
        let mut j = llama_json();
        j["model_type"] = json!("mamba");
        expect_config_error(j, "model_type \"mamba\"");
        let mut j = llama_json();
        j["hidden_act"] = json!("relu2");
        expect_config_error(j, "activation");
    }

    fn gguf_meta(entries: Vec<(&str, MetaValue)>) -> impl Fn(&str) -> Option<MetaValue> {
        let map: std::collections::HashMap<String, MetaValue> = entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn gemma3_gguf_entries() -> Vec<(&'static str, MetaValue)> {
        vec![
            ("general.architecture", MetaValue::String("gemma3".into())),
            ("gemma3.block_count", MetaValue::U32(18)),
            ("gemma3.embedding_length", MetaValue::U32(640)),
            ("gemma3.feed_forward_length", MetaValue::U32(2048)),
            ("gemma3.attention.head_count", MetaValue::U32(4)),
            ("gemma3.attention.head_count_kv", MetaValue::U32(1)),
            ("gemma3.attention.key_length", MetaValue::U32(256)),
            ("gemma3.attention.value_length", MetaValue::U32(256)),
            (
                "gemma3.attention.layer_norm_rms_epsilon",
                MetaValue::F32(1e-6),
            ),
            ("gemma3.rope.freq_base", MetaValue::F32(1e6)),
            ("gemma3.attention.sliding_window", MetaValue::U32(512)),
            ("gemma3.context_length", MetaValue::U32(32768)),
        ]
    }

    #[test]
    fn gguf_gemma3_defaults_follow_llama_cpp() {
        let get = gguf_meta(gemma3_gguf_entries());
        let c = ModelConfig::from_gguf_metadata(&get, Some(262144), false).unwrap();
        assert_eq!((c.vocab_size, c.head_dim, c.num_layers), (262144, 256, 18));
        assert!(c.tie_word_embeddings);
        assert_eq!(c.local_rope.as_ref().unwrap().theta, 10000.0);
        assert_eq!(c.layer_kinds[5], AttentionKind::Full);
        assert_eq!(c.layer_kinds[6], AttentionKind::Sliding);
        assert_eq!(c.rope.style, RopeStyle::Neox);
        assert_eq!(c.attention_scale, 1.0 / 16.0);
    }

    #[test]
    fn gguf_llama_uses_interleaved_rope_and_reports_missing_keys() {
        let entries = vec![
            ("general.architecture", MetaValue::String("llama".into())),
            ("llama.block_count", MetaValue::U32(2)),
            ("llama.embedding_length", MetaValue::U32(64)),
            ("llama.feed_forward_length", MetaValue::U64(128)),
            ("llama.attention.head_count", MetaValue::U32(4)),
            (
                "llama.rope.scaling.type",
                MetaValue::String("linear".into()),
            ),
            ("llama.rope.scaling.factor", MetaValue::F32(2.0)),
        ];
        let c =
            ModelConfig::from_gguf_metadata(&gguf_meta(entries.clone()), Some(50), true).unwrap();
        assert_eq!(c.rope.style, RopeStyle::Interleaved);
        assert_eq!(c.rope.scaling, RopeScaling::Linear { factor: 2.0 });
        assert!(!c.tie_word_embeddings);
        let without: Vec<_> = entries
            .into_iter()
            .filter(|(k, _)| *k != "llama.embedding_length")
            .collect();
        let err = ModelConfig::from_gguf_metadata(&gguf_meta(without), Some(50), true).unwrap_err();
        assert!(err.to_string().contains("llama.embedding_length"), "{err}");
    }

    #[test]
    fn gguf_wrong_types_are_named() {
        let mut entries = gemma3_gguf_entries();
        entries.push((
            "gemma3.attention.sliding_window_pattern",
            MetaValue::String("x".into()),
        ));
        let err =
            ModelConfig::from_gguf_metadata(&gguf_meta(entries), Some(10), false).unwrap_err();
        assert!(err.to_string().contains("sliding_window_pattern"), "{err}");
        let mut entries = gemma3_gguf_entries();
        entries[2] = ("gemma3.embedding_length", MetaValue::F32(1.5));
        let err =
            ModelConfig::from_gguf_metadata(&gguf_meta(entries), Some(10), false).unwrap_err();
        assert!(err.to_string().contains("gemma3.embedding_length"), "{err}");
    }
}
