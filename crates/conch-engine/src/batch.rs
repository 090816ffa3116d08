//! Many sequences generated together (continuous batching).
//!
//! Each [`Scheduler::step`] runs one forward pass over the next token of every decoding sequence
//! and a chunk of each prompt still being read (chunked prefill: a long prompt is read over
//! several steps so it never stalls the others), then samples every sequence that has logits.
//! Sequences join and leave between steps. Their caches come from one paged pool; a prompt that
//! starts like an earlier one (a shared system prompt, the previous turn of a conversation)
//! takes those positions from the prefix cache instead of computing them.

use crate::generate::{Decoding, Step};
use crate::{EngineError, GenerateOptions, Generation, LoadedModel};
use conch_models::{BatchItem, KvCache, KvPool, KvPoolStats, RoutingObserver, BLOCK_TOKENS};
use std::time::Instant;

/// How a [`Scheduler`] runs.
#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    /// Each sequence's context (cache capacity) in tokens.
    pub context: usize,
    /// Sequences running at once; the pool is sized so they can all fill their context.
    pub max_sequences: usize,
    /// Tokens one step computes at most: every decoding sequence's next token, then prompt chunks
    /// up to this budget.
    pub step_tokens: usize,
    /// Positions per cache block.
    pub block_tokens: usize,
}

impl BatchConfig {
    pub fn new(context: usize, max_sequences: usize) -> BatchConfig {
        BatchConfig {
            context,
            max_sequences,
            step_tokens: 512,
            block_tokens: BLOCK_TOKENS,
        }
    }
}

/// Steps many [`Sequence`]s of one model together.
pub struct Scheduler<'m> {
    model: &'m LoadedModel,
    pool: KvPool,
    config: BatchConfig,
}

/// One generation in a [`Scheduler`]. Dropping it frees its cache blocks (its full blocks stay
/// in the prefix cache for later prompts that start the same way).
pub struct Sequence<'m> {
    pool: KvPool,
    cache: KvCache,
    /// The prompt, then every sampled token. Positions `cache.len()..` have yet to run.
    tokens: Vec<u32>,
    prompt_len: usize,
    reused: usize,
    decoding: Decoding<'m>,
    started: Instant,
}

impl<'m> Scheduler<'m> {
    pub fn new(model: &'m LoadedModel, config: BatchConfig) -> Scheduler<'m> {
        let config = BatchConfig {
            block_tokens: config.block_tokens.max(1),
            step_tokens: config.step_tokens.max(1),
            ..config
        };
        let per_sequence = config.context.div_ceil(config.block_tokens);
        let blocks = per_sequence.saturating_mul(config.max_sequences.max(1));
        Scheduler {
            model,
            pool: model.model.new_pool(config.block_tokens, blocks),
            config,
        }
    }

    pub fn model(&self) -> &'m LoadedModel {
        self.model
    }

    pub fn pool_stats(&self) -> KvPoolStats {
        self.pool.stats()
    }

    /// Checks the request and makes its sequence, taking what the prefix cache has of the
    /// prompt. Nothing runs until the next [`Scheduler::step`].
    pub fn start(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
    ) -> Result<Sequence<'m>, EngineError> {
        let decoding = Decoding::new(self.model, prompt, opts, self.config.context)?;
        // At least one prompt token must run to give logits.
        let cache = self
            .pool
            .cache_with_prefix(&prompt[..prompt.len() - 1], self.config.context);
        Ok(Sequence {
            pool: self.pool.clone(),
            reused: cache.len(),
            cache,
            tokens: prompt.to_vec(),
            prompt_len: prompt.len(),
            decoding,
            started: Instant::now(),
        })
    }

    /// Runs one step of every sequence in `sequences`: one step's output per sequence, in order
    /// (nothing for one still reading its prompt). An error fails the whole step; the sequences'
    /// caches are left as they were.
    pub fn step(
        &self,
        sequences: &mut [&mut Sequence<'m>],
        observer: Option<&mut dyn RoutingObserver>,
    ) -> Result<Vec<Step>, EngineError> {
        let chunks = self.plan(sequences);
        let mut batch: Vec<BatchItem> = Vec::new();
        let mut runs: Vec<usize> = Vec::new();
        for (i, seq) in sequences.iter_mut().enumerate() {
            let Some(count) = chunks[i] else { continue };
            let from = seq.cache.len();
            batch.push(BatchItem {
                tokens: &seq.tokens[from..from + count],
                cache: &mut seq.cache,
                all_logits: false,
            });
            runs.push(i);
        }
        let mut logits = if batch.is_empty() {
            Vec::new()
        } else {
            self.model.model.forward_batch(&mut batch, observer)?
        };
        drop(batch);

        let mut steps: Vec<Step> = sequences
            .iter()
            .map(|s| Step::nothing(s.decoding.finished))
            .collect();
        for (i, row) in runs.into_iter().zip(logits.iter_mut()) {
            let seq = &mut *sequences[i];
            if seq.cache.len() < seq.tokens.len() {
                continue; // more of the prompt to read
            }
            if seq.decoding.out.tokens.is_empty() && seq.cache.len() == seq.prompt_len {
                seq.decoding.prefilled(seq.reused, seq.started.elapsed());
                self.pool
                    .share_prefix(&seq.cache, &seq.tokens[..seq.prompt_len]);
            }
            let room = seq.cache.len() < seq.cache.capacity();
            let step = seq.decoding.sample(row, &seq.tokens, room);
            if let (Some(token), None) = (step.token, step.finished) {
                seq.tokens.push(token);
            }
            steps[i] = step;
        }
        Ok(steps)
    }

    /// How many tokens each running sequence computes this step (`None`: none). Decoding
    /// sequences always get their one token; prompts share what is left of the budget in order,
    /// and the first waiting prompt always gets some so every step makes progress.
    fn plan(&self, sequences: &[&mut Sequence<'m>]) -> Vec<Option<usize>> {
        let waiting = |s: &Sequence| {
            if s.decoding.finished.is_some() {
                0
            } else {
                s.tokens.len() - s.cache.len()
            }
        };
        let mut budget = self.config.step_tokens;
        let mut chunks: Vec<Option<usize>> = sequences
            .iter()
            .map(|s| {
                let decoding = s.cache.len() >= s.prompt_len;
                (decoding && waiting(s) > 0).then(|| {
                    budget = budget.saturating_sub(1);
                    1
                })
            })
            .collect();
        let mut any = chunks.iter().any(Option::is_some);
        for (chunk, s) in chunks.iter_mut().zip(sequences) {
            let left = waiting(s);
            if chunk.is_some() || left == 0 {
                continue;
            }
            let take = if any {
                left.min(budget)
            } else {
                left.min(self.config.step_tokens)
            };
            if take > 0 {
                *chunk = Some(take);
                budget -= take.min(budget);
                any = true;
            }
        }
        chunks
    }
}

impl Sequence<'_> {
    /// The output so far.
    pub fn generation(&self) -> &Generation {
        &self.decoding.out
    }

    pub fn is_finished(&self) -> bool {
        self.decoding.finished.is_some()
    }

    /// Prompt tokens still to be read.
    pub fn prompt_left(&self) -> usize {
        self.prompt_len.saturating_sub(self.cache.len())
    }

    /// Prompt positions taken from the prefix cache.
    pub fn reused_tokens(&self) -> usize {
        self.reused
    }

    /// Ends the generation as cancelled (if still running).
    pub fn cancel(&mut self) {
        self.decoding.finish(crate::FinishReason::Cancelled);
    }
}

impl Drop for Sequence<'_> {
    fn drop(&mut self) {
        let computed = self.cache.len();
        self.pool
            .share_prefix(&self.cache, &self.tokens[..computed]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FinishReason, SamplingParams, Session};

    fn tiny_model() -> LoadedModel {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/models/llama_tied/model.gguf");
        crate::load(&path).expect("fixture model loads")
    }

    fn options(max_tokens: usize, seed: u64) -> GenerateOptions {
        GenerateOptions {
            max_tokens,
            sampling: SamplingParams {
                seed: Some(seed),
                ..SamplingParams::default()
            },
            ignore_eos: true,
            logprobs: Some(3),
            ..Default::default()
        }
    }

    /// Runs `sequences` to the end, each step together; returns each one's streamed text.
    fn run_all<'m>(scheduler: &Scheduler<'m>, sequences: &mut [Sequence<'m>]) -> Vec<String> {
        let mut texts = vec![String::new(); sequences.len()];
        while sequences.iter().any(|s| !s.is_finished()) {
            let mut refs: Vec<&mut Sequence> = sequences.iter_mut().collect();
            let steps = scheduler.step(&mut refs, None).unwrap();
            for (text, step) in texts.iter_mut().zip(steps) {
                text.push_str(&step.text);
                if let (Some(lp), Some(token)) = (&step.logprobs, step.token) {
                    assert_eq!(lp.token, token);
                    assert_eq!(lp.top.len(), 3);
                    assert!(lp.logprob <= 0.0 && lp.top[0].1 >= lp.top[2].1);
                }
            }
        }
        texts
    }

    #[test]
    fn batched_sequences_match_one_at_a_time() {
        let model = tiny_model();
        let prompts: Vec<Vec<u32>> = vec![
            vec![5, 17, 42, 99],
            (0..40).map(|i| (i * 7 + 3) % 200).collect(),
            vec![7, 3, 64, 12, 8],
        ];
        let whole: Vec<Generation> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Session::new(&model, Some(96))
                    .generate(p, &options(9, i as u64), &mut |_| true)
                    .unwrap()
            })
            .collect();
        // A small step budget makes the long prompt take several chunked steps while the others
        // decode.
        let scheduler = Scheduler::new(
            &model,
            BatchConfig {
                step_tokens: 12,
                block_tokens: 4,
                ..BatchConfig::new(96, 3)
            },
        );
        let mut sequences: Vec<Sequence> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| scheduler.start(p, &options(9, i as u64)).unwrap())
            .collect();
        let texts = run_all(&scheduler, &mut sequences);
        for ((seq, text), expected) in sequences.iter().zip(texts).zip(&whole) {
            let out = seq.generation();
            assert_eq!(
                (&out.tokens, &out.text, out.finish_reason),
                (&expected.tokens, &expected.text, FinishReason::Length)
            );
            assert_eq!(text, expected.text);
        }
    }

    #[test]
    fn a_repeated_prompt_comes_from_the_prefix_cache() {
        let model = tiny_model();
        let scheduler = Scheduler::new(
            &model,
            BatchConfig {
                block_tokens: 4,
                ..BatchConfig::new(64, 2)
            },
        );
        let prompt: Vec<u32> = (0..30).map(|i| (i * 11 + 1) % 200).collect();
        let mut first = vec![scheduler.start(&prompt, &options(5, 1)).unwrap()];
        run_all(&scheduler, &mut first);
        let first_out = first[0].generation().clone();
        drop(first);

        // The same prompt again: all whole blocks but the one holding the last token are reused.
        let mut again = vec![scheduler.start(&prompt, &options(5, 1)).unwrap()];
        assert_eq!(again[0].reused_tokens(), 28);
        run_all(&scheduler, &mut again);
        assert_eq!(again[0].generation().tokens, first_out.tokens);
        assert!(scheduler.pool_stats().hit_tokens >= 28);

        // A longer prompt continuing the first conversation reuses its prompt and reply too.
        let mut follow = prompt.clone();
        follow.extend(&first_out.tokens);
        follow.extend([9, 9, 9]);
        let seq = scheduler.start(&follow, &options(2, 1)).unwrap();
        // The first sequence ran its prompt and 4 of its 5 tokens: 34 positions, 8 whole blocks.
        assert_eq!(seq.reused_tokens(), 32);
    }

    #[test]
    fn json_output_follows_the_schema_and_stops_when_complete() {
        // A fixture with a byte-level vocabulary (every byte a token), which is what constrained
        // decoding needs never to get stuck.
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/moe/mixtral/hf");
        let model = crate::load(&path).expect("fixture model loads");
        let scheduler = Scheduler::new(&model, BatchConfig::new(256, 4));
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "name": { "type": "string", "maxLength": 6 },
                "size": { "type": "integer", "minimum": 1, "maximum": 9 },
                "tags": { "type": "array", "items": { "enum": ["a", "b"] }, "maxItems": 2 }
            },
            "required": ["name", "size", "tags"],
            "additionalProperties": false
        });
        let mut sequences: Vec<Sequence> = (0..4)
            .map(|seed| {
                let opts = GenerateOptions {
                    json: Some(crate::JsonOutput {
                        schema: Some(schema.clone()),
                    }),
                    logprobs: None,
                    ..options(200, seed)
                };
                scheduler.start(&[5, 17, 42, 99], &opts).unwrap()
            })
            .collect();
        let texts = run_all(&scheduler, &mut sequences);
        for (seq, text) in sequences.iter().zip(texts) {
            assert_eq!(seq.generation().finish_reason, FinishReason::Stop, "{text}");
            let value: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{e}: {text:?} {:?}", seq.generation().tokens));
            let name = value["name"].as_str().unwrap();
            assert!(name.chars().count() <= 6, "{text}");
            assert!((1..=9).contains(&value["size"].as_i64().unwrap()), "{text}");
            let tags = value["tags"].as_array().unwrap();
            assert!(tags.len() <= 2 && tags.iter().all(|t| t == "a" || t == "b"));
            assert_eq!(value.as_object().unwrap().len(), 3, "{text}");
        }

        let bad = GenerateOptions {
            json: Some(crate::JsonOutput {
                schema: Some(serde_json::json!({ "type": "string", "pattern": "^a+$" })),
            }),
            ..options(10, 0)
        };
        match scheduler.start(&[5], &bad) {
            Err(EngineError::BadRequest(m)) => assert!(m.contains("pattern"), "{m}"),
            other => panic!("expected a bad request, got {:?}", other.err()),
        };
    }

    #[test]
    fn cancelling_ends_the_sequence() {
        let model = tiny_model();
        let scheduler = Scheduler::new(&model, BatchConfig::new(64, 1));
        let mut seq = scheduler.start(&[5, 17, 42], &options(50, 2)).unwrap();
        let step = scheduler.step(&mut [&mut seq], None).unwrap().remove(0);
        assert!(step.token.is_some() && step.finished.is_none());
        seq.cancel();
        let out = seq.generation();
        assert_eq!(
            (out.tokens.len(), out.finish_reason),
            (1, FinishReason::Cancelled)
        );
        let step = scheduler.step(&mut [&mut seq], None).unwrap().remove(0);
        assert_eq!(step, Step::nothing(Some(FinishReason::Cancelled)));
    }
}
