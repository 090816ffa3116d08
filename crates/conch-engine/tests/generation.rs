//! Generation behaviour on a tiny random model (fixtures/models, written by tools/gen_model_fixtures.py).

use conch_engine::{
    load, EngineError, FinishReason, GenerateOptions, LoadedModel, SamplingParams, Session,
};
use std::path::PathBuf;

fn tiny_model() -> LoadedModel {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models/llama_tied/model.gguf");
    load(&path).expect("fixture model loads")
}

fn prompt(model: &LoadedModel) -> Vec<u32> {
    let vocab = model.model.config().vocab_size as u32;
    [5u32, 17, 42, 99, 7, 3, 64]
        .iter()
        .map(|t| t % vocab)
        .collect()
}

fn opts(max_tokens: usize, sampling: SamplingParams) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampling,
        ignore_eos: true,
        ..Default::default()
    }
}

fn sampled(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: Some(seed),
        ..Default::default()
    }
}

#[test]
fn same_seed_same_output_other_seed_differs() {
    let model = tiny_model();
    let p = prompt(&model);
    let run = |seed| {
        Session::new(&model, Some(64))
            .generate(&p, &opts(24, sampled(seed)), &mut |_| true)
            .unwrap()
            .tokens
    };
    let a = run(11);
    assert_eq!(a.len(), 24);
    assert_eq!(a, run(11));
    assert_ne!(
        a,
        run(12),
        "a random model sampled at temperature 1 should not repeat 24 tokens across seeds"
    );
}

#[test]
fn greedy_continuation_reuses_the_cache_and_matches_a_fresh_run() {
    let model = tiny_model();
    let p = prompt(&model);
    let mut session = Session::new(&model, Some(128));
    let first = session
        .generate(&p, &opts(6, SamplingParams::greedy()), &mut |_| true)
        .unwrap();
    // The next turn: everything so far plus a few more prompt tokens.
    let mut next: Vec<u32> = p.clone();
    next.extend(&first.tokens);
    next.extend([9u32, 10, 11]);
    let cached = session
        .generate(&next, &opts(8, SamplingParams::greedy()), &mut |_| true)
        .unwrap();
    assert!(
        cached.reused_tokens >= p.len(),
        "expected the earlier prompt to be reused, got {}",
        cached.reused_tokens
    );
    let fresh = Session::new(&model, Some(128))
        .generate(&next, &opts(8, SamplingParams::greedy()), &mut |_| true)
        .unwrap();
    assert_eq!(fresh.reused_tokens, 0);
    assert_eq!(cached.tokens, fresh.tokens);
}

#[test]
fn max_tokens_and_a_full_context_end_with_length() {
    let model = tiny_model();
    let p = prompt(&model);
    let out = Session::new(&model, Some(64))
        .generate(&p, &opts(5, SamplingParams::greedy()), &mut |_| true)
        .unwrap();
    assert_eq!(
        (out.tokens.len(), out.finish_reason),
        (5, FinishReason::Length)
    );
    // Context of 12 holds the 7 prompt tokens and 5 generated ones at most.
    let out = Session::new(&model, Some(12))
        .generate(&p, &opts(100, SamplingParams::greedy()), &mut |_| true)
        .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Length);
    assert!(
        p.len() + out.tokens.len() <= 13,
        "generated {} tokens into a context of 12",
        out.tokens.len()
    );
}

#[test]
fn prompt_longer_than_the_context_is_a_clear_error() {
    let model = tiny_model();
    let p = prompt(&model);
    let err = Session::new(&model, Some(4))
        .generate(&p, &opts(5, SamplingParams::greedy()), &mut |_| true)
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::PromptTooLong {
                prompt_tokens: 7,
                context: 4
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("context"), "{err}");
}

#[test]
fn stop_tokens_end_generation_without_emitting_them() {
    let model = tiny_model();
    let p = prompt(&model);
    let greedy = Session::new(&model, Some(64))
        .generate(&p, &opts(6, SamplingParams::greedy()), &mut |_| true)
        .unwrap();
    let stop_at = greedy.tokens[3];
    let cut = greedy.tokens.iter().position(|&t| t == stop_at).unwrap();
    let mut o = opts(6, SamplingParams::greedy());
    o.stop_tokens = vec![stop_at];
    let out = Session::new(&model, Some(64))
        .generate(&p, &o, &mut |_| true)
        .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.tokens, greedy.tokens[..cut]);
}

#[test]
fn the_callback_can_cancel() {
    let model = tiny_model();
    let p = prompt(&model);
    let mut calls = 0;
    let out = Session::new(&model, Some(64))
        .generate(&p, &opts(50, SamplingParams::greedy()), &mut |_| {
            calls += 1;
            calls < 3
        })
        .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Cancelled);
    assert!(out.tokens.len() < 50);
}

#[test]
fn bad_requests_are_errors() {
    let model = tiny_model();
    let mut s = Session::new(&model, Some(64));
    assert!(matches!(
        s.generate(&[], &opts(5, SamplingParams::greedy()), &mut |_| true),
        Err(EngineError::BadRequest(_))
    ));
    let vocab = model.model.config().vocab_size as u32;
    let err = s
        .generate(
            &[1, vocab + 5],
            &opts(5, SamplingParams::greedy()),
            &mut |_| true,
        )
        .unwrap_err();
    assert!(err.to_string().contains("vocabulary"), "{err}");
    let bad = SamplingParams {
        temperature: -1.0,
        ..SamplingParams::greedy()
    };
    assert!(s.generate(&[1, 2], &opts(5, bad), &mut |_| true).is_err());
}
