//! Gemma 3 (text): q/k norms, norms before and after both attention and feed-forward, GeGLU,
//! embeddings scaled by sqrt(hidden), `(1 + w)` norm weights in Hugging Face checkpoints, and
//! interleaved sliding-window / global layers with their own rope bases (all carried by the config).

use crate::blocks::decoder::{Decoder, DecoderSpec, QkNorm, Source};
use crate::config::ModelConfig;
use crate::{Model, ModelError};
use conch_formats::TensorStore;

const SPEC: DecoderSpec = DecoderSpec {
    qk_norm: QkNorm::PerHead,
    sandwich_norms: true,
    scale_embeddings: true,
    hf_norm_offset: 1.0,
    hf_ffn_norm: "pre_feedforward_layernorm",
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
