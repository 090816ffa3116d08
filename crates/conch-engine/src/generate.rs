//! Generation for one sequence: prefill, sample, stream text, stop.

use crate::stop::{StopScan, StopStrings};
use crate::{EngineError, LoadedModel, Sampler, SamplingParams};
use conch_models::KvCache;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends before any of these strings; they are not part of the output.
    pub stop_strings: Vec<String>,
    /// Token ids that end generation besides the model's own end-of-generation tokens.
    pub stop_tokens: Vec<u32>,
    /// Keep going past the model's end-of-generation tokens.
    pub ignore_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { max_tokens: 256, sampling: SamplingParams::default(), stop_strings: Vec::new(), stop_tokens: Vec::new(), ignore_eos: false }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached, or the context is full.
    Length,
    /// The caller asked to stop (the text callback returned false).
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens whose K/V were already in the session's cache.
    pub reused_tokens: usize,
    pub prefill_time: Duration,
    pub decode_time: Duration,
}

/// A sequence and its KV cache. Keeps the cache between calls so a conversation's next turn only
/// computes what is new.
pub struct Session<'m> {
    model: &'m LoadedModel,
    cache: KvCache,
    /// The tokens whose K/V are in `cache`, in order.
    history: Vec<u32>,
}

impl<'m> Session<'m> {
    /// A session holding up to `context` tokens (the model's own context length when `None`).
    pub fn new(model: &'m LoadedModel, context: Option<usize>) -> Session<'m> {
        let capacity = context.unwrap_or_else(|| model.context_length());
        Session { model, cache: model.model.new_cache(capacity), history: Vec::new() }
    }

    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    pub fn reset(&mut self) {
        self.cache.clear();
        self.history.clear();
    }

    /// Generates a continuation of `prompt` (the whole sequence so far). `on_text` receives text as
    /// it becomes final and returns false to cancel.
    pub fn generate(&mut self, prompt: &[u32], opts: &GenerateOptions, on_text: &mut dyn FnMut(&str) -> bool) -> Result<Generation, EngineError> {
        opts.sampling.validate().map_err(EngineError::BadRequest)?;
        if prompt.is_empty() {
            return Err(EngineError::BadRequest("the prompt has no tokens".into()));
        }
        let capacity = self.cache.capacity();
        if prompt.len() >= capacity {
            return Err(EngineError::PromptTooLong { prompt_tokens: prompt.len(), context: capacity });
        }
        let vocab = self.model.model.config().vocab_size;
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(EngineError::BadRequest(format!("token id {bad} is outside the vocabulary of {vocab}")));
        }

        // Reuse the longest common prefix already in the cache; at least one token must run to get logits.
        let common = self.history.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(prompt.len() - 1);
        self.cache.truncate(common);
        self.history.truncate(common);

        let start = Instant::now();
        let mut logits = self.model.model.forward(&prompt[common..], &mut self.cache, false)?;
        self.history.extend_from_slice(&prompt[common..]);
        let prefill_time = start.elapsed();

        let mut sampler = Sampler::new(opts.sampling.clone());
        let mut decoder = self.model.tokenizer.stream_decoder(true);
        let mut stops = StopStrings::new(opts.stop_strings.iter().cloned());
        let eos = self.model.tokenizer.eos_ids();
        let mut out = Generation {
            text: String::new(),
            tokens: Vec::new(),
            finish_reason: FinishReason::Length,
            prompt_tokens: prompt.len(),
            reused_tokens: common,
            prefill_time,
            decode_time: Duration::ZERO,
        };
        let decode_start = Instant::now();
        let mut emit = |text: &str, out: &mut Generation| -> bool {
            out.text.push_str(text);
            text.is_empty() || on_text(text)
        };
        while out.tokens.len() < opts.max_tokens {
            let token = sampler.sample(&mut logits, &self.history);
            if opts.stop_tokens.contains(&token) || (!opts.ignore_eos && eos.contains(&token)) {
                out.finish_reason = FinishReason::Stop;
                break;
            }
            sampler.accept(token);
            out.tokens.push(token);
            match stops.push(&decoder.push(token)) {
                StopScan::Stopped(text) => {
                    emit(&text, &mut out);
                    out.finish_reason = FinishReason::Stop;
                    break;
                }
                StopScan::Continue(text) => {
                    if !emit(&text, &mut out) {
                        out.finish_reason = FinishReason::Cancelled;
                        break;
                    }
                }
            }
            if out.tokens.len() >= opts.max_tokens || self.cache.len() + 1 > capacity {
                break;
            }
            logits = self.model.model.forward(&[token], &mut self.cache, false)?;
            self.history.push(token);
        }
        if out.finish_reason == FinishReason::Length {
            let mut rest = decoder.finish();
            rest.push_str(&stops.finish());
            emit(&rest, &mut out);
        }
        out.decode_time = decode_start.elapsed();
        Ok(out)
    }
}
