//! Model architectures for Conch, built from shared blocks.
//!
//! [`load_gguf`] and [`load_hf`] read a [`ModelConfig`] from the file's metadata, pick the
//! architecture (one file each under `arch/`) and assemble it from the blocks under `blocks/`.
//! Weights stay in their file's element type (quantized stays quantized, memory-mapped bytes are not
//! copied); activations are f32. A [`Model`] runs new tokens of one sequence against its [`KvCache`].

pub mod arch;
pub mod blocks;
pub mod config;
pub mod kv_cache;
pub mod moe;
mod weights;

pub use arch::Arch;
pub use blocks::moe_ffn::{ExpertCounts, RoutingObserver};
pub use config::{Activation, AttentionKind, ModelConfig, MoeConfig, ParameterCounts, RopeConfig};
pub use kv_cache::KvCache;
pub use moe::Routing;

use conch_formats::{FormatError, GgufFile, HfModelDir};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The configuration (config.json or GGUF metadata) is missing a value or is inconsistent.
    #[error("invalid model configuration: {0}")]
    Config(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("the model file has no tensor {0:?}")]
    MissingTensor(String),
    /// A tensor exists but has the wrong shape or element type for the configuration.
    #[error("tensor {name:?}: {msg}")]
    BadTensor { name: String, msg: String },
    #[error("context full: {needed} tokens would not fit in a KV cache of capacity {capacity}")]
    ContextFull { capacity: usize, needed: usize },
    #[error("token id {token} is out of range for a vocabulary of {vocab_size}")]
    TokenOutOfRange { token: u32, vocab_size: usize },
    /// The cache was made for a model of a different shape.
    #[error("KV cache does not fit this model: {0}")]
    CacheMismatch(String),
    #[error("forward needs at least one token")]
    EmptyInput,
    #[error("out of memory: {0}")]
    OutOfMemory(String),
}

pub trait Model: Send + Sync {
    fn config(&self) -> &ModelConfig;
    /// New empty cache for one sequence holding up to `capacity` tokens. Memory is taken as the
    /// cache fills, not up front.
    fn new_cache(&self, capacity: usize) -> KvCache;
    /// Runs `tokens` at positions `cache.len()..`, appends their K/V to `cache`, returns logits
    /// row-major: all positions (`tokens.len() × vocab`) when `all_logits`, else only the last row.
    /// On error the cache is left as it was.
    fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
    ) -> Result<Vec<f32>, ModelError>;

    /// [`Model::forward`], also reporting to `observer` which experts each mixture-of-experts layer
    /// chose for each token, with their weights (e.g. an [`ExpertCounts`] for per-expert statistics).
    /// Models without MoE layers report nothing.
    fn forward_observed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
        observer: &mut dyn RoutingObserver,
    ) -> Result<Vec<f32>, ModelError> {
        let _ = observer;
        self.forward(tokens, cache, all_logits)
    }
}

/// Builds the model a GGUF file describes.
pub fn load_gguf(file: &GgufFile) -> Result<Box<dyn Model>, ModelError> {
    arch::load_gguf(file)
}

/// Builds the model a Hugging Face directory (config.json + safetensors) describes.
pub fn load_hf(dir: &HfModelDir) -> Result<Box<dyn Model>, ModelError> {
    arch::load_hf(dir)
}
