//! OLMoE: RMS norms over the whole query and key projections (all heads together), q/k/v clamped to
//! `±clip_qkv`, softmax router not renormalised unless `norm_topk_prob`.

use crate::blocks::decoder::{DecoderSpec, QkNorm};

pub(super) const SPEC: DecoderSpec = DecoderSpec {
    qk_norm: QkNorm::WholeProjection,
    hf_moe: Some(super::qwen2_moe::HF_MOE),
    ..super::llama::SPEC
};
