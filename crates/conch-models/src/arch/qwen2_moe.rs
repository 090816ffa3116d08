//! Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B): Qwen 2's attention (q/k/v biases), softmax router not
//! renormalised unless `norm_topk_prob`, and a shared expert scaled by `sigmoid(shared_expert_gate · x)`.

use crate::blocks::decoder::DecoderSpec;
use crate::blocks::moe_ffn::{HfExperts, HfMoeNames};

/// The Qwen-MoE family's MoE tensor names (Qwen 3's too).
pub(super) const HF_MOE: HfMoeNames = HfMoeNames {
    block: "mlp",
    router: "gate",
    experts: HfExperts::PerExpert {
        gate: "gate_proj",
        up: "up_proj",
        down: "down_proj",
    },
    shared: "shared_expert",
    shared_gate: "shared_expert_gate",
    correction_bias: None,
};

pub(super) const SPEC: DecoderSpec = DecoderSpec {
    hf_moe: Some(HF_MOE),
    ..super::llama::SPEC
};
