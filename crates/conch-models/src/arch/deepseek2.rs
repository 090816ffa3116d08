//! DeepSeek-V2 / V3 (and V2-Lite): multi-head latent attention with a latent cache, dense leading
//! layers, then MoE layers with shared experts. V2 routes by softmax with an optional group limit
//! (group score = best expert); V3 by sigmoid plus a correction bias, groups ranked by the sum of
//! their two best scores. Both scale the routed weights by `routed_scaling_factor`.

use crate::blocks::decoder::DecoderSpec;

pub(super) const SPEC: DecoderSpec = DecoderSpec {
    hf_moe: Some(super::glm4_moe::HF_MOE),
    ..super::llama::SPEC
};
