//! Chat templates, rendered with minijinja the way transformers' `apply_chat_template` renders
//! them with Jinja2: `trim_blocks` and `lstrip_blocks`, loop controls, Python string methods,
//! `raise_exception(msg)`, `strftime_now(fmt)`, and a `tojson` that behaves like `json.dumps`
//! (no HTML escaping, non-ASCII kept, `indent`/`separators`/`sort_keys`). The `{% generation %}`
//! tag (for assistant masks) renders its body.

use chrono::NaiveDateTime;
use conch_formats::GgufFile;
use minijinja::value::{Kwargs, Rest, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::Value as Json;
use std::path::Path;
use thiserror::Error as ThisError;

#[derive(Debug, ThisError)]
pub enum TemplateError {
    /// The template does not parse.
    #[error("chat template syntax error: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)`.
    #[error("chat template raised: {0}")]
    Raised(String),
    /// Rendering failed for another reason (a wrong value type, an unknown filter...).
    #[error("chat template failed: {0}")]
    Render(String),
    /// Bad input to `render` (messages that are not objects, an extra context that is not a map).
    #[error("chat template input: {0}")]
    Input(String),
}

/// The message passed to `raise_exception`, carried as the minijinja error's source.
#[derive(Debug)]
struct Raised(String);
impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Raised {}

const TEMPLATE_NAME: &str = "chat_template";

pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles `source`; `strftime_now` reads the local clock.
    pub fn new(
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, TemplateError> {
        Self::build(source, bos_token, eos_token, None)
    }

    /// Like [`ChatTemplate::new`] with `strftime_now` pinned to `now` (reproducible renders).
    pub fn with_fixed_time(
        source: &str,
        bos_token: &str,
        eos_token: &str,
        now: NaiveDateTime,
    ) -> Result<ChatTemplate, TemplateError> {
        Self::build(source, bos_token, eos_token, Some(now))
    }

    /// The template's Jinja source, as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn build(
        source: &str,
        bos_token: &str,
        eos_token: &str,
        now: Option<NaiveDateTime>,
    ) -> Result<ChatTemplate, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, "raise_exception")
                    .with_source(Raised(message)))
            },
        );
        env.add_function(
            "strftime_now",
            move |format: String| -> Result<Value, Error> {
                let now = now.unwrap_or_else(|| chrono::Local::now().naive_local());
                let mut out = String::new();
                std::fmt::write(&mut out, format_args!("{}", now.format(&format))).map_err(
                    |_| {
                        Error::new(
                            ErrorKind::InvalidOperation,
                            format!("strftime_now: bad format {format:?}"),
                        )
                    },
                )?;
                Ok(Value::from(out))
            },
        );
        env.add_template_owned(TEMPLATE_NAME, without_generation_tags(source))
            .map_err(|e| TemplateError::Syntax(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            source: source.to_owned(),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// Renders a conversation. `messages` are message objects (`role`, `content`, `tool_calls`...);
    /// `tools` are JSON schemas; `extra_context` (an object) adds variables such as
    /// `enable_thinking` or `reasoning_effort`.
    pub fn render(
        &self,
        messages: &[Json],
        tools: Option<&[Json]>,
        add_generation_prompt: bool,
        extra_context: Option<&Json>,
    ) -> Result<String, TemplateError> {
        let messages: Vec<Json> = messages
            .iter()
            .map(alias_reasoning)
            .collect::<Result<_, _>>()?;
        let mut context = serde_json::Map::new();
        if let Some(extra) = extra_context {
            let Json::Object(extra) = extra else {
                return Err(TemplateError::Input(
                    "extra context must be a JSON object".into(),
                ));
            };
            context.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        context.insert("messages".into(), Json::Array(messages));
        context.insert(
            "tools".into(),
            tools.map_or(Json::Null, |t| Json::Array(t.to_vec())),
        );
        context.insert("documents".into(), Json::Null);
        context.insert(
            "add_generation_prompt".into(),
            Json::Bool(add_generation_prompt),
        );
        context
            .entry("bos_token")
            .or_insert_with(|| Json::String(self.bos_token.clone()));
        context
            .entry("eos_token")
            .or_insert_with(|| Json::String(self.eos_token.clone()));
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TemplateError::Render(describe(&e)))?;
        template
            .render(Value::from_serialize(&context))
            .map_err(|e| {
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    if let Some(raised) = s.downcast_ref::<Raised>() {
                        return TemplateError::Raised(raised.0.clone());
                    }
                    source = s.source();
                }
                TemplateError::Render(describe(&e))
            })
    }
}

/// An error with its chain of causes and template location.
fn describe(e: &Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

/// transformers fills `reasoning_content` from older names for it and `thinking` for gpt-oss
/// templates: `{"thinking": r, **message, "reasoning_content": r}`.
fn alias_reasoning(message: &Json) -> Result<Json, TemplateError> {
    let Json::Object(fields) = message else {
        return Err(TemplateError::Input(format!(
            "a message must be a JSON object, got {message}"
        )));
    };
    let reasoning = ["reasoning_content", "thinking", "reasoning"]
        .iter()
        .find_map(|k| fields.get(*k).filter(|v| !v.is_null()))
        .cloned();
    let Some(reasoning) = reasoning else {
        return Ok(message.clone());
    };
    let mut out = serde_json::Map::new();
    out.insert("thinking".into(), reasoning.clone());
    for (k, v) in fields {
        out.insert(k.clone(), v.clone());
    }
    out.insert("reasoning_content".into(), reasoning);
    Ok(Json::Object(out))
}

/// `{% generation %}…{% endgeneration %}` becomes an always-true `if`, keeping the whitespace
/// control markers, so the body renders exactly as Jinja2 renders the call block.
fn without_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let left = if inner.starts_with('-') {
            "-"
        } else if inner.starts_with('+') {
            "+"
        } else {
            ""
        };
        let right = if inner.ends_with('-') {
            "-"
        } else if inner.ends_with('+') {
            "+"
        } else {
            ""
        };
        let word = inner.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        match word {
            "generation" => out.push_str(&format!("{{%{left} if true {right}%}}")),
            "endgeneration" => out.push_str(&format!("{{%{left} endif {right}%}}")),
            _ => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`,
/// which is Python's `json.dumps`.
fn tojson(value: &Value, positional: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let arg = |i: usize, name: &str| -> Result<Option<Value>, Error> {
        let kw: Option<Value> = kwargs.get(name)?;
        Ok(kw
            .or_else(|| positional.get(i).cloned())
            .filter(|v| !v.is_none() && !v.is_undefined()))
    };
    let ensure_ascii = arg(0, "ensure_ascii")?.is_some_and(|v| v.is_true());
    let indent = match arg(1, "indent")? {
        None => None,
        Some(v) if v.kind() == ValueKind::Number => {
            Some(" ".repeat(v.as_i64().unwrap_or(0).max(0) as usize))
        }
        Some(v) => Some(
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad_arg("indent must be a number or string"))?,
        ),
    };
    let (item_sep, key_sep) = match arg(2, "separators")? {
        Some(v) => {
            let parts: Vec<String> = v.try_iter()?.map(|p| p.to_string()).collect();
            match parts.as_slice() {
                [a, b] => (a.clone(), b.clone()),
                _ => return Err(bad_arg("separators must be a pair of strings")),
            }
        }
        None if indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    let sort_keys = arg(3, "sort_keys")?.is_some_and(|v| v.is_true());
    kwargs.assert_all_used()?;
    let style = JsonStyle {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    let mut out = String::new();
    style.write(value, 0, &mut out)?;
    Ok(Value::from(out))
}

fn bad_arg(msg: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("tojson: {msg}"))
}

struct JsonStyle {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl JsonStyle {
    fn newline(&self, level: usize, out: &mut String) {
        if let Some(indent) = &self.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(indent);
            }
        }
    }

    fn write(&self, value: &Value, level: usize, out: &mut String) -> Result<(), Error> {
        match value.kind() {
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => match value.as_i64() {
                Some(i) if !value.to_string().contains('.') => out.push_str(&i.to_string()),
                _ => out.push_str(&python_float(f64::try_from(value.clone())?)),
            },
            ValueKind::String => self.string(value.as_str().unwrap_or_default(), out),
            ValueKind::Map => {
                let mut keys: Vec<Value> = value.try_iter()?.collect();
                if keys.is_empty() {
                    out.push_str("{}");
                    return Ok(());
                }
                if self.sort_keys {
                    keys.sort_by_key(|k| k.to_string());
                }
                out.push('{');
                for (i, key) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(level + 1, out);
                    let name = match key.kind() {
                        ValueKind::String => key.as_str().unwrap_or_default().to_owned(),
                        ValueKind::None => "null".into(),
                        ValueKind::Bool => if key.is_true() { "true" } else { "false" }.into(),
                        _ => key.to_string(),
                    };
                    self.string(&name, out);
                    out.push_str(&self.key_sep);
                    self.write(&value.get_item(key)?, level + 1, out)?;
                }
                self.newline(level, out);
                out.push('}');
            }
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                if items.is_empty() {
                    out.push_str("[]");
                    return Ok(());
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(level + 1, out);
                    self.write(item, level + 1, out)?;
                }
                self.newline(level, out);
                out.push(']');
            }
            _ => return Err(bad_arg(&format!("cannot serialize {value:?}"))),
        }
        Ok(())
    }

    fn string(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{08}' => out.push_str("\\b"),
                '\u{0C}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && !c.is_ascii()) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation for exponents -4..16.
fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let sci = format!("{x:e}"); // shortest digits: "-1.2345e-7"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let frac = if digits.len() > 1 {
            format!(".{}", &digits[1..])
        } else {
            String::new()
        };
        format!(
            "{sign}{}{frac}e{}{:02}",
            &digits[..1],
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    }
}

/// The default chat template in GGUF metadata (`tokenizer.chat_template`).
pub fn template_from_gguf(gguf: &GgufFile) -> Option<String> {
    gguf.get_str("tokenizer.chat_template").map(str::to_owned)
}

/// The default chat template in a parsed `tokenizer_config.json`: a string, or a list of
/// `{"name", "template"}` of which the one named "default" is taken.
pub fn template_from_tokenizer_config(config: &Json) -> Option<String> {
    match config.get("chat_template")? {
        Json::String(s) => Some(s.clone()),
        Json::Array(items) => items
            .iter()
            .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
            .and_then(|t| t.get("template")?.as_str())
            .map(str::to_owned),
        _ => None,
    }
}

/// The chat template of a Hugging Face model directory: `chat_template.jinja` if present (newer
/// transformers save it there), else `tokenizer_config.json`'s.
pub fn template_from_hf_dir(dir: &Path) -> Result<Option<String>, TemplateError> {
    let read = |name: &str| match std::fs::read_to_string(dir.join(name)) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TemplateError::Input(format!(
            "{}: {e}",
            dir.join(name).display()
        ))),
    };
    if let Some(source) = read("chat_template.jinja")? {
        return Ok(Some(source));
    }
    let Some(config) = read("tokenizer_config.json")? else {
        return Ok(None);
    };
    let config: Json = serde_json::from_str(&config).map_err(|e| {
        TemplateError::Input(format!(
            "{}: {e}",
            dir.join("tokenizer_config.json").display()
        ))
    })?;
    Ok(template_from_tokenizer_config(&config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(source: &str, messages: Json) -> Result<String, TemplateError> {
        let t = ChatTemplate::new(source, "<s>", "</s>")?;
        t.render(messages.as_array().unwrap(), None, false, None)
    }

    #[test]
    fn python_floats() {
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(0.1), "0.1");
        assert_eq!(python_float(1e-7), "1e-07");
        assert_eq!(python_float(1e16), "1e+16");
        assert_eq!(python_float(123456.5), "123456.5");
        assert_eq!(python_float(-0.00012), "-0.00012");
    }

    #[test]
    fn tojson_is_json_dumps() {
        let src = "{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2) }}";
        let out = render(
            src,
            json!([{"b": "<ü>\n", "a": [1, 2.5, null, true], "e": {}}]),
        )
        .unwrap();
        assert_eq!(
            out,
            "{\"b\": \"<ü>\\n\", \"a\": [1, 2.5, null, true], \"e\": {}}|{\n  \"b\": \"<ü>\\n\",\n  \"a\": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n  \"e\": {}\n}"
        );
    }

    #[test]
    fn raise_exception_gives_its_message() {
        let err = render(
            "{{ raise_exception('only user and assistant') }}",
            json!([]),
        )
        .unwrap_err();
        assert!(
            matches!(err, TemplateError::Raised(ref m) if m == "only user and assistant"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(matches!(
            ChatTemplate::new("{% for %}", "", ""),
            Err(TemplateError::Syntax(_))
        ));
    }

    #[test]
    fn generation_tag_renders_its_body() {
        let out = render("{% for m in messages %}{% generation %}[{{ m.content }}]{% endgeneration %}{% endfor %}", json!([{"content": "x"}]));
        assert_eq!(out.unwrap(), "[x]");
    }

    #[test]
    fn python_methods_and_loop_controls() {
        let src = "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content.strip().upper() }}{% endfor %}";
        assert_eq!(
            render(src, json!([{"content": "  hi "}, {"content": "no"}])).unwrap(),
            "HI"
        );
    }

    #[test]
    fn pinned_strftime_now() {
        let now = chrono::NaiveDate::from_ymd_opt(2025, 3, 7)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let t =
            ChatTemplate::with_fixed_time("{{ strftime_now('%d %b %Y') }}", "", "", now).unwrap();
        assert_eq!(t.render(&[], None, false, None).unwrap(), "07 Mar 2025");
    }

    #[test]
    fn non_object_messages_are_rejected() {
        assert!(matches!(
            render("x", json!(["hi"])),
            Err(TemplateError::Input(_))
        ));
    }
}
