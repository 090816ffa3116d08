//! Mixtral: Llama's attention with a mixture-of-experts feed-forward in every layer (softmax router,
//! top-k renormalised). llama.cpp's converter writes it as a `llama` GGUF with `expert_count`.

use crate::blocks::decoder::DecoderSpec;
use crate::blocks::moe_ffn::{HfExperts, HfMoeNames};

/// Mixtral's MoE tensor names (MiniMax's too).
pub(super) const HF_MOE: HfMoeNames = HfMoeNames {
    block: "block_sparse_moe",
    router: "gate",
    experts: HfExperts::PerExpert {
        gate: "w1",
        up: "w3",
        down: "w2",
    },
    shared: "shared_expert",
    shared_gate: "shared_expert_gate",
    correction_bias: None,
};

pub(super) const SPEC: DecoderSpec = DecoderSpec {
    hf_moe: Some(HF_MOE),
    ..super::llama::SPEC
};
