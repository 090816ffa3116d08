//! OpenAI request bodies: parsing, checking, and turning them into prompts and generation options.

use crate::error::ApiError;
use conch_engine::structured::{
    forced_tool_call, ForcedCall, ForcedChoice, JsonConstraint, ToolCall, ToolCallStream,
    ToolFormat,
};
use conch_engine::{GenerateOptions, JsonOutput, LoadedModel};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Parses a request body: it must be a JSON object.
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

/// Reads the fields of `T` from a request body, naming the offending field in the error.
pub fn fields<T: DeserializeOwned>(body: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::bad_request(format!("the request body is not valid: {inner}"))
        } else {
            ApiError::bad_request(format!("'{path}': {inner}")).with_param(&path)
        }
    })
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum StopSpec {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Debug, Default)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// Fields shared by `/v1/chat/completions` and `/v1/completions` (read from the same body as the
/// endpoint's own fields).
#[derive(Deserialize, Debug, Default)]
pub struct CommonParams {
    pub model: Option<String>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<u32>,
    pub stop: Option<StopSpec>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logit_bias: Option<HashMap<String, f32>>,
    /// Extensions (as llama.cpp and vLLM accept them).
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub ignore_eos: Option<bool>,
    /// Chat: `true` for the sampled tokens' log-probabilities, with `top_logprobs` (0–20)
    /// alternatives each. Completions: the number of alternatives (0–5).
    pub logprobs: Option<Value>,
    pub top_logprobs: Option<Value>,
    pub response_format: Option<Value>,
}

#[derive(Deserialize, Debug)]
pub struct ChatRequest {
    pub messages: Vec<Value>,
    pub max_completion_tokens: Option<u32>,
    /// Passed to the chat template; calls in the reply are parsed per [`ChatRequest::tool_mode`].
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
}

#[derive(Deserialize, Debug)]
pub struct CompletionRequest {
    pub prompt: Value,
    pub echo: Option<bool>,
    pub best_of: Option<u32>,
    pub suffix: Option<String>,
}

/// A prompt of `/v1/completions`: text, or token ids given directly.
pub enum PromptInput {
    Text(String),
    Tokens(Vec<u32>),
}

impl CommonParams {
    /// Whether the stream should end with a chunk carrying `usage`.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    pub fn choices(&self) -> Result<usize, ApiError> {
        match self.n {
            None => Ok(1),
            Some(0) => Err(ApiError::bad_request("n must be at least 1").with_param("n")),
            Some(n) => Ok(n as usize),
        }
    }

    /// Rejects what this server does not implement, rather than ignoring it.
    fn reject_unsupported(&self) -> Result<(), ApiError> {
        if self.stream_options.is_some() && self.stream != Some(true) {
            return Err(ApiError::bad_request(
                "stream_options is only allowed when stream is true",
            )
            .with_param("stream_options"));
        }
        Ok(())
    }

    /// `response_format` as constrained output: `text` (none), `json_object` or `json_schema`.
    pub fn json_output(&self) -> Result<Option<JsonOutput>, ApiError> {
        let bad = |why: &str| ApiError::bad_request(why).with_param("response_format");
        let Some(format) = self.response_format.as_ref().filter(|f| !f.is_null()) else {
            return Ok(None);
        };
        match format.get("type").and_then(Value::as_str) {
            Some("text") => Ok(None),
            Some("json_object") => Ok(Some(JsonOutput { schema: None })),
            Some("json_schema") => {
                let schema = format
                    .get("json_schema")
                    .and_then(|j| j.get("schema"))
                    .filter(|s| s.is_object() || s.is_boolean())
                    .ok_or_else(|| bad("json_schema needs a `json_schema.schema` object"))?;
                // Checked here so a schema that cannot be enforced is the client's error.
                JsonConstraint::new(Some(schema))
                    .map_err(|e| bad(&format!("the JSON schema cannot be enforced: {e}")))?;
                Ok(Some(JsonOutput {
                    schema: Some(schema.clone()),
                }))
            }
            _ => Err(bad(
                "response_format.type must be \"text\", \"json_object\" or \"json_schema\"",
            )),
        }
    }

    /// How many alternatives to report with each sampled token's log-probability (`None`: no
    /// log-probabilities), as the chat (`chat`) or the completions endpoint reads the fields.
    pub fn logprobs(&self, chat: bool) -> Result<Option<usize>, ApiError> {
        let count = |v: &Value, name: &str, max: u64| match v.as_u64() {
            Some(n) if n <= max => Ok(n as usize),
            _ => Err(
                ApiError::bad_request(format!("{name} must be an integer from 0 to {max}"))
                    .with_param(name),
            ),
        };
        let top = match &self.top_logprobs {
            None | Some(Value::Null) => None,
            Some(v) if chat => Some(count(v, "top_logprobs", 20)?),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "top_logprobs belongs to the chat endpoint; here logprobs is the count",
                )
                .with_param("top_logprobs"))
            }
        };
        match (&self.logprobs, chat) {
            (None | Some(Value::Null) | Some(Value::Bool(false)), _) => match top {
                Some(_) => Err(ApiError::bad_request("top_logprobs needs logprobs: true")
                    .with_param("top_logprobs")),
                None => Ok(None),
            },
            (Some(Value::Bool(true)), true) => Ok(Some(top.unwrap_or(0))),
            (Some(v), false) => count(v, "logprobs", 5).map(Some),
            (Some(_), true) => {
                Err(ApiError::bad_request("logprobs must be a boolean").with_param("logprobs"))
            }
        }
    }

    /// Generation options from the request over the model's defaults. `max_tokens` is the
    /// request's limit, if any (the context bounds it in any case); `chat` says which endpoint
    /// the fields are read for.
    pub fn options(
        &self,
        model: &LoadedModel,
        max_tokens: Option<u32>,
        chat: bool,
    ) -> Result<GenerateOptions, ApiError> {
        self.reject_unsupported()?;
        let logprobs = self.logprobs(chat)?;
        let mut s = model.default_sampling.clone();
        if let Some(v) = self.temperature {
            s.temperature = v;
        }
        if let Some(v) = self.top_p {
            s.top_p = v;
        }
        if let Some(v) = self.top_k {
            s.top_k = v as usize;
        }
        if let Some(v) = self.min_p {
            s.min_p = v;
        }
        if let Some(v) = self.repetition_penalty {
            s.repetition_penalty = v;
        }
        for (name, value, field) in [
            (
                "presence_penalty",
                self.presence_penalty,
                &mut s.presence_penalty,
            ),
            (
                "frequency_penalty",
                self.frequency_penalty,
                &mut s.frequency_penalty,
            ),
        ] {
            if let Some(v) = value {
                if !(-2.0..=2.0).contains(&v) {
                    return Err(
                        ApiError::bad_request(format!("{name} must be between -2 and 2"))
                            .with_param(name),
                    );
                }
                *field = v;
            }
        }
        if let Some(seed) = self.seed {
            s.seed = Some(seed as u64);
        }
        if let Some(bias) = &self.logit_bias {
            let vocab = model.model.config().vocab_size;
            s.logit_bias.clear();
            for (key, &value) in bias {
                let id: u32 = key.parse().map_err(|_| {
                    ApiError::bad_request(format!("logit_bias key '{key}' is not a token id"))
                        .with_param("logit_bias")
                })?;
                if id as usize >= vocab {
                    return Err(ApiError::bad_request(format!(
                        "logit_bias token {id} is outside the vocabulary of {vocab}"
                    ))
                    .with_param("logit_bias"));
                }
                if !(-100.0..=100.0).contains(&value) {
                    return Err(ApiError::bad_request(format!(
                        "logit_bias value for token {id} must be between -100 and 100"
                    ))
                    .with_param("logit_bias"));
                }
                s.logit_bias.insert(id, value);
            }
        }
        s.validate().map_err(ApiError::bad_request)?;
        if max_tokens == Some(0) {
            return Err(
                ApiError::bad_request("max_tokens must be at least 1").with_param("max_tokens")
            );
        }
        let stop_strings = match &self.stop {
            None => Vec::new(),
            Some(StopSpec::One(s)) => vec![s.clone()],
            Some(StopSpec::Many(v)) => v.clone(),
        };
        Ok(GenerateOptions {
            max_tokens: max_tokens.map_or(usize::MAX, |m| m as usize),
            sampling: s,
            stop_strings,
            stop_tokens: Vec::new(),
            ignore_eos: self.ignore_eos.unwrap_or(false),
            logprobs,
            json: self.json_output()?,
            keep_special_tokens: false,
        })
    }
}

/// What happens to tool calls in a chat reply.
pub enum ToolMode {
    /// No tools, or `tool_choice: "none"`: the reply is text.
    Off,
    /// `tool_choice: "auto"`: calls written in the model's own format are parsed out of the text.
    Parse(ToolFormat),
    /// `"required"` or a named function: the reply is one call, generated under its schema.
    Forced(ForcedCall),
}

impl ChatRequest {
    /// `tools` and `tool_choice`, for a model that writes calls in `format`.
    pub fn tool_mode(&self, format: ToolFormat) -> Result<ToolMode, ApiError> {
        let tools = self.tools.as_deref().unwrap_or_default();
        let bad = |why: String| ApiError::bad_request(why).with_param("tool_choice");
        let choice = match &self.tool_choice {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s == "auto" => None,
            Some(Value::String(s)) if s == "none" => return Ok(ToolMode::Off),
            Some(Value::String(s)) if s == "required" => Some(ForcedChoice::Any),
            Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
                Some(name) if v.get("type").and_then(Value::as_str) == Some("function") => {
                    Some(ForcedChoice::Named(name.to_string()))
                }
                _ => return Err(bad(format!("tool_choice must be \"none\", \"auto\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, not {v}"))),
            },
        };
        match choice {
            None if tools.is_empty() => Ok(ToolMode::Off),
            None => Ok(ToolMode::Parse(format)),
            Some(_) if tools.is_empty() => Err(bad("tool_choice needs tools".into())),
            Some(choice) => forced_tool_call(format, tools, &choice)
                .map(ToolMode::Forced)
                .map_err(|e| bad(format!("the tool call cannot be enforced: {e}"))),
        }
    }

    /// The messages as the chat template expects them: content parts joined into one string.
    pub fn template_messages(&self) -> Result<Vec<Value>, ApiError> {
        if self.messages.is_empty() {
            return Err(
                ApiError::bad_request("messages must hold at least one message")
                    .with_param("messages"),
            );
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| template_message(i, m))
            .collect()
    }
}

fn template_message(i: usize, message: &Value) -> Result<Value, ApiError> {
    let param = format!("messages[{i}]");
    let bad = |why: &str| ApiError::bad_request(format!("{param}: {why}")).with_param(&param);
    let Value::Object(fields) = message else {
        return Err(bad("a message must be an object"));
    };
    match fields.get("role") {
        Some(Value::String(_)) => {}
        _ => return Err(bad("'role' must be a string")),
    }
    let mut out: Map<String, Value> = fields.clone();
    let content = match fields.get("content") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some(kind), _) if kind != "text" => {
                        return Err(bad(&format!(
                            "content parts of type '{kind}' are not supported yet"
                        )))
                    }
                    _ => {
                        return Err(bad(
                            "a content part must be {\"type\": \"text\", \"text\": ...}",
                        ))
                    }
                }
            }
            Value::String(text)
        }
        Some(_) => {
            return Err(bad(
                "'content' must be a string, an array of content parts or null",
            ))
        }
    };
    out.insert("content".into(), content);
    Ok(Value::Object(out))
}

impl CompletionRequest {
    pub fn check_unsupported(&self) -> Result<(), ApiError> {
        if self.echo == Some(true) {
            return Err(ApiError::unsupported("echo", "echo"));
        }
        if self.best_of.is_some_and(|b| b > 1) {
            return Err(ApiError::unsupported("best_of", "best_of"));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::unsupported("suffix", "suffix"));
        }
        Ok(())
    }

    /// The prompts: a string, an array of strings, an array of token ids or an array of those.
    pub fn prompts(&self) -> Result<Vec<PromptInput>, ApiError> {
        let bad = || {
            ApiError::bad_request("prompt must be a string, an array of strings, an array of token ids or an array of such arrays").with_param("prompt")
        };
        let ids = |items: &[Value]| -> Option<Vec<u32>> {
            items
                .iter()
                .map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok()))
                .collect()
        };
        let prompts = match &self.prompt {
            Value::String(s) => vec![PromptInput::Text(s.clone())],
            Value::Array(items) if items.is_empty() => return Err(bad()),
            Value::Array(items) if items.iter().all(Value::is_string) => items
                .iter()
                .map(|v| PromptInput::Text(v.as_str().unwrap_or_default().to_string()))
                .collect(),
            Value::Array(items) if items.iter().all(Value::is_number) => {
                vec![PromptInput::Tokens(ids(items).ok_or_else(bad)?)]
            }
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::Array(inner) if !inner.is_empty() => {
                        ids(inner).map(PromptInput::Tokens).ok_or_else(bad)
                    }
                    _ => Err(bad()),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad()),
        };
        Ok(prompts)
    }
}

/// Turns one choice's generated text into the chat reply's content and tool calls, piece by
/// piece as it streams.
pub enum ReplyShaper {
    Text,
    Parse(ToolCallStream),
    /// The text is the forced call's JSON; nothing of it is content.
    Forced(ForcedCall, String),
}

impl ReplyShaper {
    pub fn new(mode: &ToolMode) -> ReplyShaper {
        match mode {
            ToolMode::Off => ReplyShaper::Text,
            ToolMode::Parse(format) => ReplyShaper::Parse(ToolCallStream::new(*format)),
            ToolMode::Forced(call) => ReplyShaper::Forced(call.clone(), String::new()),
        }
    }

    /// Content that can be sent now.
    pub fn push(&mut self, text: &str) -> String {
        match self {
            ReplyShaper::Text => text.to_string(),
            ReplyShaper::Parse(stream) => stream.push(text),
            ReplyShaper::Forced(_, json) => {
                json.push_str(text);
                String::new()
            }
        }
    }

    /// The rest of the content and the tool calls, once the text is complete.
    pub fn finish(self) -> (String, Vec<ToolCall>) {
        match self {
            ReplyShaper::Text => (String::new(), Vec::new()),
            ReplyShaper::Parse(stream) => {
                let parsed = stream.finish();
                (parsed.content, parsed.tool_calls)
            }
            ReplyShaper::Forced(call, json) => match call.tool_call(&json) {
                Some(c) => (String::new(), vec![c]),
                // Cut short (max_tokens): what was generated is all there is.
                None => (json, Vec::new()),
            },
        }
    }
}

/// OpenAI's `tool_calls` entries; ids are unique within `response_id`.
pub fn tool_calls_json(response_id: &str, choice: usize, calls: &[ToolCall]) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            serde_json::json!({
                "index": i,
                "id": format!("call_{}_{choice}_{i}", response_id.rsplit('-').next().unwrap_or(response_id)),
                "type": "function",
                "function": { "name": c.name, "arguments": c.arguments },
            })
        })
        .collect()
}
