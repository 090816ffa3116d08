//! Qwen3-MoE: Qwen 3's attention (per-head q/k norms) with MoE feed-forwards; layers listed in
//! `mlp_only_layers` or off the `decoder_sparse_step` are dense (the configuration says which).

use crate::blocks::decoder::{DecoderSpec, QkNorm};

pub(super) const SPEC: DecoderSpec = DecoderSpec {
    qk_norm: QkNorm::PerHead,
    hf_moe: Some(super::qwen2_moe::HF_MOE),
    ..super::llama::SPEC
};
