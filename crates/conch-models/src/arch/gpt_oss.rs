//! gpt-oss: attention with q/k/v/o biases and per-head sinks, alternating sliding-window and full
//! layers, YaRN rotary embedding; experts with biases and a clamped SwiGLU (`(up + 1) · g · σ(α g)`),
//! chosen on the biased router's logits with a softmax over the chosen. Hugging Face checkpoints stack
//! the experts input-major with gate and up columns interleaved; llama.cpp's GGUF splits them.

use crate::blocks::decoder::DecoderSpec;
use crate::blocks::moe_ffn::{HfExperts, HfMoeNames};

pub(super) const SPEC: DecoderSpec = DecoderSpec {
    hf_moe: Some(HfMoeNames {
        router: "router",
        experts: HfExperts::StackedTransposedInterleaved {
            gate_up: "experts.gate_up_proj",
            down: "experts.down_proj",
        },
        ..super::qwen2_moe::HF_MOE
    }),
    gguf_ffn_norm: "post_attention_norm",
    sinks: Some("self_attn.sinks"),
    ..super::llama::SPEC
};
