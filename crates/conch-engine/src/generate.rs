//! Generation for one sequence: prefill, sample, stream text, stop — all at once ([`Session::generate`])
//! or one token at a time ([`Sequence`]).

use crate::stop::{StopScan, StopStrings};
use crate::{EngineError, LoadedModel, Sampler, SamplingParams};
use conch_models::{ExpertCounts, KvCache};
use conch_tokenizer::StreamDecoder;
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
        GenerateOptions {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop_strings: Vec::new(),
            stop_tokens: Vec::new(),
            ignore_eos: false,
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
        Ok(match &mut self.expert_counts {
            Some(counts) => model.forward_observed(tokens, &mut self.cache, false, counts)?,
            None => model.forward(tokens, &mut self.cache, false)?,
        })
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
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation, EngineError> {
        let mut decoding = Decoding::begin(self, prompt, opts)?;
        loop {
            let step = decoding.step(self)?;
            let keep_going = step.text.is_empty() || on_text(&step.text);
            if step.finished.is_some() {
                break;
            }
            if !keep_going {
                decoding.finish(FinishReason::Cancelled);
                break;
            }
        }
        Ok(decoding.into_generation())
    }
}

/// What one step of a [`Sequence`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The token sampled and appended to the output; `None` when generation ended on an
    /// end-of-generation or stop token (those are not part of the output) or had already ended.
    pub token: Option<u32>,
    /// Text that became final this step (possibly empty: held back for a stop string or an
    /// unfinished UTF-8 character).
    pub text: String,
    /// Set once generation has ended; later steps produce nothing.
    pub finished: Option<FinishReason>,
}

/// One generation advanced a token at a time, so a caller can interleave many sequences (a
/// server stepping each of its requests in turn) or drop one between steps to cancel it.
/// [`Session::generate`] is this same loop run to the end.
pub struct Sequence<'m> {
    session: Session<'m>,
    decoding: Decoding<'m>,
}

impl<'m> Sequence<'m> {
    /// Checks the request and runs the prompt through the model (the prefill), reusing whatever
    /// prefix of it `session` already holds.
    pub fn start(
        mut session: Session<'m>,
        prompt: &[u32],
        opts: &GenerateOptions,
    ) -> Result<Sequence<'m>, EngineError> {
        let decoding = Decoding::begin(&mut session, prompt, opts)?;
        Ok(Sequence { session, decoding })
    }

    /// Samples the next token (running the model on the previous one first).
    pub fn step(&mut self) -> Result<Step, EngineError> {
        self.decoding.step(&mut self.session)
    }

    /// The output so far.
    pub fn generation(&self) -> &Generation {
        &self.decoding.out
    }

    pub fn is_finished(&self) -> bool {
        self.decoding.finished.is_some()
    }

    /// Ends the generation (as cancelled if it was still running) and hands back the session,
    /// whose cache holds the prompt and output for a next turn.
    pub fn finish(mut self) -> (Session<'m>, Generation) {
        if self.decoding.finished.is_none() {
            self.decoding.finish(FinishReason::Cancelled);
        }
        (self.session, self.decoding.into_generation())
    }
}

/// The state of one generation apart from the session it runs in. Every call must pass the
/// session given to [`Decoding::begin`]; [`Session::generate`] and [`Sequence`] keep them paired.
struct Decoding<'m> {
    sampler: Sampler,
    decoder: StreamDecoder<'m>,
    stops: StopStrings,
    eos: Vec<u32>,
    max_tokens: usize,
    stop_tokens: Vec<u32>,
    ignore_eos: bool,
    logits: Vec<f32>,
    /// The last sampled token, not yet run through the model (its K/V are not in the cache).
    pending: Option<u32>,
    out: Generation,
    decode_start: Instant,
    finished: Option<FinishReason>,
}

impl<'m> Decoding<'m> {
    fn begin(
        session: &mut Session<'m>,
        prompt: &[u32],
        opts: &GenerateOptions,
    ) -> Result<Decoding<'m>, EngineError> {
        opts.sampling.validate().map_err(EngineError::BadRequest)?;
        if prompt.is_empty() {
            return Err(EngineError::BadRequest("the prompt has no tokens".into()));
        }
        let capacity = session.cache.capacity();
        if prompt.len() >= capacity {
            return Err(EngineError::PromptTooLong {
                prompt_tokens: prompt.len(),
                context: capacity,
            });
        }
        let model: &'m LoadedModel = session.model;
        let vocab = model.model.config().vocab_size;
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(EngineError::BadRequest(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }

        // Reuse the longest common prefix already in the cache; at least one token must run to get logits.
        let common = session
            .history
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        session.cache.truncate(common);
        session.history.truncate(common);

        let start = Instant::now();
        let logits = session.forward(&prompt[common..])?;
        session.history.extend_from_slice(&prompt[common..]);
        let prefill_time = start.elapsed();

        Ok(Decoding {
            sampler: Sampler::new(opts.sampling.clone()),
            decoder: model.tokenizer.stream_decoder(true),
            stops: StopStrings::new(opts.stop_strings.iter().cloned()),
            eos: model.tokenizer.eos_ids(),
            max_tokens: opts.max_tokens,
            stop_tokens: opts.stop_tokens.clone(),
            ignore_eos: opts.ignore_eos,
            logits,
            pending: None,
            out: Generation {
                text: String::new(),
                tokens: Vec::new(),
                finish_reason: FinishReason::Length,
                prompt_tokens: prompt.len(),
                reused_tokens: common,
                prefill_time,
                decode_time: Duration::ZERO,
            },
            decode_start: Instant::now(),
            finished: None,
        })
    }

    fn step(&mut self, session: &mut Session<'m>) -> Result<Step, EngineError> {
        if let Some(reason) = self.finished {
            return Ok(Step {
                token: None,
                text: String::new(),
                finished: Some(reason),
            });
        }
        if let Some(token) = self.pending.take() {
            self.logits = session.forward(&[token])?;
            session.history.push(token);
        }
        if self.out.tokens.len() >= self.max_tokens {
            return Ok(self.end_with_length(None, String::new()));
        }
        let token = self.sampler.sample(&mut self.logits, &session.history);
        if self.stop_tokens.contains(&token) || (!self.ignore_eos && self.eos.contains(&token)) {
            self.finish(FinishReason::Stop);
            return Ok(Step {
                token: None,
                text: String::new(),
                finished: Some(FinishReason::Stop),
            });
        }
        self.sampler.accept(token);
        self.out.tokens.push(token);
        let text = match self.stops.push(&self.decoder.push(token)) {
            StopScan::Stopped(text) => {
                self.out.text.push_str(&text);
                self.finish(FinishReason::Stop);
                return Ok(Step {
                    token: Some(token),
                    text,
                    finished: Some(FinishReason::Stop),
                });
            }
            StopScan::Continue(text) => text,
        };
        if self.out.tokens.len() >= self.max_tokens
            || session.cache.len() + 1 > session.cache.capacity()
        {
            return Ok(self.end_with_length(Some(token), text));
        }
        self.out.text.push_str(&text);
        self.pending = Some(token);
        Ok(Step {
            token: Some(token),
            text,
            finished: None,
        })
    }

    /// Ends at the length limit: text held back for a stop string or an unfinished character
    /// comes out after all.
    fn end_with_length(&mut self, token: Option<u32>, mut text: String) -> Step {
        text.push_str(&self.decoder.finish());
        text.push_str(&self.stops.finish());
        self.out.text.push_str(&text);
        self.finish(FinishReason::Length);
        Step {
            token,
            text,
            finished: Some(FinishReason::Length),
        }
    }

    fn finish(&mut self, reason: FinishReason) {
        self.finished = Some(reason);
        self.out.finish_reason = reason;
        self.out.decode_time = self.decode_start.elapsed();
    }

    fn into_generation(self) -> Generation {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_model() -> LoadedModel {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/models/llama_tied/model.gguf");
        crate::load(&path).expect("fixture model loads")
    }

    #[test]
    fn interleaved_sequences_match_whole_generations() {
        let model = tiny_model();
        let opts = GenerateOptions {
            max_tokens: 9,
            sampling: SamplingParams {
                seed: Some(3),
                ..SamplingParams::default()
            },
            ignore_eos: true,
            ..Default::default()
        };
        let prompts: [&[u32]; 2] = [&[5, 17, 42, 99], &[7, 3, 64, 12, 8]];
        let whole: Vec<Generation> = prompts
            .iter()
            .map(|p| {
                Session::new(&model, Some(64))
                    .generate(p, &opts, &mut |_| true)
                    .unwrap()
            })
            .collect();

        let mut sequences: Vec<Sequence> = prompts
            .iter()
            .map(|p| Sequence::start(Session::new(&model, Some(64)), p, &opts).unwrap())
            .collect();
        let mut texts = vec![String::new(); 2];
        while sequences.iter().any(|s| !s.is_finished()) {
            for (seq, text) in sequences.iter_mut().zip(&mut texts) {
                text.push_str(&seq.step().unwrap().text);
            }
        }
        for ((seq, text), expected) in sequences.into_iter().zip(texts).zip(whole) {
            let (session, out) = seq.finish();
            assert_eq!(
                (&out.tokens, &out.text, out.finish_reason),
                (&expected.tokens, &expected.text, FinishReason::Length)
            );
            assert_eq!(text, expected.text);
            // The session keeps the prompt and all but the last token (never run through the model).
            assert_eq!(
                session.history.len(),
                out.prompt_tokens + out.tokens.len() - 1
            );
        }
    }

    #[test]
    fn finishing_early_counts_as_cancelled() {
        let model = tiny_model();
        let opts = GenerateOptions {
            max_tokens: 50,
            sampling: SamplingParams::greedy(),
            ignore_eos: true,
            ..Default::default()
        };
        let mut seq = Sequence::start(Session::new(&model, Some(64)), &[5, 17, 42], &opts).unwrap();
        let step = seq.step().unwrap();
        assert!(step.token.is_some() && step.finished.is_none());
        let (_, out) = seq.finish();
        assert_eq!(
            (out.tokens.len(), out.finish_reason),
            (1, FinishReason::Cancelled)
        );
    }
}
