//! ERNIE-4.5-MoE: Llama's layout with biases on every attention projection, the shared expert and
//! the output (`use_bias`), interleaved rotary pairs, MoE layers in a range given by the
//! configuration, experts chosen on softmax probabilities plus a correction bias and renormalised
//! with a clamped sum.

use crate::blocks::decoder::DecoderSpec;
use crate::blocks::moe_ffn::HfMoeNames;

pub(super) const SPEC: DecoderSpec = DecoderSpec {
    hf_moe: Some(HfMoeNames {
        shared: "shared_experts",
        correction_bias: Some("moe_statics.e_score_correction_bias"),
        ..super::qwen2_moe::HF_MOE
    }),
    ..super::llama::SPEC
};
