//! Llama (2, 3, 3.1+) and models shaped like it (SmolLM2): pre-norm, SwiGLU, no q/k norms.

use crate::blocks::decoder::{Decoder, DecoderSpec, QkNorm, Source};
use crate::config::ModelConfig;
use crate::{Model, ModelError};
use conch_formats::TensorStore;

pub(super) const SPEC: DecoderSpec = DecoderSpec {
    qk_norm: QkNorm::None,
    sandwich_norms: false,
    scale_embeddings: false,
    hf_norm_offset: 0.0,
    hf_ffn_norm: "post_attention_layernorm",
    hf_moe: None,
    gguf_ffn_norm: "ffn_norm",
    sinks: None,
    layer_norm: false,
};

pub(super) fn build(
    config: ModelConfig,
    store: &dyn TensorStore,
    source: Source,
) -> Result<Box<dyn Model>, ModelError> {
    Ok(Box::new(Decoder::load(config, store, source, &SPEC)?))
}
