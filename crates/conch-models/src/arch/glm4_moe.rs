//! GLM-4.5 / 4.6 MoE: standard grouped-query attention with q/k/v biases, partial rotary embedding
//! and optional per-head q/k norms (`use_qk_norm`); dense leading layers, then MoE layers routed by
//! sigmoid scores plus a correction bias with group limits and a scaling factor, and shared experts.

use crate::blocks::decoder::{DecoderSpec, QkNorm};
use crate::blocks::moe_ffn::HfMoeNames;

/// DeepSeek's MoE tensor names, which GLM-4.5 shares.
pub(super) const HF_MOE: HfMoeNames = HfMoeNames {
    shared: "shared_experts",
    correction_bias: Some("gate.e_score_correction_bias"),
    ..super::qwen2_moe::HF_MOE
};

pub(super) const SPEC: DecoderSpec = DecoderSpec {
    qk_norm: QkNorm::PerHeadIfPresent,
    hf_moe: Some(HF_MOE),
    gguf_ffn_norm: "post_attention_norm",
    ..super::llama::SPEC
};
