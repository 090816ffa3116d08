//! Tool calls in each model family's own format: finding them in generated text (whole or
//! streamed), and the schema and wrapping text that force one.
//!
//! The text must be decoded with special tokens kept: the markers (`<tool_call>`,
//! `[TOOL_CALLS]`, `<｜tool▁calls▁begin｜>`, `<|channel|>`, ...) are special tokens in most
//! of these vocabularies.

use crate::SchemaError;
use serde_json::{json, Map, Value};

/// How a model family writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` (Hermes, Qwen2.5, Qwen3,
    /// SmolLM and the fallback).
    Hermes,
    /// The whole reply is `{"name": ..., "parameters": {...}}` (several joined by `;`),
    /// optionally after `<|python_tag|>` (Llama 3.x).
    Llama3,
    /// `[TOOL_CALLS] [{"name": ..., "arguments": {...}}]`, or the newer
    /// `[TOOL_CALLS]name[ARGS]{...}` (Mistral).
    Mistral,
    /// `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>name<｜tool▁sep｜>{...}<｜tool▁call▁end｜>...`
    /// (DeepSeek V3.1; V3's `function<｜tool▁sep｜>name\n```json\n{...}\n```` too).
    DeepSeekV3,
    /// gpt-oss harmony: `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>`.
    Harmony,
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const PYTHON_TAG: &str = "<|python_tag|>";
const MISTRAL_CALLS: &str = "[TOOL_CALLS]";
const MISTRAL_ARGS: &str = "[ARGS]";
const MISTRAL_CALL_ID: &str = "[CALL_ID]";
const DS_CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
const DS_CALLS_END: &str = "<｜tool▁calls▁end｜>";
const DS_CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
const DS_CALL_END: &str = "<｜tool▁call▁end｜>";
const DS_SEP: &str = "<｜tool▁sep｜>";
const HARMONY_START: &str = "<|start|>";
const HARMONY_CHANNEL: &str = "<|channel|>";
const HARMONY_MESSAGE: &str = "<|message|>";
const HARMONY_ENDS: [&str; 3] = ["<|end|>", "<|call|>", "<|return|>"];

impl ToolFormat {
    /// The format a chat template renders tool calls in; Hermes when nothing else matches.
    pub fn detect(template: &str) -> ToolFormat {
        if template.contains("<|channel|>") && template.contains("<|message|>") {
            ToolFormat::Harmony
        } else if template.contains("tool▁calls▁begin") {
            ToolFormat::DeepSeekV3
        } else if template.contains("[TOOL_CALLS]") {
            ToolFormat::Mistral
        } else if template.contains("<|start_header_id|>") && !template.contains(HERMES_OPEN) {
            ToolFormat::Llama3
        } else {
            ToolFormat::Hermes
        }
    }

    /// Texts that open a tool call (harmony is parsed message by message instead).
    fn markers(self) -> &'static [&'static str] {
        match self {
            ToolFormat::Hermes => &[HERMES_OPEN],
            ToolFormat::Llama3 => &[PYTHON_TAG],
            ToolFormat::Mistral => &[MISTRAL_CALLS],
            ToolFormat::DeepSeekV3 => &[DS_CALLS_BEGIN, DS_CALL_BEGIN],
            ToolFormat::Harmony => &[],
        }
    }
}

/// One call: the function's name and its arguments as JSON text (an object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: String,
}

/// A reply split into text and tool calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedReply {
    /// Text outside the tool calls (harmony: the `final` channel), trimmed at both ends.
    /// Malformed calls stay here as written.
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    /// Harmony's `analysis` channel; empty for the other formats.
    pub reasoning: String,
}

/// A call from a JSON object `{"name": ..., "arguments"|"parameters": {...}}`.
fn call_from_object(value: &Value) -> Option<ToolCall> {
    let name = value.get("name")?.as_str()?.to_string();
    let arguments = value.get("arguments").or_else(|| value.get("parameters"));
    Some(ToolCall {
        name,
        arguments: arguments_text(arguments.unwrap_or(&Value::Object(Map::new())))?,
    })
}

/// Arguments as compact JSON text: an object, or a string that holds one.
fn arguments_text(value: &Value) -> Option<String> {
    match value {
        Value::Object(_) => Some(value.to_string()),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(inner @ Value::Object(_)) => Some(inner.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// The first JSON value in `text` (after whitespace) and the byte length it took.
fn leading_json(text: &str) -> Option<(Value, usize)> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let value = stream.next()?.ok()?;
    Some((value, stream.byte_offset()))
}

/// `text` is exactly one JSON value (surrounding whitespace aside).
fn whole_json(text: &str) -> Option<Value> {
    serde_json::from_str(text.trim()).ok()
}

/// Finds the tool calls in a complete reply.
pub fn parse_tool_calls(format: ToolFormat, text: &str) -> ParsedReply {
    let mut reply = match format {
        ToolFormat::Hermes => parse_hermes(text),
        ToolFormat::Llama3 => parse_llama3(text),
        ToolFormat::Mistral => parse_mistral(text),
        ToolFormat::DeepSeekV3 => parse_deepseek(text),
        ToolFormat::Harmony => parse_harmony(text),
    };
    reply.content = reply.content.trim().to_string();
    reply.reasoning = reply.reasoning.trim().to_string();
    reply
}

fn parse_hermes(text: &str) -> ParsedReply {
    let mut reply = ParsedReply::default();
    let mut rest = text;
    while let Some(open) = rest.find(HERMES_OPEN) {
        reply.content.push_str(&rest[..open]);
        let body_start = open + HERMES_OPEN.len();
        // A reply may end (at eos) before the closing tag.
        let (body, after) = match rest[body_start..].find(HERMES_CLOSE) {
            Some(close) => (
                &rest[body_start..body_start + close],
                body_start + close + HERMES_CLOSE.len(),
            ),
            None => (&rest[body_start..], rest.len()),
        };
        match whole_json(body).as_ref().and_then(call_from_object) {
            Some(call) => reply.tool_calls.push(call),
            None => reply.content.push_str(&rest[open..after]),
        }
        rest = &rest[after..];
    }
    reply.content.push_str(rest);
    reply
}

fn parse_llama3(text: &str) -> ParsedReply {
    let (before, calls) = match text.find(PYTHON_TAG) {
        Some(at) => (&text[..at], &text[at + PYTHON_TAG.len()..]),
        None => ("", text),
    };
    // Only a reply that is nothing but calls is taken as calls.
    let mut found = Vec::new();
    let mut rest = calls.trim_start();
    while !rest.is_empty() {
        let Some((value, used)) = leading_json(rest) else {
            break;
        };
        let Some(call) = call_from_object(&value) else {
            break;
        };
        found.push(call);
        rest = rest[used..]
            .trim_start()
            .trim_start_matches(';')
            .trim_start();
    }
    if rest.is_empty() && !found.is_empty() {
        ParsedReply {
            content: before.to_string(),
            tool_calls: found,
            reasoning: String::new(),
        }
    } else {
        ParsedReply {
            content: text.to_string(),
            ..ParsedReply::default()
        }
    }
}

fn parse_mistral(text: &str) -> ParsedReply {
    let mut segments = text.split(MISTRAL_CALLS);
    let mut reply = ParsedReply {
        content: segments.next().unwrap_or_default().to_string(),
        ..ParsedReply::default()
    };
    for segment in segments {
        let body = segment.trim_start();
        let parsed: Option<(Vec<ToolCall>, usize)> = if body.starts_with('[') {
            leading_json(body).and_then(|(value, used)| {
                let calls: Option<Vec<ToolCall>> =
                    value.as_array()?.iter().map(call_from_object).collect();
                calls.filter(|c| !c.is_empty()).map(|c| (c, used))
            })
        } else {
            body.find(MISTRAL_ARGS).and_then(|at| {
                let name = body[..at]
                    .split(MISTRAL_CALL_ID)
                    .next()
                    .unwrap_or_default()
                    .trim();
                let (args, used) = leading_json(&body[at + MISTRAL_ARGS.len()..])?;
                let arguments = arguments_text(&args)?;
                let valid_name = !name.is_empty() && !name.contains(char::is_whitespace);
                valid_name.then(|| {
                    (
                        vec![ToolCall {
                            name: name.to_string(),
                            arguments,
                        }],
                        at + MISTRAL_ARGS.len() + used,
                    )
                })
            })
        };
        match parsed {
            Some((calls, used)) => {
                reply.tool_calls.extend(calls);
                reply.content.push_str(&body[used..]);
            }
            None => {
                reply.content.push_str(MISTRAL_CALLS);
                reply.content.push_str(segment);
            }
        }
    }
    reply
}

fn parse_deepseek(text: &str) -> ParsedReply {
    let mut reply = ParsedReply::default();
    let Some(begin) = text
        .find(DS_CALLS_BEGIN)
        .or_else(|| text.find(DS_CALL_BEGIN))
    else {
        reply.content = text.to_string();
        return reply;
    };
    reply.content.push_str(&text[..begin]);
    let block_start = if text[begin..].starts_with(DS_CALLS_BEGIN) {
        begin + DS_CALLS_BEGIN.len()
    } else {
        begin
    };
    let (block, after) = match text[block_start..].find(DS_CALLS_END) {
        Some(end) => (
            &text[block_start..block_start + end],
            &text[block_start + end + DS_CALLS_END.len()..],
        ),
        None => (&text[block_start..], ""),
    };
    let mut calls = Vec::new();
    let mut ok = true;
    for piece in block.split(DS_CALL_BEGIN).filter(|p| !p.trim().is_empty()) {
        let piece = piece.split(DS_CALL_END).next().unwrap_or_default();
        match deepseek_call(piece) {
            Some(call) => calls.push(call),
            None => ok = false,
        }
    }
    if ok && !calls.is_empty() {
        reply.tool_calls = calls;
        reply.content.push_str(after);
    } else {
        reply.content = text.to_string();
    }
    reply
}

/// `name<｜tool▁sep｜>{args}` (V3.1) or `function<｜tool▁sep｜>name\n```json\n{args}\n```` (V3).
fn deepseek_call(piece: &str) -> Option<ToolCall> {
    let (head, tail) = piece.split_once(DS_SEP)?;
    let (name, args) = match tail.split_once("```json") {
        Some((name, fenced)) if head.trim() == "function" => {
            (name.trim(), fenced.trim().trim_end_matches("```"))
        }
        _ => (head.trim(), tail),
    };
    let arguments = arguments_text(&whole_json(args)?)?;
    (!name.is_empty()).then(|| ToolCall {
        name: name.to_string(),
        arguments,
    })
}

fn parse_harmony(text: &str) -> ParsedReply {
    let mut reply = ParsedReply::default();
    if !text.contains(HARMONY_MESSAGE) {
        reply.content = text.to_string();
        return reply;
    }
    // Messages are `[<|start|>role] header <|message|> body <end>`; a reply may stop at eos
    // before its end marker.
    let mut rest = text;
    while !rest.is_empty() {
        let Some(body_at) = rest.find(HARMONY_MESSAGE) else {
            // Text after the last message that is no message: keep it.
            reply
                .content
                .push_str(rest.trim_start_matches(HARMONY_START));
            break;
        };
        let header = &rest[..body_at];
        let after_header = &rest[body_at + HARMONY_MESSAGE.len()..];
        let (body, end_len) = HARMONY_ENDS
            .iter()
            .filter_map(|end| after_header.find(end).map(|at| (at, end.len())))
            .min()
            .map_or((after_header, 0), |(at, len)| (&after_header[..at], len));
        let consumed = body_at + HARMONY_MESSAGE.len() + body.len() + end_len;
        let channel = header
            .split(HARMONY_CHANNEL)
            .nth(1)
            .and_then(|c| c.split_whitespace().next())
            .unwrap_or("");
        let recipient = header
            .split_whitespace()
            .chain(header.split(['<', '>', '|']))
            .find_map(|w| w.trim().strip_prefix("to=functions."))
            .map(|n| {
                n.split(|c: char| c.is_whitespace() || c == '<')
                    .next()
                    .unwrap_or("")
            });
        match recipient {
            Some(name) if !name.is_empty() => {
                match whole_json(body).as_ref().and_then(arguments_text) {
                    Some(arguments) => reply.tool_calls.push(ToolCall {
                        name: name.to_string(),
                        arguments,
                    }),
                    None => reply.content.push_str(&rest[..consumed]),
                }
            }
            _ if channel == "analysis" => reply.reasoning.push_str(body),
            _ => reply.content.push_str(body),
        }
        rest = &rest[consumed..];
    }
    reply
}

/// Tool-call parsing over a stream of text pieces: content is passed on as soon as it cannot
/// be the start of a tool call.
#[derive(Debug, Clone)]
pub struct ToolCallStream {
    format: ToolFormat,
    text: String,
    /// Length of the content already returned by [`push`](Self::push).
    streamed: usize,
}

impl ToolCallStream {
    pub fn new(format: ToolFormat) -> ToolCallStream {
        ToolCallStream {
            format,
            text: String::new(),
            streamed: 0,
        }
    }

    /// Adds generated text; returns the content that is now certain (never text that may turn
    /// out to be part of a tool call, nor trailing whitespace that may be trimmed).
    pub fn push(&mut self, piece: &str) -> String {
        self.text.push_str(piece);
        let stable = self.stable_content();
        match stable.get(self.streamed..) {
            Some(new) if stable.len() > self.streamed => {
                let new = new.to_string();
                self.streamed = stable.len();
                new
            }
            _ => String::new(),
        }
    }

    /// The whole reply parsed; its `content` is only the part `push` has not returned yet.
    pub fn finish(self) -> ParsedReply {
        let mut reply = parse_tool_calls(self.format, &self.text);
        reply.content = reply
            .content
            .get(self.streamed..)
            .unwrap_or_default()
            .to_string();
        reply
    }

    fn stable_content(&self) -> String {
        let text = &self.text;
        let content = if self.format == ToolFormat::Harmony {
            harmony_stable_content(text)
        } else {
            // Hold back from the first marker, or from a suffix that may grow into one.
            let mut hold = self
                .format
                .markers()
                .iter()
                .filter_map(|m| text.find(m))
                .min()
                .unwrap_or(text.len());
            hold = hold.min(text.len() - partial_marker_len(text, self.format.markers()));
            if self.format == ToolFormat::Llama3 && text[..hold].trim_start().starts_with('{') {
                hold = 0; // the reply may be a bare JSON call
            }
            text[..hold].to_string()
        };
        content.trim().to_string()
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of one of `markers`.
fn partial_marker_len(text: &str, markers: &[&str]) -> usize {
    markers
        .iter()
        .filter_map(|marker| {
            (1..marker.len())
                .rev()
                .find(|&cut| marker.is_char_boundary(cut) && text.ends_with(&marker[..cut]))
        })
        .max()
        .unwrap_or(0)
}

/// Harmony content so far: the finished messages' final text, plus the body of an unfinished
/// message when it is neither a tool call nor analysis. Until a first message body starts,
/// nothing is certain (replies open with a header).
fn harmony_stable_content(text: &str) -> String {
    if !text.contains(HARMONY_MESSAGE) {
        return String::new();
    }
    let finished = HARMONY_ENDS
        .iter()
        .filter_map(|end| text.rfind(end).map(|at| at + end.len()))
        .max()
        .unwrap_or(0);
    let mut content = parse_harmony(&text[..finished]).content;
    let tail = &text[finished..];
    if let Some(body_at) = tail.find(HARMONY_MESSAGE) {
        let header = &tail[..body_at];
        let analysis = header.contains(&format!("{HARMONY_CHANNEL}analysis"));
        if !header.contains("to=") && !analysis {
            let body = &tail[body_at + HARMONY_MESSAGE.len()..];
            content.push_str(&body[..body.len() - partial_marker_len(body, &HARMONY_ENDS)]);
        }
    }
    content
}

/// Which call `tool_choice` forces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForcedChoice {
    /// `"required"`: any of the tools.
    Any,
    /// `{"type": "function", "function": {"name": ...}}`.
    Named(String),
}

/// How to force a tool call: write `prefix` as if the model had (tokenized with special tokens
/// parsed), generate under `schema` with a [`JsonConstraint`](crate::JsonConstraint), then
/// turn the JSON into the call with [`tool_call`](Self::tool_call). `suffix` is what the
/// family writes after the JSON (it need not be generated).
#[derive(Debug, Clone)]
pub struct ForcedCall {
    pub prefix: String,
    pub schema: Value,
    pub suffix: String,
    /// Set when the name is in `prefix` and the JSON is the arguments alone.
    name: Option<String>,
    /// Mistral's JSON is an array of one call.
    in_array: bool,
}

impl ForcedCall {
    /// The call the generated JSON (valid under `schema`) stands for.
    pub fn tool_call(&self, json_text: &str) -> Option<ToolCall> {
        let value: Value = serde_json::from_str(json_text).ok()?;
        match (&self.name, self.in_array) {
            (Some(name), _) => Some(ToolCall {
                name: name.clone(),
                arguments: arguments_text(&value)?,
            }),
            (None, true) => call_from_object(value.as_array()?.first()?),
            (None, false) => call_from_object(&value),
        }
    }
}

/// The parameters schema of each function in OpenAI `tools` (`[{"type": "function",
/// "function": {"name", "parameters"}}]`), in order.
fn functions(tools: &[Value]) -> Result<Vec<(String, Value)>, SchemaError> {
    let mut out = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let path = format!("tools[{i}]");
        let function = tool.get("function").ok_or_else(|| SchemaError {
            path: path.clone(),
            message: "a tool needs a `function`".into(),
        })?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| SchemaError {
                path: path.clone(),
                message: "a function needs a string `name`".into(),
            })?;
        let parameters = function
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        out.push((name.to_string(), parameters));
    }
    Ok(out)
}

/// The schema, prefix and suffix that force a call in `format`'s own syntax. Formats that write
/// the name outside the JSON (DeepSeek, harmony) put a named call's name in the prefix; with
/// `ForcedChoice::Any` over several tools they use the Hermes-style object
/// `{"name": ..., "arguments": {...}}` with no wrapping.
pub fn forced_tool_call(
    format: ToolFormat,
    tools: &[Value],
    choice: &ForcedChoice,
) -> Result<ForcedCall, SchemaError> {
    let mut candidates = functions(tools)?;
    if let ForcedChoice::Named(name) = choice {
        candidates.retain(|(n, _)| n == name);
        if candidates.is_empty() {
            return Err(SchemaError {
                path: "tool_choice".into(),
                message: format!("no tool named {name:?}"),
            });
        }
    }
    if candidates.is_empty() {
        return Err(SchemaError {
            path: "tools".into(),
            message: "tool_choice needs at least one tool".into(),
        });
    }
    // Rewrites local `$ref`s of each parameters schema so it can sit under `anyOf`.
    let call_schema = |arguments_key: &str| -> Result<Value, SchemaError> {
        let mut defs = Map::new();
        let alternatives: Vec<Value> = candidates
            .iter()
            .enumerate()
            .map(|(i, (name, parameters))| {
                let parameters = hoist_defs(parameters, i, &mut defs);
                json!({
                    "type": "object",
                    "properties": {"name": {"const": name}, arguments_key: parameters},
                    "required": ["name", arguments_key],
                    "additionalProperties": false
                })
            })
            .collect();
        let mut schema = if alternatives.len() == 1 {
            alternatives.into_iter().next().expect("one alternative")
        } else {
            json!({"anyOf": alternatives})
        };
        if !defs.is_empty() {
            schema["$defs"] = Value::Object(defs);
        }
        crate::JsonConstraint::new(Some(&schema))?;
        Ok(schema)
    };
    let single_name = (candidates.len() == 1).then(|| candidates[0].0.clone());
    let forced = match (format, single_name) {
        (ToolFormat::Hermes, _) => ForcedCall {
            prefix: format!("{HERMES_OPEN}\n"),
            schema: call_schema("arguments")?,
            suffix: format!("\n{HERMES_CLOSE}"),
            name: None,
            in_array: false,
        },
        (ToolFormat::Llama3, _) => ForcedCall {
            prefix: String::new(),
            schema: call_schema("parameters")?,
            suffix: String::new(),
            name: None,
            in_array: false,
        },
        (ToolFormat::Mistral, _) => {
            let item = call_schema("arguments")?;
            let mut schema = json!({"type": "array", "prefixItems": [item], "items": false, "minItems": 1});
            if let Some(defs) = schema["prefixItems"][0].as_object_mut().and_then(|o| o.remove("$defs")) {
                schema["$defs"] = defs;
            }
            ForcedCall {
                prefix: format!("{MISTRAL_CALLS} "),
                schema,
                suffix: String::new(),
                name: None,
                in_array: true,
            }
        }
        (ToolFormat::DeepSeekV3, Some(name)) => ForcedCall {
            prefix: format!("{DS_CALLS_BEGIN}{DS_CALL_BEGIN}{name}{DS_SEP}"),
            schema: arguments_schema(&candidates[0].1)?,
            suffix: format!("{DS_CALL_END}{DS_CALLS_END}"),
            name: Some(name),
            in_array: false,
        },
        (ToolFormat::Harmony, Some(name)) => ForcedCall {
            prefix: format!("{HARMONY_CHANNEL}commentary to=functions.{name} <|constrain|>json{HARMONY_MESSAGE}"),
            schema: arguments_schema(&candidates[0].1)?,
            suffix: "<|call|>".to_string(),
            name: Some(name),
            in_array: false,
        },
        (ToolFormat::DeepSeekV3 | ToolFormat::Harmony, None) => ForcedCall {
            prefix: String::new(),
            schema: call_schema("arguments")?,
            suffix: String::new(),
            name: None,
            in_array: false,
        },
    };
    Ok(forced)
}

fn arguments_schema(parameters: &Value) -> Result<Value, SchemaError> {
    crate::JsonConstraint::new(Some(parameters))?;
    Ok(parameters.clone())
}

/// Moves `parameters`' `$defs`/`definitions` into `defs` under names unique to tool `index`,
/// rewriting its `$ref`s to match, so several tools' schemas can share one root.
fn hoist_defs(parameters: &Value, index: usize, defs: &mut Map<String, Value>) -> Value {
    fn rewrite(value: &mut Value, index: usize) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if key == "$ref" {
                        if let Some(r) = v.as_str() {
                            let renamed = r
                                .strip_prefix("#/$defs/")
                                .or_else(|| r.strip_prefix("#/definitions/"))
                                .map(|name| format!("#/$defs/tool{index}_{name}"))
                                .unwrap_or_else(|| {
                                    if r == "#" {
                                        format!("#/$defs/tool{index}")
                                    } else {
                                        r.to_string()
                                    }
                                });
                            *v = Value::String(renamed);
                        }
                    } else {
                        rewrite(v, index);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| rewrite(v, index)),
            _ => {}
        }
    }
    let mut body = parameters.clone();
    rewrite(&mut body, index);
    if let Some(map) = body.as_object_mut() {
        for key in ["$defs", "definitions"] {
            if let Some(Value::Object(local)) = map.remove(key) {
                for (name, schema) in local {
                    defs.insert(format!("tool{index}_{name}"), schema);
                }
            }
        }
    }
    // A schema that refers to itself (`#`) keeps a copy under its own name.
    if parameters.to_string().contains("\"#\"") {
        defs.insert(format!("tool{index}"), body.clone());
    }
    body
}
