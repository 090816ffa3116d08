//! MiniMax-Text-01 / M1: lightning (linear, decayed) attention in most layers and softmax attention
//! in the rest, residuals taken from the normalized input with α/β factors (all carried by the
//! configuration), and Mixtral-named experts with a renormalised softmax router.

use crate::blocks::decoder::DecoderSpec;

pub(super) const SPEC: DecoderSpec = DecoderSpec {
    hf_moe: Some(super::mixtral::HF_MOE),
    ..super::llama::SPEC
};
