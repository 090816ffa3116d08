//! Runs models: sampling, stop rules, generation and perplexity.

pub mod sampler;
pub mod stop;

pub use sampler::{Sampler, SamplingParams};
