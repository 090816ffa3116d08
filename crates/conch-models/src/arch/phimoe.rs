//! PhiMoE (Phi-3.5-MoE): layer norms with biases, biases on every attention projection and the
//! output, Mixtral-named experts chosen by the sparsemixer rule (two rounds, each weighted by a
//! softmax over the experts within `2·jitter_eps` of the round's best).

use crate::blocks::decoder::DecoderSpec;

pub(super) const SPEC: DecoderSpec = DecoderSpec {
    hf_moe: Some(super::mixtral::HF_MOE),
    layer_norm: true,
    ..super::llama::SPEC
};
