//! Tool-call parsing against each family's own chat template renders
//! (fixtures/structured/tool_calls.json, written by tools/gen_structured_fixtures.py), plus the
//! format variants and malformed replies the renders do not cover.

use conch_structured::{
    forced_tool_call, parse_tool_calls, ForcedChoice, JsonConstraint, ParsedReply, ToolCall,
    ToolCallStream, ToolFormat,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn template(name: &str) -> String {
    std::fs::read_to_string(root().join("fixtures/templates").join(name)).unwrap()
}

fn call(name: &str, arguments: Value) -> ToolCall {
    ToolCall {
        name: name.into(),
        arguments: arguments.to_string(),
    }
}

/// Calls compared by name and by arguments as JSON values.
fn same_calls(got: &[ToolCall], want: &[ToolCall]) -> bool {
    got.len() == want.len()
        && got.iter().zip(want).all(|(g, w)| {
            g.name == w.name
                && serde_json::from_str::<Value>(&g.arguments).ok()
                    == serde_json::from_str::<Value>(&w.arguments).ok()
        })
}

/// Streams `text` in pieces of `size` characters; returns the streamed content and the end.
fn stream(format: ToolFormat, text: &str, size: usize) -> (String, ParsedReply) {
    let mut s = ToolCallStream::new(format);
    let chars: Vec<char> = text.chars().collect();
    let mut streamed = String::new();
    for piece in chars.chunks(size) {
        streamed.push_str(&s.push(&piece.iter().collect::<String>()));
    }
    (streamed, s.finish())
}

/// Whole and streamed parsing agree, in pieces of any size.
fn check_streaming(format: ToolFormat, text: &str) {
    let whole = parse_tool_calls(format, text);
    for size in [1, 2, 3, 5, 8, 1000] {
        let (streamed, end) = stream(format, text, size);
        assert_eq!(
            format!("{streamed}{}", end.content),
            whole.content,
            "{format:?} size {size}: {text:?}"
        );
        assert_eq!(
            end.tool_calls, whole.tool_calls,
            "{format:?} size {size}: {text:?}"
        );
    }
}

#[test]
fn detects_each_family_from_its_template() {
    for (file, format) in [
        ("qwen2.5-instruct.jinja", ToolFormat::Hermes),
        ("qwen3.jinja", ToolFormat::Hermes),
        ("smollm2-instruct.jinja", ToolFormat::Hermes),
        ("gemma-3-it.jinja", ToolFormat::Hermes),
        ("llama-3.2-instruct.jinja", ToolFormat::Llama3),
        ("mistral-7b-instruct-v0.3.jinja", ToolFormat::Mistral),
        ("deepseek-v3.1.jinja", ToolFormat::DeepSeekV3),
        ("gpt-oss.jinja", ToolFormat::Harmony),
    ] {
        assert_eq!(ToolFormat::detect(&template(file)), format, "{file}");
    }
}

#[test]
fn parses_what_each_template_renders() {
    let cases: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/structured/tool_calls.json")).unwrap(),
    )
    .unwrap();
    assert!(cases.len() >= 20);
    for case in &cases {
        let name = format!("{} {}", case["template"], case["case"]);
        let format = ToolFormat::detect(&template(case["template"].as_str().unwrap()));
        let mut reply = case["reply"].as_str().unwrap();
        // The server stops at eos and does not pass it on.
        if let Some(at) = reply.find(case["eos_token"].as_str().unwrap()) {
            reply = &reply[..at];
        }
        // Qwen3 renders an empty thinking block; reasoning is split off before tool parsing.
        if let Some((_, after)) = reply.split_once("</think>") {
            reply = after;
        }
        let want: Vec<ToolCall> = case["tool_calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| call(c["name"].as_str().unwrap(), c["arguments"].clone()))
            .collect();
        let parsed = parse_tool_calls(format, reply);
        assert!(same_calls(&parsed.tool_calls, &want), "{name}: {parsed:?}");
        assert_eq!(parsed.content, case["content"].as_str().unwrap(), "{name}");
        check_streaming(format, reply);
        // A reply cut anywhere (generation stopped early) parses and streams consistently.
        for (cut, _) in reply.char_indices() {
            check_streaming(format, &reply[..cut]);
        }
    }
}

#[test]
fn format_variants_beyond_the_renders() {
    let weather = || call("get_weather", json!({"city": "Paris"}));
    let cases: Vec<(ToolFormat, &str, &str, Vec<ToolCall>)> = vec![
        // Hermes: no closing tag before eos; text around calls.
        (ToolFormat::Hermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}", "", vec![weather()]),
        (
            ToolFormat::Hermes,
            "Sure.\n<tool_call>{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}</tool_call>\nDone.",
            "Sure.\n\nDone.",
            vec![weather()],
        ),
        // Llama 3.1 with <|python_tag|>, several calls joined by ';'.
        (
            ToolFormat::Llama3,
            "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}; {\"name\": \"get_time\", \"parameters\": {\"tz\": \"UTC\"}}",
            "",
            vec![weather(), call("get_time", json!({"tz": "UTC"}))],
        ),
        (ToolFormat::Llama3, "The answer is {\"name\": 1}.", "The answer is {\"name\": 1}.", vec![]),
        (ToolFormat::Llama3, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}} and more", "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}} and more", vec![]),
        // Mistral's newer format, with and without a call id; two calls.
        (ToolFormat::Mistral, "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}", "", vec![weather()]),
        (
            ToolFormat::Mistral,
            "[TOOL_CALLS]get_weather[CALL_ID]abc123XYZ[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]get_time[ARGS]{\"tz\": \"UTC\"}",
            "",
            vec![weather(), call("get_time", json!({"tz": "UTC"}))],
        ),
        // DeepSeek V3's older format with a fenced JSON block.
        (
            ToolFormat::DeepSeekV3,
            "Checking.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            "Checking.",
            vec![weather()],
        ),
        // Harmony as the model generates it: analysis, then a commentary call.
        (
            ToolFormat::Harmony,
            "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Paris\"}<|call|>",
            "",
            vec![weather()],
        ),
        (
            ToolFormat::Harmony,
            "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>It is sunny.<|return|>",
            "It is sunny.",
            vec![],
        ),
        (ToolFormat::Harmony, "plain text without channels", "plain text without channels", vec![]),
    ];
    for (format, text, content, calls) in cases {
        let parsed = parse_tool_calls(format, text);
        assert!(
            same_calls(&parsed.tool_calls, &calls),
            "{format:?} {text:?}: {parsed:?}"
        );
        assert_eq!(parsed.content, content, "{format:?} {text:?}");
        check_streaming(format, text);
    }
    let harmony = parse_tool_calls(
        ToolFormat::Harmony,
        "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>Hi<|return|>",
    );
    assert_eq!(harmony.reasoning, "Easy.");
}

#[test]
fn malformed_calls_stay_in_content() {
    for (format, text) in [
        (ToolFormat::Hermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": }\n</tool_call>"),
        (ToolFormat::Hermes, "<tool_call>\n{\"arguments\": {}}\n</tool_call>"),
        (ToolFormat::Mistral, "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {"),
        (ToolFormat::Mistral, "[TOOL_CALLS]get weather[ARGS]{}"),
        (ToolFormat::DeepSeekV3, "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{oops<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
        (ToolFormat::Harmony, "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\"<|call|>"),
    ] {
        let parsed = parse_tool_calls(format, text);
        assert!(parsed.tool_calls.is_empty(), "{format:?} {text:?}: {parsed:?}");
        assert_eq!(parsed.content, text.trim(), "{format:?}");
        check_streaming(format, text);
    }
}

#[test]
fn streaming_holds_back_possible_markers_only() {
    let mut s = ToolCallStream::new(ToolFormat::Hermes);
    assert_eq!(s.push("Hello "), "Hello");
    assert_eq!(s.push("there <tool"), " there");
    assert_eq!(s.push("_call>\n{\"name\": \"f\", "), "");
    assert_eq!(s.push("\"arguments\": {}}\n</tool_call>"), "");
    let end = s.finish();
    assert_eq!(end.content, "");
    assert_eq!(end.tool_calls, vec![call("f", json!({}))]);
    // A '<' that does not become a marker is released.
    let mut s = ToolCallStream::new(ToolFormat::Hermes);
    assert_eq!(s.push("a <"), "a");
    assert_eq!(s.push("b"), " <b");
    // Llama: a reply that starts like JSON is held until it is known.
    let mut s = ToolCallStream::new(ToolFormat::Llama3);
    assert_eq!(s.push("{\"name\""), "");
    assert_eq!(s.finish().content, "{\"name\"");
    // Harmony: only the final channel streams.
    let mut s = ToolCallStream::new(ToolFormat::Harmony);
    assert_eq!(s.push("<|channel|>analysis<|message|>hmm"), "");
    assert_eq!(
        s.push("<|end|><|start|>assistant<|channel|>final<|message|>Hi the"),
        "Hi the"
    );
    assert_eq!(s.push("re<|ret"), "re");
    assert_eq!(s.push("urn|>"), "");
    assert_eq!(s.finish().content, "");
}

fn tools() -> Vec<Value> {
    vec![
        json!({"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"], "additionalProperties": false}}}),
        json!({"type": "function", "function": {"name": "lookup", "parameters": {
            "type": "object",
            "properties": {"item": {"$ref": "#/$defs/item"}},
            "required": ["item"],
            "$defs": {"item": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}}}}}),
    ]
}

/// Feeds `json_text` through the forced schema's constraint; it must be accepted and complete.
fn constrained(schema: &Value, json_text: &str) {
    let mut c = JsonConstraint::new(Some(schema)).unwrap();
    c.advance(json_text.as_bytes())
        .unwrap_or_else(|e| panic!("{schema}: {json_text}: {e}"));
    assert!(c.is_complete(), "{json_text}");
}

#[test]
fn forced_calls_round_trip_through_each_format() {
    let formats = [
        ToolFormat::Hermes,
        ToolFormat::Llama3,
        ToolFormat::Mistral,
        ToolFormat::DeepSeekV3,
        ToolFormat::Harmony,
    ];
    for format in formats {
        // A named call: the JSON the constraint accepts becomes that call, and the family's own
        // parser reads the same call from prefix + JSON + suffix.
        let forced =
            forced_tool_call(format, &tools(), &ForcedChoice::Named("lookup".into())).unwrap();
        let args = json!({"item": {"id": 7}});
        let json_text = match format {
            ToolFormat::Hermes => json!({"name": "lookup", "arguments": args}).to_string(),
            ToolFormat::Llama3 => json!({"name": "lookup", "parameters": args}).to_string(),
            ToolFormat::Mistral => json!([{"name": "lookup", "arguments": args}]).to_string(),
            ToolFormat::DeepSeekV3 | ToolFormat::Harmony => args.to_string(),
        };
        constrained(&forced.schema, &json_text);
        let want = call("lookup", args.clone());
        assert!(
            same_calls(
                &[forced.tool_call(&json_text).unwrap()],
                std::slice::from_ref(&want)
            ),
            "{format:?}"
        );
        let reply = format!("{}{json_text}{}", forced.prefix, forced.suffix);
        let parsed = parse_tool_calls(format, &reply);
        assert!(
            same_calls(&parsed.tool_calls, &[want]),
            "{format:?}: {reply:?} {parsed:?}"
        );
        // The other tool's name is refused.
        let wrong = json_text.replace("lookup", "get_weather");
        if wrong != json_text {
            let mut c = JsonConstraint::new(Some(&forced.schema)).unwrap();
            assert!(c.advance(wrong.as_bytes()).is_err(), "{format:?}");
        }

        // Any tool: both names are possible, each with its own arguments.
        let any = forced_tool_call(format, &tools(), &ForcedChoice::Any).unwrap();
        let key = if format == ToolFormat::Llama3 {
            "parameters"
        } else {
            "arguments"
        };
        for (name, args) in [
            ("get_weather", json!({"city": "Oslo", "unit": "c"})),
            ("lookup", json!({"item": {"id": 1}})),
        ] {
            let mut object = serde_json::Map::new();
            object.insert("name".into(), json!(name));
            object.insert(key.into(), args.clone());
            let text = if format == ToolFormat::Mistral {
                Value::Array(vec![Value::Object(object)]).to_string()
            } else {
                Value::Object(object).to_string()
            };
            constrained(&any.schema, &text);
            assert!(
                same_calls(&[any.tool_call(&text).unwrap()], &[call(name, args)]),
                "{format:?}"
            );
        }
        let mut c = JsonConstraint::new(Some(&any.schema)).unwrap();
        let mismatched = format!("{{\"name\":\"get_weather\",\"{key}\":{{\"item\"");
        let mismatched = if format == ToolFormat::Mistral {
            format!("[{mismatched}")
        } else {
            mismatched
        };
        assert!(
            c.advance(mismatched.as_bytes()).is_err(),
            "{format:?}: arguments follow the named tool"
        );
    }
    assert!(forced_tool_call(
        ToolFormat::Hermes,
        &tools(),
        &ForcedChoice::Named("nope".into())
    )
    .is_err());
    assert!(forced_tool_call(ToolFormat::Hermes, &[], &ForcedChoice::Any).is_err());
    let bad = vec![
        json!({"type": "function", "function": {"name": "f", "parameters": {"type": "string", "pattern": "x"}}}),
    ];
    let e = forced_tool_call(ToolFormat::Hermes, &bad, &ForcedChoice::Any).unwrap_err();
    assert!(e.message.contains("pattern"), "{e}");
}
