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
pub use kv_cache::{KvCache, KvLayout, KvPool, KvPoolStats, BLOCK_TOKENS};
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
    /// Every block of the shared KV pool is held by a running sequence.
    #[error(
        "the KV cache pool is full: all {blocks} blocks of {block_tokens} positions are in use"
    )]
    KvPoolFull { blocks: usize, block_tokens: usize },
}

/// One sequence's part of a batched forward pass.
pub struct BatchItem<'a> {
    /// New tokens, run at positions `cache.len()..`.
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    /// Logits for every new position (`tokens.len() × vocab`) rather than the last one only.
    pub all_logits: bool,
}

pub trait Model: Send + Sync {
    fn config(&self) -> &ModelConfig;

    /// Runs every item's new tokens in one pass — matrix products over all their rows together,
    /// attention of each sequence over its own cache — appends their K/V to the caches and returns
    /// each item's logits, row-major. `observer` hears which experts each mixture-of-experts layer
    /// chose for each token (models without MoE layers report nothing). On error no cache changes
    /// length.
    fn forward_batch(
        &self,
        batch: &mut [BatchItem<'_>],
        observer: Option<&mut dyn RoutingObserver>,
    ) -> Result<Vec<Vec<f32>>, ModelError>;

    /// The shape of this model's cache rows.
    fn kv_layout(&self) -> KvLayout {
        self.config().kv_layout()
    }

    /// New empty cache with its own pool, for one sequence holding up to `capacity` tokens.
    /// Memory is taken as the cache fills, not up front.
    fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(self.kv_layout(), capacity)
    }

    /// A pool of `max_blocks` cache blocks of `block_tokens` positions for many sequences.
    fn new_pool(&self, block_tokens: usize, max_blocks: usize) -> KvPool {
        KvPool::new(self.kv_layout(), block_tokens, max_blocks)
    }

    /// Runs `tokens` of one sequence at positions `cache.len()..`, appends their K/V to `cache`,
    /// returns logits row-major: all positions (`tokens.len() × vocab`) when `all_logits`, else
    /// only the last row. On error the cache is left as it was.
    fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
    ) -> Result<Vec<f32>, ModelError> {
        let mut item = [BatchItem {
            tokens,
            cache,
            all_logits,
        }];
        Ok(self.forward_batch(&mut item, None)?.remove(0))
    }

    /// [`Model::forward`], also reporting to `observer` which experts each mixture-of-experts layer
    /// chose for each token, with their weights (e.g. an [`ExpertCounts`] for per-expert statistics).
    fn forward_observed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
        observer: &mut dyn RoutingObserver,
    ) -> Result<Vec<f32>, ModelError> {
        let mut item = [BatchItem {
            tokens,
            cache,
            all_logits,
        }];
        Ok(self.forward_batch(&mut item, Some(observer))?.remove(0))
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
