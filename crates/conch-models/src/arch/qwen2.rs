//! Qwen 2 / 2.5: Llama's layout with biases on the q/k/v projections (loaded when present).

use crate::blocks::decoder::{Decoder, Source};
use crate::config::ModelConfig;
use crate::{Model, ModelError};
use conch_formats::TensorStore;

pub(super) fn build(
    config: ModelConfig,
    store: &dyn TensorStore,
    source: Source,
) -> Result<Box<dyn Model>, ModelError> {
    Ok(Box::new(Decoder::load(
        config,
        store,
        source,
        &super::llama::SPEC,
    )?))
}
