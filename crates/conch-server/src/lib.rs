//! An OpenAI-compatible HTTP server over one loaded model: `/v1/chat/completions`,
//! `/v1/completions`, `/v1/models`, `/health` and `/metrics` (Prometheus).
//!
//! The only crate that knows HTTP and the OpenAI wire format. Requests become sequences for the
//! engine thread ([`engine`]), which steps up to `parallel` of them in turn, one token each; model
//! work never runs on the async runtime.

mod app;
mod engine;
mod error;
mod metrics;
mod openai;
mod web;

pub use app::open_store;
pub use error::ApiError;
pub use metrics::Metrics;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, Uri};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use conch_engine::{
    EngineError, FinishReason, GenerateOptions, JsonOutput, LoadedModel, TokenLogprobs,
};
use engine::{Engine, Event, Finished, Job, EVENTS_PER_SEQUENCE};
use openai::{
    fields, parse_body, tool_calls_json, ChatRequest, CommonParams, CompletionRequest, PromptInput,
    ReplyShaper, ToolMode,
};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// When set, `/v1/*` requests must send `Authorization: Bearer <api_key>`.
    pub api_key: Option<String>,
    /// Sequences generated at once (each with its own KV cache).
    pub parallel: usize,
    /// Each sequence's context (KV-cache size) in tokens; 0 means the model's own context length.
    pub ctx: usize,
    /// Sequences that may wait for a slot beyond the `parallel` running ones; more get 429.
    pub max_queue: usize,
    /// Where the family app keeps its SQLite database; None: `$XDG_DATA_HOME/conch` or
    /// `~/.local/share/conch`. Ignored when `database_url` is set.
    pub data_dir: Option<std::path::PathBuf>,
    /// The app's database as a `postgres://…` (or `sqlite:…`) URL instead of the data directory.
    pub database_url: Option<String>,
    /// Where `scripts/fetch-speech` put the memoir mode's offline speech models; None:
    /// `conch_speech::SpeechConfig::default_dir()`.
    pub speech_dir: Option<std::path::PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            parallel: 4,
            ctx: 0,
            max_queue: 64,
            data_dir: None,
            database_url: None,
            speech_dir: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid server settings: {0}")]
    Config(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("the server stopped: {0}")]
    Io(#[from] std::io::Error),
    #[error("the app's database: {0}")]
    Storage(String),
}

/// What the handlers share: the model, the engine thread and the metrics.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    model: Arc<LoadedModel>,
    engine: Engine,
    metrics: Arc<Metrics>,
    api_key: Option<String>,
    context: usize,
    started: u64,
    /// The family app's storage; None for a server of the OpenAI API alone.
    app: Option<app::AppContext>,
}

impl AppState {
    /// Checks `config` and starts the engine thread (which stops when the last clone is dropped).
    /// The app's `/api/*` routes answer 503 on such a server; see [`AppState::open`].
    pub fn new(model: Arc<LoadedModel>, config: &ServerConfig) -> Result<AppState, ServerError> {
        AppState::build(model, config, None)
    }

    fn build(
        model: Arc<LoadedModel>,
        config: &ServerConfig,
        app: Option<app::AppContext>,
    ) -> Result<AppState, ServerError> {
        if config.parallel == 0 {
            return Err(ServerError::Config("parallel must be at least 1".into()));
        }
        let context = if config.ctx == 0 {
            model.context_length()
        } else {
            config.ctx
        };
        if context < 2 {
            return Err(ServerError::Config(format!(
                "a context of {context} tokens cannot hold a prompt and a reply"
            )));
        }
        if config.api_key.as_deref() == Some("") {
            return Err(ServerError::Config("the API key is empty".into()));
        }
        let metrics = Arc::new(Metrics::default());
        let engine = Engine::start(
            model.clone(),
            config.parallel,
            context,
            config.max_queue,
            metrics.clone(),
        );
        Ok(AppState {
            inner: Arc::new(Inner {
                model,
                engine,
                metrics,
                api_key: config.api_key.clone(),
                context,
                started: unix_time(),
                app,
            }),
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// The HTTP routes over `state`.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/metrics", get(metrics_text))
        .merge(v1)
        .merge(web::routes())
        .merge(app::routes())
        .fallback(|uri: Uri| async move { ApiError::not_found(uri.path()) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(16 << 20))
        .with_state(state)
}

/// Listens on `config.host:config.port` and serves until Ctrl-C.
pub async fn serve(model: Arc<LoadedModel>, config: ServerConfig) -> Result<(), ServerError> {
    let state = AppState::open(model, &config).await?;
    let address = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port))
        .await
        .map_err(|source| ServerError::Bind { address, source })?;
    // Connection info gives the login rate limit each client's address.
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

async fn require_api_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.inner.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same_secret(g.trim().as_bytes(), key.as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// Compares without stopping at the first difference, so timing does not reveal the key.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const ROUTES: &[&str] = &[
    "/health",
    "/metrics",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
];

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    // Label by route, never by raw path, so clients cannot create unbounded label values.
    let route = match ROUTES.iter().find(|&&r| r == path) {
        Some(r) => r,
        None if path.starts_with("/v1/models/") => "/v1/models/{id}",
        None => "other",
    };
    let response = next.run(request).await;
    state
        .inner
        .metrics
        .record_request(route, response.status().as_u16());
    response
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.inner.metrics.render(),
    )
}

fn model_object(state: &AppState) -> Value {
    json!({ "id": state.inner.model.name, "object": "model", "created": state.inner.started, "owned_by": "conch" })
}

async fn list_models(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "object": "list", "data": [model_object(&state)] }))
}

async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.check_model(Some(&id))?;
    Ok(Json(model_object(&state)))
}

/// The two response shapes that differ between the chat and the plain completion endpoints.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completion,
}

async fn chat_completions(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = parse_body(&body)?;
    let common: CommonParams = fields(&body)?;
    let request: ChatRequest = fields(&body)?;
    state.check_model(common.model.as_deref())?;
    let messages = request.template_messages()?;
    let mut options = common.options(
        &state.inner.model,
        request.max_completion_tokens.or(common.max_tokens),
        true,
    )?;
    let tool_mode = request.tool_mode(state.inner.model.tool_format())?;
    let forced_prefix = match &tool_mode {
        ToolMode::Off => None,
        // Call markers are special tokens in most vocabularies.
        ToolMode::Parse(_) => {
            options.keep_special_tokens = true;
            None
        }
        ToolMode::Forced(call) => {
            options.json = Some(JsonOutput {
                schema: Some(call.schema.clone()),
            });
            Some(call.prefix.clone())
        }
    };
    let model = state.inner.model.clone();
    let tools = request.tools.clone();
    let prompt = tokio::task::spawn_blocking(move || {
        let mut prompt = chat_prompt(&model, &messages, tools.as_deref())?;
        if let Some(prefix) = forced_prefix {
            // The call's opening, as if the model had written it.
            prompt.extend(model.tokenizer.encode(&prefix, false, true).map_err(|e| {
                ApiError::internal(format!("the tool call prefix cannot be tokenized: {e}"))
            })?);
        }
        Ok::<_, ApiError>(prompt)
    })
    .await
    .map_err(|_| ApiError::internal("rendering the prompt failed"))??;
    let mut run = state.start(vec![prompt], &common, options)?;
    run.tool_mode = Arc::new(tool_mode);
    respond(&state, run, Endpoint::Chat, &common).await
}

async fn completions(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let body = parse_body(&body)?;
    let common: CommonParams = fields(&body)?;
    let request: CompletionRequest = fields(&body)?;
    state.check_model(common.model.as_deref())?;
    request.check_unsupported()?;
    let prompts = request.prompts()?;
    // OpenAI's default for this endpoint is 16 tokens.
    let options = common.options(
        &state.inner.model,
        Some(common.max_tokens.unwrap_or(16)),
        false,
    )?;
    let model = state.inner.model.clone();
    let prompts = tokio::task::spawn_blocking(move || {
        prompts
            .into_iter()
            .map(|p| match p {
                // Special-token texts in a raw prompt mean those tokens, as in llama.cpp's server.
                PromptInput::Text(text) => model.tokenizer.encode(&text, true, true).map_err(|e| {
                    ApiError::bad_request(format!("the prompt cannot be tokenized: {e}"))
                }),
                PromptInput::Tokens(ids) => Ok(ids),
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|_| ApiError::internal("tokenizing the prompt failed"))??;
    let run = state.start(prompts, &common, options)?;
    respond(&state, run, Endpoint::Completion, &common).await
}

/// The conversation rendered with the model's chat template and tokenized.
fn chat_prompt(
    model: &LoadedModel,
    messages: &[Value],
    tools: Option<&[Value]>,
) -> Result<Vec<u32>, ApiError> {
    model.chat_prompt(messages, tools).map_err(|e| match e {
        EngineError::Template(e) => {
            ApiError::bad_request(format!("the chat template failed on these messages: {e}"))
                .with_param("messages")
        }
        e => ApiError::bad_request(format!("the prompt cannot be tokenized: {e}")),
    })
}

/// The sequences of one request on their way through the engine.
struct Run {
    events: mpsc::Receiver<Event>,
    choices: usize,
    /// Prompt tokens counted once per prompt, however many choices share it.
    prompt_tokens: usize,
    /// What happens to tool calls in the replies (chat).
    tool_mode: Arc<ToolMode>,
}

impl AppState {
    fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        match requested {
            Some(name) if name != self.inner.model.name => {
                Err(ApiError::model_not_found(name, &self.inner.model.name))
            }
            _ => Ok(()),
        }
    }

    /// Queues `n` sequences per prompt (choice `p * n + i` is the `i`th of prompt `p`).
    fn start(
        &self,
        prompts: Vec<Vec<u32>>,
        common: &CommonParams,
        options: GenerateOptions,
    ) -> Result<Run, ApiError> {
        let n = common.choices()?;
        let vocab = self.inner.model.model.config().vocab_size;
        let context = self.inner.context;
        for (p, prompt) in prompts.iter().enumerate() {
            let which = if prompts.len() > 1 {
                format!("prompt {p}")
            } else {
                "the prompt".to_string()
            };
            if prompt.is_empty() {
                return Err(
                    ApiError::bad_request(format!("{which} has no tokens")).with_param("prompt")
                );
            }
            if prompt.len() >= context {
                return Err(ApiError::bad_request(format!(
                    "{which} has {} tokens but this server's context holds {context}, which must also leave room for the reply; shorten it",
                    prompt.len()
                ))
                .with_code("context_length_exceeded"));
            }
            if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
                return Err(ApiError::bad_request(format!(
                    "token id {bad} in {which} is outside the vocabulary of {vocab}"
                ))
                .with_param("prompt"));
            }
        }
        let total = prompts.len() * n;
        let limit = self.inner.engine.limit();
        if total > limit {
            return Err(ApiError::bad_request(format!("the request asks for {total} sequences but this server takes at most {limit} at once")).with_param("n"));
        }
        let (sender, events) = mpsc::channel(EVENTS_PER_SEQUENCE * total);
        let prompt_tokens = prompts.iter().map(Vec::len).sum();
        let mut jobs = Vec::with_capacity(total);
        for (p, prompt) in prompts.into_iter().enumerate() {
            for i in 0..n {
                let mut options = options.clone();
                // Choices of one request differ even with a seed, and stay reproducible.
                options.sampling.seed = options.sampling.seed.map(|s| s.wrapping_add(i as u64));
                jobs.push(Job {
                    prompt: prompt.clone(),
                    options,
                    index: p * n + i,
                    events: sender.clone(),
                });
            }
        }
        self.inner
            .engine
            .submit(jobs)
            .map_err(|e| ApiError::busy(e.to_string()))?;
        Ok(Run {
            events,
            choices: total,
            prompt_tokens,
            tool_mode: Arc::new(ToolMode::Off),
        })
    }
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn response_id(endpoint: Endpoint) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let prefix = if endpoint == Endpoint::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    format!(
        "{prefix}-{nanos:x}{:04x}",
        COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({ "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens })
}

async fn respond(
    state: &AppState,
    run: Run,
    endpoint: Endpoint,
    common: &CommonParams,
) -> Result<Response, ApiError> {
    let head = ResponseHead {
        id: response_id(endpoint),
        created: unix_time(),
        model: state.inner.model.clone(),
        endpoint,
        logprobs: common.logprobs(endpoint == Endpoint::Chat)?.is_some(),
    };
    if common.stream == Some(true) {
        return Ok(stream(run, head, common.include_usage()).into_response());
    }
    let Run {
        mut events,
        choices,
        prompt_tokens,
        tool_mode,
    } = run;
    let mut texts = vec![String::new(); choices];
    let mut logprobs: Vec<Vec<TokenLogprobs>> = vec![Vec::new(); choices];
    let mut finished: Vec<Option<Finished>> = vec![None; choices];
    let mut remaining = choices;
    while remaining > 0 {
        match events.recv().await {
            Some(Event::Text {
                index,
                text,
                logprobs: lps,
                finished: end,
            }) => {
                texts[index].push_str(&text);
                logprobs[index].extend(lps);
                if end.is_some() {
                    finished[index] = end;
                    remaining -= 1;
                }
            }
            Some(Event::Failed { message }) => return Err(ApiError::internal(message)),
            None => {
                return Err(ApiError::internal(
                    "the engine stopped before the reply was complete",
                ))
            }
        }
    }
    let completion_tokens = finished.iter().flatten().map(|f| f.completion_tokens).sum();
    let choices: Vec<Value> = texts
        .into_iter()
        .zip(&finished)
        .zip(&logprobs)
        .enumerate()
        .map(|(index, ((text, end), lps))| {
            let reason = end.map(|f| finish_reason(f.reason));
            let logprobs = head.logprobs_json(lps, &mut 0);
            match endpoint {
                Endpoint::Chat => {
                    let mut shaper = ReplyShaper::new(&tool_mode);
                    let mut content = shaper.push(&text);
                    let (rest, calls) = shaper.finish();
                    content.push_str(&rest);
                    let mut message = json!({ "role": "assistant", "content": content });
                    let mut reason = reason;
                    if !calls.is_empty() {
                        if content.is_empty() {
                            message["content"] = Value::Null;
                        }
                        message["tool_calls"] = tool_calls_json(&head.id, index, &calls).into();
                        reason = Some("tool_calls");
                    }
                    json!({ "index": index, "message": message, "logprobs": logprobs, "finish_reason": reason })
                }
                Endpoint::Completion => json!({ "index": index, "text": text, "logprobs": logprobs, "finish_reason": reason }),
            }
        })
        .collect();
    let object = if endpoint == Endpoint::Chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    Ok(Json(json!({
        "id": head.id, "object": object, "created": head.created, "model": head.model.name,
        "choices": choices, "usage": usage(prompt_tokens, completion_tokens),
    }))
    .into_response())
}

struct ResponseHead {
    id: String,
    created: u64,
    model: Arc<LoadedModel>,
    endpoint: Endpoint,
    /// The request asked for log-probabilities.
    logprobs: bool,
}

impl ResponseHead {
    fn chunk(&self, choices: Value, include_usage: bool) -> String {
        let object = if self.endpoint == Endpoint::Chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let mut chunk = json!({ "id": self.id, "object": object, "created": self.created, "model": self.model.name, "choices": choices });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk.to_string()
    }

    fn choice(
        &self,
        index: usize,
        text: Option<&str>,
        logprobs: Value,
        reason: Option<&str>,
    ) -> Value {
        match self.endpoint {
            Endpoint::Chat => {
                let delta = text.map_or(json!({}), |t| json!({ "content": t }));
                json!({ "index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason })
            }
            Endpoint::Completion => {
                json!({ "index": index, "text": text.unwrap_or(""), "logprobs": logprobs, "finish_reason": reason })
            }
        }
    }

    /// The `logprobs` object of a choice (or chunk) for `tokens`, in the endpoint's shape; null
    /// when the request did not ask. `offset` is the text offset of the first token (completions),
    /// advanced past these.
    fn logprobs_json(&self, tokens: &[TokenLogprobs], offset: &mut usize) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        let bytes = |id: u32| self.model.tokenizer.token_bytes(id).unwrap_or_default();
        let text = |id: u32| String::from_utf8_lossy(&bytes(id)).into_owned();
        match self.endpoint {
            Endpoint::Chat => {
                let entry = |id: u32, logprob: f32| json!({ "token": text(id), "logprob": logprob, "bytes": bytes(id) });
                let content: Vec<Value> = tokens
                    .iter()
                    .map(|t| {
                        let mut e = entry(t.token, t.logprob);
                        e["top_logprobs"] = t.top.iter().map(|&(id, lp)| entry(id, lp)).collect();
                        e
                    })
                    .collect();
                json!({ "content": content })
            }
            Endpoint::Completion => {
                let mut offsets = Vec::with_capacity(tokens.len());
                for t in tokens {
                    offsets.push(*offset);
                    *offset += text(t.token).len();
                }
                let top: Vec<Value> = tokens
                    .iter()
                    .map(|t| {
                        let map: serde_json::Map<String, Value> = t
                            .top
                            .iter()
                            .map(|&(id, lp)| (text(id), json!(lp)))
                            .collect();
                        Value::Object(map)
                    })
                    .collect();
                json!({
                    "tokens": tokens.iter().map(|t| text(t.token)).collect::<Vec<_>>(),
                    "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                    "top_logprobs": top,
                    "text_offset": offsets,
                })
            }
        }
    }
}

/// Server-sent events: a chunk per piece of text, a closing chunk per choice with its
/// finish_reason, optionally one with the usage, then `[DONE]`.
fn stream(
    run: Run,
    head: ResponseHead,
    include_usage: bool,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    struct Streaming {
        run: Run,
        head: ResponseHead,
        include_usage: bool,
        ready: VecDeque<String>,
        remaining: usize,
        completion_tokens: usize,
        /// Per choice, the text offset of its next token (completions' logprobs).
        offsets: Vec<usize>,
        /// Per choice, content and tool calls from the text (taken when the choice finishes).
        shapers: Vec<Option<ReplyShaper>>,
        ended: bool,
    }
    let mut ready = VecDeque::new();
    if head.endpoint == Endpoint::Chat {
        for index in 0..run.choices {
            let choice = json!({ "index": index, "delta": { "role": "assistant", "content": "" }, "logprobs": null, "finish_reason": null });
            ready.push_back(head.chunk(json!([choice]), include_usage));
        }
    }
    let remaining = run.choices;
    let state = Streaming {
        offsets: vec![0; run.choices],
        shapers: (0..run.choices)
            .map(|_| Some(ReplyShaper::new(&run.tool_mode)))
            .collect(),
        run,
        head,
        include_usage,
        ready,
        remaining,
        completion_tokens: 0,
        ended: false,
    };
    // The stream owns the event receiver: when the client goes away the response, and with it
    // the receiver, is dropped, and the engine drops the sequences at their next step.
    let events = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(data) = s.ready.pop_front() {
                return Some((Ok(SseEvent::default().data(data)), s));
            }
            if s.ended {
                return None;
            }
            if s.remaining == 0 {
                if s.include_usage {
                    let mut chunk: Value =
                        serde_json::from_str(&s.head.chunk(json!([]), false)).unwrap_or_default();
                    chunk["usage"] = usage(s.run.prompt_tokens, s.completion_tokens);
                    s.ready.push_back(chunk.to_string());
                }
                s.ready.push_back("[DONE]".into());
                s.ended = true;
                continue;
            }
            match s.run.events.recv().await {
                Some(Event::Text {
                    index,
                    text,
                    logprobs,
                    finished,
                }) => {
                    let mut text = match &mut s.shapers[index] {
                        Some(shaper) => shaper.push(&text),
                        None => text,
                    };
                    let mut calls = Vec::new();
                    if finished.is_some() {
                        if let Some(shaper) = s.shapers[index].take() {
                            let (rest, found) = shaper.finish();
                            text.push_str(&rest);
                            calls = found;
                        }
                    }
                    if !text.is_empty() || !logprobs.is_empty() {
                        let lps = s.head.logprobs_json(&logprobs, &mut s.offsets[index]);
                        s.ready.push_back(s.head.chunk(
                            json!([s.head.choice(index, Some(&text), lps, None)]),
                            s.include_usage,
                        ));
                    }
                    if !calls.is_empty() {
                        let delta =
                            json!({ "tool_calls": tool_calls_json(&s.head.id, index, &calls) });
                        let choice = json!({ "index": index, "delta": delta, "logprobs": null, "finish_reason": null });
                        s.ready
                            .push_back(s.head.chunk(json!([choice]), s.include_usage));
                    }
                    if let Some(f) = finished {
                        s.remaining -= 1;
                        s.completion_tokens += f.completion_tokens;
                        let reason = if calls.is_empty() {
                            finish_reason(f.reason)
                        } else {
                            "tool_calls"
                        };
                        s.ready.push_back(s.head.chunk(
                            json!([s.head.choice(index, None, Value::Null, Some(reason))]),
                            s.include_usage,
                        ));
                    }
                }
                Some(Event::Failed { message }) => {
                    s.ready
                        .push_back(ApiError::internal(message).body().to_string());
                    s.ended = true;
                }
                None => {
                    s.ready.push_back(
                        ApiError::internal("the engine stopped before the reply was complete")
                            .body()
                            .to_string(),
                    );
                    s.ended = true;
                }
            }
        }
    });
    Sse::new(events)
}
