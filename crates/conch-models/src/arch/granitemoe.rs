//! GraniteMoE: Llama's layout with embedding, attention, residual and logit multipliers (carried by
//! the configuration), a router choosing on raw logits with a softmax over the chosen, and experts
//! stacked in `input_linear` (gate rows, then up rows) / `output_linear`.

use crate::blocks::decoder::DecoderSpec;
use crate::blocks::moe_ffn::{HfExperts, HfMoeNames};

pub(super) const SPEC: DecoderSpec = DecoderSpec {
    hf_moe: Some(HfMoeNames {
        block: "block_sparse_moe",
        router: "router.layer",
        experts: HfExperts::StackedConcatenated {
            gate_up: "input_linear",
            down: "output_linear",
        },
        shared: "shared_mlp",
        shared_gate: "shared_mlp_gate",
        correction_bias: None,
    }),
    ..super::llama::SPEC
};
