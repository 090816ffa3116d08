//! Generation: the per-sequence decoding state (sampler, stop rules, streamed text) and
//! [`Session`], one sequence run to the end. [`crate::batch`] steps many sequences together.

use crate::stop::{StopScan, StopStrings};
use crate::{EngineError, LoadedModel, Sampler, SamplingParams};
use conch_models::{ExpertCounts, KvCache};
use conch_structured::{JsonConstraint, TokenVocab};
use conch_tokenizer::{StreamDecoder, Tokenizer};
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
    /// Report each sampled token's log-probability and this many most likely alternatives.
    pub logprobs: Option<usize>,
    /// The output must be one JSON value: any object (`schema: None`) or one matching a JSON
    /// Schema, enforced token by token; generation stops once it is complete.
    pub json: Option<JsonOutput>,
    /// Special tokens (tool-call markers, say) appear in the text instead of being dropped.
    /// End-of-generation tokens never do.
    pub keep_special_tokens: bool,
}

/// Constrained JSON output ([`GenerateOptions::json`]).
#[derive(Clone, Debug, PartialEq)]
pub struct JsonOutput {
    pub schema: Option<serde_json::Value>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop_strings: Vec::new(),
            stop_tokens: Vec::new(),
            ignore_eos: false,
            logprobs: None,
            json: None,
            keep_special_tokens: false,
        }
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
    /// Tokens routed to each expert of each layer, when asked for (MoE models).
    expert_counts: Option<ExpertCounts>,
}

impl<'m> Session<'m> {
    /// A session holding up to `context` tokens (the model's own context length when `None`).
    pub fn new(model: &'m LoadedModel, context: Option<usize>) -> Session<'m> {
        let capacity = context.unwrap_or_else(|| model.context_length());
        Session {
            model,
            cache: model.model.new_cache(capacity),
            history: Vec::new(),
            expert_counts: None,
        }
    }

    /// Counts the tokens routed to each expert of each layer from now on.
    pub fn track_experts(&mut self) {
        self.expert_counts.get_or_insert_with(ExpertCounts::default);
    }

    /// `counts[layer][expert]` since [`Self::track_experts`]; dense layers have empty rows.
    pub fn expert_counts(&self) -> Option<&ExpertCounts> {
        self.expert_counts.as_ref()
    }

    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        let model = &self.model.model;
        let logits = match &mut self.expert_counts {
            Some(counts) => model.forward_observed(tokens, &mut self.cache, false, counts)?,
            None => model.forward(tokens, &mut self.cache, false)?,
        };
        self.history.extend_from_slice(tokens);
        Ok(logits)
    }

    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    pub fn reset(&mut self) {
        self.cache.clear();
        self.history.clear();
    }

    /// Generates a continuation of `prompt` (the whole sequence so far), reusing the longest
    /// prefix of it the session already holds. `on_text` receives text as it becomes final and
    /// returns false to cancel.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation, EngineError> {
        let mut decoding = Decoding::new(self.model, prompt, opts, self.capacity())?;
        // At least one token must run to get logits.
        let common = self
            .history
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        self.cache.truncate(common);
        // A recurrent cache (linear attention) starts over instead of going back.
        let common = self.cache.len();
        self.history.truncate(common);
        let start = Instant::now();
        let mut logits = self.forward(&prompt[common..])?;
        decoding.prefilled(common, start.elapsed());
        loop {
            let room = self.cache.len() < self.cache.capacity();
            let step = decoding.sample(&mut logits, &self.history, room);
            let keep_going = step.text.is_empty() || on_text(&step.text);
            if step.finished.is_some() {
                break;
            }
            if !keep_going {
                decoding.finish(FinishReason::Cancelled);
                break;
            }
            let token = step.token.expect("a running step has a token");
            logits = self.forward(&[token])?;
        }
        Ok(decoding.out)
    }
}

/// The log-probability of a sampled token under the model, and the most likely alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    pub token: u32,
    pub logprob: f32,
    /// The most likely tokens with their log-probabilities, most likely first (as many as the
    /// options ask for).
    pub top: Vec<(u32, f32)>,
}

/// What one step of a sequence produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The token sampled and appended to the output; `None` when generation ended on an
    /// end-of-generation or stop token (those are not part of the output), had already ended, or
    /// the sequence is still reading its prompt.
    pub token: Option<u32>,
    /// Text that became final this step (possibly empty: held back for a stop string or an
    /// unfinished UTF-8 character).
    pub text: String,
    /// Set once generation has ended; later steps produce nothing.
    pub finished: Option<FinishReason>,
    /// The sampled token's log-probabilities, when the options ask for them.
    pub logprobs: Option<TokenLogprobs>,
}

impl Step {
    pub(crate) fn nothing(finished: Option<FinishReason>) -> Step {
        Step {
            token: None,
            text: String::new(),
            finished,
            logprobs: None,
        }
    }
}

/// The state of one generation apart from the model and cache it runs on: sampler, streaming
/// detokenizer, stop rules and the output so far.
pub(crate) struct Decoding<'m> {
    sampler: Sampler,
    decoder: StreamDecoder<'m>,
    stops: StopStrings,
    eos: Vec<u32>,
    max_tokens: usize,
    stop_tokens: Vec<u32>,
    ignore_eos: bool,
    logprobs: Option<usize>,
    json: Option<JsonState<'m>>,
    pub(crate) out: Generation,
    decode_start: Instant,
    pub(crate) finished: Option<FinishReason>,
}

impl<'m> Decoding<'m> {
    /// Checks `prompt` and `opts` for a sequence of `capacity` positions.
    pub(crate) fn new(
        model: &'m LoadedModel,
        prompt: &[u32],
        opts: &GenerateOptions,
        capacity: usize,
    ) -> Result<Decoding<'m>, EngineError> {
        opts.sampling.validate().map_err(EngineError::BadRequest)?;
        if prompt.is_empty() {
            return Err(EngineError::BadRequest("the prompt has no tokens".into()));
        }
        if prompt.len() >= capacity {
            return Err(EngineError::PromptTooLong {
                prompt_tokens: prompt.len(),
                context: capacity,
            });
        }
        let vocab = model.model.config().vocab_size;
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(EngineError::BadRequest(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let json = match &opts.json {
            None => None,
            Some(output) => Some(JsonState {
                constraint: JsonConstraint::new(output.schema.as_ref()).map_err(|e| {
                    EngineError::BadRequest(format!("the JSON schema cannot be enforced: {e}"))
                })?,
                vocab: model.token_vocab(),
                tokenizer: &model.tokenizer,
                allowed: Vec::new(),
            }),
        };
        Ok(Decoding {
            sampler: Sampler::new(opts.sampling.clone()),
            decoder: model.tokenizer.stream_decoder(!opts.keep_special_tokens),
            stops: StopStrings::new(opts.stop_strings.iter().cloned()),
            eos: model.tokenizer.eos_ids(),
            max_tokens: opts.max_tokens,
            stop_tokens: opts.stop_tokens.clone(),
            ignore_eos: opts.ignore_eos,
            logprobs: opts.logprobs,
            json,
            out: Generation {
                text: String::new(),
                tokens: Vec::new(),
                finish_reason: FinishReason::Length,
                prompt_tokens: prompt.len(),
                reused_tokens: 0,
                prefill_time: Duration::ZERO,
                decode_time: Duration::ZERO,
            },
            decode_start: Instant::now(),
            finished: None,
        })
    }

    /// The prompt has been read: decoding starts now.
    pub(crate) fn prefilled(&mut self, reused_tokens: usize, prefill_time: Duration) {
        self.out.reused_tokens = reused_tokens;
        self.out.prefill_time = prefill_time;
        self.decode_start = Instant::now();
    }

    /// Samples the next token from `logits` (changed in place). `history` is every token the
    /// model has seen; `room` says whether the cache can take the sampled token.
    pub(crate) fn sample(&mut self, logits: &mut [f32], history: &[u32], room: bool) -> Step {
        if let Some(reason) = self.finished {
            return Step::nothing(Some(reason));
        }
        if self.out.tokens.len() >= self.max_tokens {
            return self.end_with_length(None, String::new(), None);
        }
        let raw = self.logprobs.map(|_| logits.to_vec());
        if let Some(json) = &mut self.json {
            if !json.mask(logits) {
                // No token can continue the value (a vocabulary without single bytes).
                self.finish(FinishReason::Stop);
                return Step::nothing(Some(FinishReason::Stop));
            }
        }
        let token = self.sampler.sample(logits, history);
        let logprobs = raw.map(|raw| token_logprobs(&raw, token, self.logprobs.unwrap_or(0)));
        let json_complete = match &mut self.json {
            Some(json) if !self.eos.contains(&token) => json.advance(token),
            _ => false,
        };
        if self.stop_tokens.contains(&token) || (!self.ignore_eos && self.eos.contains(&token)) {
            self.finish(FinishReason::Stop);
            return Step::nothing(Some(FinishReason::Stop));
        }
        self.sampler.accept(token);
        self.out.tokens.push(token);
        let text = match self.stops.push(&self.decoder.push(token)) {
            StopScan::Stopped(text) => {
                self.out.text.push_str(&text);
                self.finish(FinishReason::Stop);
                return Step {
                    token: Some(token),
                    text,
                    finished: Some(FinishReason::Stop),
                    logprobs,
                };
            }
            StopScan::Continue(text) => text,
        };
        if json_complete {
            // The value is whole: nothing may follow it.
            let mut text = text;
            text.push_str(&self.decoder.finish());
            text.push_str(&self.stops.finish());
            self.out.text.push_str(&text);
            self.finish(FinishReason::Stop);
            return Step {
                token: Some(token),
                text,
                finished: Some(FinishReason::Stop),
                logprobs,
            };
        }
        if self.out.tokens.len() >= self.max_tokens || !room {
            return self.end_with_length(Some(token), text, logprobs);
        }
        self.out.text.push_str(&text);
        Step {
            token: Some(token),
            text,
            finished: None,
            logprobs,
        }
    }

    /// Ends at the length limit: text held back for a stop string or an unfinished character
    /// comes out after all.
    fn end_with_length(
        &mut self,
        token: Option<u32>,
        mut text: String,
        logprobs: Option<TokenLogprobs>,
    ) -> Step {
        text.push_str(&self.decoder.finish());
        text.push_str(&self.stops.finish());
        self.out.text.push_str(&text);
        self.finish(FinishReason::Length);
        Step {
            token,
            text,
            finished: Some(FinishReason::Length),
            logprobs,
        }
    }

    pub(crate) fn finish(&mut self, reason: FinishReason) {
        if self.finished.is_none() {
            self.finished = Some(reason);
            self.out.finish_reason = reason;
            self.out.decode_time = self.decode_start.elapsed();
        }
    }
}

/// A JSON constraint with the vocabulary it masks.
struct JsonState<'m> {
    constraint: JsonConstraint,
    vocab: &'m TokenVocab,
    tokenizer: &'m Tokenizer,
    /// Scratch: which tokens may come next.
    allowed: Vec<bool>,
}

impl JsonState<'_> {
    /// Rules out every token that cannot continue the value; false when none can.
    fn mask(&mut self, logits: &mut [f32]) -> bool {
        self.allowed.resize(self.vocab.len(), false);
        match self.constraint.allowed(self.vocab, &mut self.allowed) {
            Ok(n) if n > 0 => {}
            _ => return false,
        }
        for (l, &ok) in logits.iter_mut().zip(&self.allowed) {
            if !ok {
                *l = f32::NEG_INFINITY;
            }
        }
        // Positions past the tokenizer's vocabulary (padded output rows) are never allowed.
        for l in logits.iter_mut().skip(self.allowed.len()) {
            *l = f32::NEG_INFINITY;
        }
        true
    }

    /// Takes the sampled token; true once the value is complete.
    fn advance(&mut self, token: u32) -> bool {
        let bytes = self.tokenizer.token_bytes(token).unwrap_or_default();
        // The mask allowed only tokens that continue the value, so this cannot fail.
        let _ = self.constraint.advance(&bytes);
        self.constraint.is_complete()
    }
}

/// Log-probabilities under the model's own distribution (softmax of the raw logits, before any
/// sampling setting): of `token`, and of the `top` most likely tokens.
fn token_logprobs(raw: &[f32], token: u32, top: usize) -> TokenLogprobs {
    let max = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_total = (raw.iter().map(|&l| ((l - max) as f64).exp()).sum::<f64>()).ln() as f32;
    let logprob = |t: u32| raw[t as usize] - max - log_total;
    let mut best: Vec<u32> = (0..raw.len() as u32).collect();
    let by_logit = |a: &u32, b: &u32| raw[*b as usize].total_cmp(&raw[*a as usize]).then(a.cmp(b));
    let top = top.min(best.len());
    if top > 0 && top < best.len() {
        best.select_nth_unstable_by(top - 1, by_logit);
    }
    best.truncate(top);
    best.sort_unstable_by(by_logit);
    TokenLogprobs {
        token,
        logprob: logprob(token),
        top: best.into_iter().map(|t| (t, logprob(t))).collect(),
    }
}
