//! The server over a real listener on 127.0.0.1, with the tiny random fixture model
//! (fixtures/models, written by tools/gen_model_fixtures.py). Expected texts come from running
//! the same prompt through `conch_engine::Session::generate` directly, never from the server.

use conch_engine::{load, GenerateOptions, LoadedModel, SamplingParams, Session};
use conch_server::{router, AppState, ServerConfig};
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn model() -> Arc<LoadedModel> {
    static MODEL: OnceLock<Arc<LoadedModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../fixtures/models/llama_tied/model.gguf");
            Arc::new(load(&path).expect("fixture model loads"))
        })
        .clone()
}

struct Server {
    base: String,
    client: reqwest::Client,
}

async fn start(config: ServerConfig) -> Server {
    start_with(model(), config).await
}

async fn start_with(model: Arc<LoadedModel>, config: ServerConfig) -> Server {
    let state = AppState::new(model, &config).expect("valid settings");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    Server {
        base,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    }
}

fn config(parallel: usize, max_queue: usize) -> ServerConfig {
    ServerConfig {
        parallel,
        max_queue,
        ctx: 0,
        ..ServerConfig::default()
    }
}

impl Server {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The `data:` payloads of an event stream, `[DONE]` included.
    async fn stream(&self, path: &str, body: Value) -> Vec<String> {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let text = r.text().await.unwrap();
        text.split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                e.strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not a data event: {e:?}"))
                    .to_string()
            })
            .collect()
    }
}

/// Token ids that are ordinary text pieces of the fixture's vocabulary.
fn prompt_ids(seed: u32) -> Vec<u32> {
    let m = model();
    let vocab = m.model.config().vocab_size as u32;
    (0..7)
        .map(|i| (seed * 31 + i * 17 + 5) % vocab)
        .filter(|&t| m.tokenizer.bos_id() != Some(t))
        .collect()
}

/// What the engine itself generates greedily for `ids`, ignoring end-of-generation tokens.
fn reference(ids: &[u32], max_tokens: usize) -> conch_engine::Generation {
    let m = model();
    let opts = GenerateOptions {
        max_tokens,
        sampling: SamplingParams::greedy(),
        ignore_eos: true,
        ..Default::default()
    };
    Session::new(&m, None)
        .generate(ids, &opts, &mut |_| true)
        .unwrap()
}

/// A prompt whose greedy continuation starts with text (a random model may emit tokens that
/// decode to nothing, such as padding, and a stream shows nothing until there is text).
fn talkative_prompt(from: u32) -> Vec<u32> {
    (from..from + 100)
        .map(prompt_ids)
        .find(|ids| !reference(ids, 3).text.is_empty())
        .expect("some prompt yields text")
}

fn greedy_completion(ids: &[u32], max_tokens: usize) -> Value {
    json!({ "prompt": ids, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true })
}

static WEATHER_TOOL: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
    json!({ "type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": { "type": "string", "maxLength": 12 },
                "days": { "type": "integer", "minimum": 1, "maximum": 7 }
            },
            "required": ["city", "days"],
            "additionalProperties": false
        }
    }})
});

fn chat_body(extra: Value) -> Value {
    let mut body = json!({ "messages": [{ "role": "user", "content": "Hello there" }], "temperature": 0, "max_tokens": 10, "ignore_eos": true });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_models_and_unknown_paths() {
    let s = start(config(2, 4)).await;
    let (status, body) = s.get("/health").await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (200, json!({ "status": "ok" }))
    );
    let (status, body) = s.get("/v1/models").await;
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], model().name.as_str());
    assert_eq!(s.get(&format!("/v1/models/{}", model().name)).await.0, 200);
    let (status, body) = s.get("/v1/models/no-such-model").await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        "model_not_found"
    );
    let (status, body) = s.get("/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/nothing-here")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_matches_the_engine_and_ends_with_length() {
    let s = start(config(2, 4)).await;
    let ids = prompt_ids(1);
    let expected = reference(&ids, 12);
    let (status, body) = s.post("/v1/completions", greedy_completion(&ids, 12)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], expected.text.as_str());
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(
        body["usage"],
        json!({ "prompt_tokens": ids.len(), "completion_tokens": 12, "total_tokens": ids.len() + 12 })
    );

    // A text prompt goes through the tokenizer, BOS included.
    let text = "hello world";
    let tokens = model().tokenizer.encode(text, true, true).unwrap();
    let (status, body) = s
        .post(
            "/v1/completions",
            json!({ "prompt": text, "max_tokens": 5, "temperature": 0, "ignore_eos": true }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], tokens.len());
    assert_eq!(
        body["choices"][0]["text"],
        reference(&tokens, 5).text.as_str()
    );

    // Several prompts: choices in prompt order.
    let other = prompt_ids(2);
    let (status, body) = s.post("/v1/completions", json!({ "prompt": [ids, other], "max_tokens": 6, "temperature": 0, "ignore_eos": true })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["text"], reference(&ids, 6).text.as_str());
    assert_eq!(
        body["choices"][1]["text"],
        reference(&other, 6).text.as_str()
    );
    assert_eq!(body["choices"][1]["index"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streaming_and_not_agree_and_repeat() {
    let s = start(config(2, 4)).await;
    let (status, first) = s.post("/v1/chat/completions", chat_body(json!({}))).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["object"], "chat.completion");
    assert_eq!(first["choices"][0]["message"]["role"], "assistant");
    assert_eq!(first["choices"][0]["finish_reason"], "length");
    assert_eq!(first["usage"]["completion_tokens"], 10);
    assert!(first["usage"]["prompt_tokens"].as_u64().unwrap() > 2);
    let content = first["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, again) = s.post("/v1/chat/completions", chat_body(json!({}))).await;
    assert_eq!(
        again["choices"][0]["message"]["content"],
        content.as_str(),
        "greedy decoding must repeat"
    );

    let events = s
        .stream(
            "/v1/chat/completions",
            chat_body(json!({ "stream": true, "stream_options": { "include_usage": true } })),
        )
        .await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, content);
    let reasons: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .map(|c| &c["finish_reason"])
        .filter(|r| !r.is_null())
        .collect();
    assert_eq!(reasons, vec!["length"]);
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], first["usage"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_choices_streamed_and_not() {
    let s = start(config(2, 4)).await;
    // Greedy: every choice is the same text.
    let (status, body) = s
        .post("/v1/chat/completions", chat_body(json!({ "n": 2 })))
        .await;
    assert_eq!(status, 200, "{body}");
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(
        (choices[0]["index"].clone(), choices[1]["index"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(
        choices[0]["message"]["content"],
        choices[1]["message"]["content"]
    );
    assert_eq!(body["usage"]["completion_tokens"], 20);

    // Sampled with a seed: reproducible per choice, and the choices differ from each other.
    let sampled = json!({ "prompt": prompt_ids(3), "n": 2, "max_tokens": 16, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "seed": 42, "ignore_eos": true });
    let (_, a) = s.post("/v1/completions", sampled.clone()).await;
    let (_, b) = s.post("/v1/completions", sampled.clone()).await;
    assert_eq!(a["choices"], b["choices"]);
    assert_ne!(
        a["choices"][0]["text"], a["choices"][1]["text"],
        "two seeded choices of a random model should differ over 16 tokens"
    );

    let mut streamed = sampled;
    streamed["stream"] = json!(true);
    let events = s.stream("/v1/completions", streamed).await;
    let mut texts = [String::new(), String::new()];
    let mut finished = [0, 0];
    for e in &events[..events.len() - 1] {
        let c: Value = serde_json::from_str(e).unwrap();
        let choice = &c["choices"][0];
        let i = choice["index"].as_u64().unwrap() as usize;
        texts[i].push_str(choice["text"].as_str().unwrap());
        if !choice["finish_reason"].is_null() {
            finished[i] += 1;
        }
    }
    assert_eq!(finished, [1, 1]);
    assert_eq!(texts[0], a["choices"][0]["text"].as_str().unwrap());
    assert_eq!(texts[1], a["choices"][1]["text"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_cut_the_text() {
    let s = start(config(2, 4)).await;
    let ids = prompt_ids(4);
    let full = reference(&ids, 40).text;
    let chars: Vec<char> = full.chars().collect();
    assert!(
        chars.len() >= 8,
        "the fixture should produce some text: {full:?}"
    );
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let expected = &full[..full.find(&stop).unwrap()];
    for stop_field in [json!(stop), json!(["never-appears-xyz", stop])] {
        let mut body = greedy_completion(&ids, 40);
        body["stop"] = stop_field;
        let (status, out) = s.post("/v1/completions", body.clone()).await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["choices"][0]["text"], expected);
        assert_eq!(out["choices"][0]["finish_reason"], "stop");
        body["stream"] = json!(true);
        let events = s.stream("/v1/completions", body).await;
        let streamed: String = events[..events.len() - 1]
            .iter()
            .map(|e| {
                serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(streamed, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_match_one_at_a_time() {
    let s = Arc::new(start(config(3, 8)).await);
    let prompts: Vec<Vec<u32>> = (10..16).map(prompt_ids).collect();
    let expected: Vec<String> = prompts.iter().map(|p| reference(p, 24).text).collect();
    let tasks: Vec<_> = prompts
        .iter()
        .map(|p| {
            let s = s.clone();
            let body = greedy_completion(p, 24);
            tokio::spawn(async move { s.post("/v1/completions", body).await })
        })
        .collect();
    for (task, want) in tasks.into_iter().zip(&expected) {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["text"], want.as_str());
    }
}

/// A server whose sequences can run long: a context far beyond the fixture's trained 256.
fn long_config(parallel: usize, max_queue: usize) -> ServerConfig {
    ServerConfig {
        parallel,
        max_queue,
        ctx: 200_000,
        ..ServerConfig::default()
    }
}

fn endless(ids: &[u32]) -> Value {
    json!({ "prompt": ids, "max_tokens": 190_000, "temperature": 0, "ignore_eos": true, "stream": true })
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_frees_its_slot() {
    let s = start(long_config(1, 2)).await;
    let mut r = s
        .client
        .post(format!("{}/v1/completions", s.base))
        .json(&endless(&talkative_prompt(5)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.chunk().await.unwrap().is_some());
    drop(r);
    // With the only slot still busy this would wait for 190k tokens (and time out).
    let ids = prompt_ids(6);
    let (status, body) = s.post("/v1/completions", greedy_completion(&ids, 8)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["text"], reference(&ids, 8).text.as_str());
    let (_, metrics) = s.get("/metrics").await;
    assert_eq!(metric(&metrics, "conch_cancelled_sequences_total"), 1.0);
    assert_eq!(metric(&metrics, "conch_active_sequences"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429() {
    let s = start(long_config(1, 0)).await;
    let mut busy = s
        .client
        .post(format!("{}/v1/completions", s.base))
        .json(&endless(&talkative_prompt(7)))
        .send()
        .await
        .unwrap();
    assert!(busy.chunk().await.unwrap().is_some());
    let r = s
        .client
        .post(format!("{}/v1/completions", s.base))
        .json(&greedy_completion(&prompt_ids(8), 4))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("busy"),
        "{body}"
    );
    // More sequences than the server can ever hold is the request's fault, not a busy server.
    let (status, body) = s
        .post("/v1/completions", json!({ "prompt": "x", "n": 5 }))
        .await;
    assert_eq!(status, 400, "{body}");
    drop(busy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_is_required_when_configured() {
    let s = start(ServerConfig {
        api_key: Some("sk-test".into()),
        ..config(1, 2)
    })
    .await;
    let url = format!("{}/v1/models", s.base);
    let r = s.client.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(
        s.client
            .get(&url)
            .bearer_auth("sk-wrong")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        s.client
            .get(&url)
            .bearer_auth("sk-test")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let r = s
        .client
        .post(format!("{}/v1/completions", s.base))
        .json(&greedy_completion(&prompt_ids(1), 2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(s.get("/health").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_errors() {
    let s = start(ServerConfig {
        ctx: 16,
        ..config(1, 2)
    })
    .await;
    let error = |status: u16, body: &Value| {
        assert!(
            body["error"]["message"].is_string() && body["error"]["type"].is_string(),
            "{body}"
        );
        assert!(
            body["error"].as_object().unwrap().contains_key("param")
                && body["error"].as_object().unwrap().contains_key("code"),
            "{body}"
        );
        status
    };
    let r = s
        .client
        .post(format!("{}/v1/chat/completions", s.base))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    error(400, &r.json().await.unwrap());

    let (status, body) = s
        .post(
            "/v1/chat/completions",
            chat_body(json!({ "temperature": "hot" })),
        )
        .await;
    assert_eq!(error(status, &body), 400);
    assert_eq!(body["error"]["param"], "temperature");

    let (status, body) = s
        .post(
            "/v1/chat/completions",
            json!({ "model": "gpt-9", "messages": [{ "role": "user", "content": "hi" }] }),
        )
        .await;
    assert_eq!(error(status, &body), 404);

    let long: Vec<u32> = (0..40).map(|i| prompt_ids(i)[0]).collect();
    let (status, body) = s.post("/v1/completions", greedy_completion(&long, 4)).await;
    assert_eq!(error(status, &body), 400);
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("40 tokens"),
        "{body}"
    );

    for bad in [
        json!({ "logprobs": 3 }),
        json!({ "logprobs": true, "top_logprobs": 21 }),
        json!({ "top_logprobs": 2 }),
    ] {
        let (status, body) = s.post("/v1/chat/completions", chat_body(bad.clone())).await;
        assert_eq!(error(status, &body), 400, "{bad}");
    }
    for (bad, mentions) in [
        (
            json!({ "response_format": { "type": "xml" } }),
            "response_format",
        ),
        (
            json!({ "response_format": { "type": "json_schema", "json_schema": { "name": "x", "schema": { "type": "string", "pattern": "a+" } } } }),
            "pattern",
        ),
        (json!({ "tool_choice": "required" }), "tools"),
        (
            json!({ "tools": [WEATHER_TOOL.clone()], "tool_choice": { "type": "function", "function": { "name": "nope" } } }),
            "nope",
        ),
    ] {
        let (status, body) = s.post("/v1/chat/completions", chat_body(bad.clone())).await;
        assert_eq!(error(status, &body), 400, "{bad}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{message}");
    }
    for bad in [
        json!({ "n": 0 }),
        json!({ "max_tokens": 0 }),
        json!({ "top_p": 0 }),
        json!({ "messages": [] }),
        json!({ "messages": [{ "content": "no role" }] }),
        json!({ "logit_bias": { "abc": 1 } }),
        json!({ "stop": 5 }),
    ] {
        let (status, body) = s.post("/v1/chat/completions", chat_body(bad.clone())).await;
        assert_eq!(error(status, &body), 400, "{bad}: {body}");
    }
    let (status, body) = s
        .post("/v1/completions", json!({ "prompt": [1, 2, 1_000_000] }))
        .await;
    assert_eq!(error(status, &body), 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("vocabulary"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_tokens() {
    let s = start(config(2, 4)).await;
    let ids = prompt_ids(9);
    assert_eq!(
        s.post("/v1/completions", greedy_completion(&ids, 5))
            .await
            .0,
        200
    );
    assert_eq!(
        s.post("/v1/completions", greedy_completion(&ids, 3))
            .await
            .0,
        200
    );
    assert_eq!(
        s.post("/v1/completions", json!({ "prompt": "x", "model": "nope" }))
            .await
            .0,
        404
    );
    let (status, text) = s.get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &text,
            "conch_requests_total{route=\"/v1/completions\",status=\"200\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            "conch_requests_total{route=\"/v1/completions\",status=\"404\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "conch_prompt_tokens_total"),
        2.0 * ids.len() as f64
    );
    assert_eq!(metric(&text, "conch_generated_tokens_total"), 8.0);
    assert_eq!(
        metric(&text, "conch_time_to_first_token_seconds_count"),
        2.0
    );
    assert_eq!(
        metric(&text, "conch_inter_token_latency_seconds_count"),
        6.0
    );
    assert_eq!(metric(&text, "conch_queue_depth"), 0.0);
    assert_eq!(metric(&text, "conch_active_sequences"), 0.0);
}

/// The fixture's reference: its tokens and transformers' logits for each position.
fn transformers_logits() -> (Vec<u32>, Vec<Vec<f32>>) {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models/llama_tied");
    let json: Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let raw = std::fs::read(dir.join(json["logits"].as_str().unwrap())).unwrap();
    let floats: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let cols = json["cols"].as_u64().unwrap() as usize;
    let tokens = json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    (tokens, floats.chunks(cols).map(<[f32]>::to_vec).collect())
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let total: f64 = row.iter().map(|&l| (l as f64 - max).exp()).sum();
    row.iter().map(|&l| l as f64 - max - total.ln()).collect()
}

#[tokio::test]
async fn logprobs_match_transformers() {
    let s = start(config(2, 4)).await;
    let (tokens, logits) = transformers_logits();
    let prompt = &tokens[..6];
    let reference = log_softmax(&logits[5]);
    let mut ranked: Vec<usize> = (0..reference.len()).collect();
    ranked.sort_by(|&a, &b| reference[b].total_cmp(&reference[a]));

    let mut body = greedy_completion(prompt, 1);
    body["logprobs"] = json!(3);
    let (status, body) = s.post("/v1/completions", body).await;
    assert_eq!(status, 200, "{body}");
    let lp = &body["choices"][0]["logprobs"];
    let first = lp["token_logprobs"][0].as_f64().unwrap();
    // Greedy picks the most likely token, whose log-probability transformers gives.
    assert!(
        (first - reference[ranked[0]]).abs() < 1e-3,
        "{first} vs {}",
        reference[ranked[0]]
    );
    // The alternatives are keyed by text, so tokens with the same text share an entry.
    let top = lp["top_logprobs"][0].as_object().unwrap();
    assert!(!top.is_empty() && top.len() <= 3);
    for v in top.values() {
        let v = v.as_f64().unwrap();
        assert!(
            ranked[..3].iter().any(|&r| (v - reference[r]).abs() < 1e-3),
            "{v}"
        );
    }

    let chat = chat_body(json!({ "logprobs": true, "top_logprobs": 2, "max_tokens": 3 }));
    let (status, body) = s.post("/v1/chat/completions", chat).await;
    assert_eq!(status, 200, "{body}");
    let content = body["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(content.len(), 3);
    for entry in content {
        let lp = entry["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0);
        assert_eq!(entry["top_logprobs"].as_array().unwrap().len(), 2);
        assert!(entry["bytes"].is_array() && entry["token"].is_string());
    }
}

/// A fixture whose vocabulary has every byte as a token, as constrained decoding needs.
fn byte_level_model() -> Arc<LoadedModel> {
    let path =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/moe/mixtral/hf");
    Arc::new(load(&path).expect("fixture model loads"))
}

#[tokio::test]
async fn json_schema_and_forced_tool_calls_are_enforced() {
    let s = start_with(byte_level_model(), config(2, 4)).await;
    let schema = json!({
        "type": "object",
        "properties": {
            "answer": { "enum": ["yes", "no", "maybe"] },
            "score": { "type": "integer", "minimum": 0, "maximum": 100 }
        },
        "required": ["answer", "score"],
        "additionalProperties": false
    });
    for seed in 0..3 {
        let body = json!({
            "messages": [{ "role": "user", "content": "Answer me" }],
            "max_tokens": 400, "seed": seed, "temperature": 1.0,
            "response_format": { "type": "json_schema", "json_schema": { "name": "a", "schema": schema } },
        });
        let (status, out) = s.post("/v1/chat/completions", body).await;
        assert_eq!(status, 200, "{out}");
        let text = out["choices"][0]["message"]["content"].as_str().unwrap();
        let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(["yes", "no", "maybe"].contains(&value["answer"].as_str().unwrap()));
        assert!(
            (0..=100).contains(&value["score"].as_i64().unwrap()),
            "{text}"
        );
        assert_eq!(out["choices"][0]["finish_reason"], "stop");
    }

    let body = json!({
        "messages": [{ "role": "user", "content": "Weather in Oslo?" }],
        "max_tokens": 400, "seed": 5, "temperature": 1.0,
        "tools": [WEATHER_TOOL.clone()],
        "tool_choice": { "type": "function", "function": { "name": "get_weather" } },
    });
    let (status, out) = s.post("/v1/chat/completions", body.clone()).await;
    assert_eq!(status, 200, "{out}");
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{out}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].as_str().unwrap().chars().count() <= 12);
    assert!((1..=7).contains(&args["days"].as_i64().unwrap()));

    let mut streamed = body;
    streamed["stream"] = json!(true);
    let events = s.stream("/v1/chat/completions", streamed).await;
    let chunks: Vec<Value> = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(calls.len(), 1, "{events:?}");
    assert_eq!(calls[0]["function"], call["function"]);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

/// Sums the samples of `name` (any labels) in a Prometheus text, per value of `label`.
fn metric_by_label(text: &str, name: &str, label: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(&format!("{name}{{"))) {
        let key = line
            .split(&format!("{label}=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_string();
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *out.entry(key).or_insert(0.0) += value;
    }
    out
}

#[tokio::test]
async fn metrics_report_kv_blocks_prefix_hits_and_experts() {
    let s = start_with(byte_level_model(), config(2, 4)).await;
    let prompt: Vec<u32> = (0..40).map(|i| (i * 13 + 7) % 250).collect();
    for _ in 0..2 {
        let (status, body) = s
            .post("/v1/completions", greedy_completion(&prompt, 4))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, text) = s.get("/metrics").await;
    // The second request found the first 32 positions (two 16-position blocks) cached.
    assert!(
        metric(&text, "conch_prefix_cache_hit_tokens_total") >= 32.0,
        "{text}"
    );
    assert!(metric(&text, "conch_prefix_cache_blocks") >= 2.0, "{text}");
    assert!(metric(&text, "conch_kv_blocks_used") >= 2.0, "{text}");
    assert!(metric(&text, "conch_kv_blocks_free") > 0.0, "{text}");
    // Both MoE layers saw the same tokens, two experts each: equal totals, even per layer.
    let per_layer = metric_by_label(&text, "conch_expert_tokens_total", "layer");
    assert_eq!(per_layer.len(), 2, "{text}");
    let totals: Vec<f64> = per_layer.values().copied().collect();
    assert!(
        totals[0] > 0.0 && totals[0] == totals[1] && totals[0] % 2.0 == 0.0,
        "{totals:?}"
    );
}
