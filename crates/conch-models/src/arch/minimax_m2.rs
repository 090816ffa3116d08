//! MiniMax-M2: RMS norms over the whole query and key projections (all heads together), partial
//! rotary embedding, and Mixtral-named experts routed by sigmoid scores plus a correction bias,
//! always renormalised.

use crate::blocks::decoder::{DecoderSpec, QkNorm};
use crate::blocks::moe_ffn::HfMoeNames;

pub(super) const SPEC: DecoderSpec = DecoderSpec {
    qk_norm: QkNorm::WholeProjection,
    hf_moe: Some(HfMoeNames {
        correction_bias: Some("e_score_correction_bias"),
        ..super::mixtral::HF_MOE
    }),
    ..super::llama::SPEC
};
