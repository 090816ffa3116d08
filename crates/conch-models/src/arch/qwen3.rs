//! Qwen 3 (dense): Llama's layout plus per-head RMS norms on queries and keys.

use crate::blocks::decoder::{Decoder, DecoderSpec, QkNorm, Source};
use crate::config::ModelConfig;
use crate::{Model, ModelError};
use conch_formats::TensorStore;

const SPEC: DecoderSpec = DecoderSpec {
    qk_norm: QkNorm::PerHead,
    ..super::llama::SPEC
};

pub(super) fn build(
    config: ModelConfig,
    store: &dyn TensorStore,
    source: Source,
) -> Result<Box<dyn Model>, ModelError> {
    Ok(Box::new(Decoder::load(config, store, source, &SPEC)?))
}
