//! Runs models: loading, sampling, stop rules, generation and perplexity.
//!
//! Invariant: no terminal, HTTP or argument parsing here; callers get values and callbacks.

pub mod batch;
pub mod generate;
pub mod load;
pub mod perplexity;
pub mod sampler;
pub mod stop;

pub use batch::{BatchConfig, Scheduler, Sequence};
pub use conch_models::{ExpertCounts, KvPoolStats, RoutingObserver};
pub use conch_structured as structured;
pub use generate::{
    FinishReason, GenerateOptions, Generation, JsonOutput, Session, Step, TokenLogprobs,
};
pub use load::{load, LoadedModel};
pub use perplexity::{perplexity, Perplexity};
pub use sampler::{Sampler, SamplingParams};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Format(#[from] conch_formats::FormatError),
    #[error(transparent)]
    Model(#[from] conch_models::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] conch_tokenizer::TokenizerError),
    #[error(transparent)]
    Template(#[from] conch_tokenizer::TemplateError),
    #[error("the prompt has {prompt_tokens} tokens but the context holds {context}; shorten it or raise --ctx")]
    PromptTooLong {
        prompt_tokens: usize,
        context: usize,
    },
    #[error("{0}")]
    BadRequest(String),
}
