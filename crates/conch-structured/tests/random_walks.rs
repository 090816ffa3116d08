//! Random walks over real vocabularies: sample only allowed tokens until the value is complete,
//! then check the text with serde_json and an independent JSON Schema validator (`jsonschema`).

use conch_formats::GgufFile;
use conch_structured::{forced_tool_call, ForcedChoice, JsonConstraint, TokenVocab, ToolFormat};
use conch_tokenizer::Tokenizer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load_vocab(path: &Path) -> (TokenVocab, Vec<Vec<u8>>, Vec<u32>) {
    let gguf = GgufFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
    let tokens: Vec<Vec<u8>> = (0..tokenizer.vocab_size() as u32)
        .map(|id| {
            if tokenizer.is_special(id) {
                Vec::new()
            } else {
                tokenizer.token_bytes(id).unwrap_or_default()
            }
        })
        .collect();
    let eos = tokenizer.eos_ids();
    (TokenVocab::from_tokenizer(&tokenizer), tokens, eos)
}

fn schemas() -> Vec<(&'static str, Option<Value>)> {
    vec![
        ("json_object", None),
        (
            "person",
            Some(json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 12},
                    "age": {"type": "integer", "minimum": 0, "maximum": 150},
                    "email": {"type": ["string", "null"], "format": "email"},
                    "tags": {"type": "array", "items": {"enum": ["admin", "user", "guest"]}, "minItems": 1, "maxItems": 3},
                    "address": {"$ref": "#/$defs/address"}
                },
                "required": ["name", "age", "tags"],
                "additionalProperties": false,
                "$defs": {"address": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 20}, "zip": {"type": "string", "minLength": 5, "maxLength": 5}},
                    "required": ["city", "zip"],
                    "additionalProperties": false
                }}
            })),
        ),
        (
            "shapes",
            Some(json!({
                "type": "object",
                "properties": {"shapes": {"type": "array", "maxItems": 4, "items": {"oneOf": [
                    {"type": "object", "properties": {"kind": {"const": "circle"}, "radius": {"type": "number"}}, "required": ["kind", "radius"], "additionalProperties": false},
                    {"type": "object", "properties": {"kind": {"const": "rect"}, "w": {"type": "integer", "minimum": 1}, "h": {"type": "integer", "exclusiveMaximum": -2}}, "required": ["kind", "w", "h"], "additionalProperties": false}
                ]}}},
                "required": ["shapes"],
                "additionalProperties": false
            })),
        ),
        (
            "tree",
            Some(json!({
                "$ref": "#/definitions/node",
                "definitions": {"node": {
                    "type": "object",
                    "properties": {"label": {"type": "string", "maxLength": 6}, "children": {"type": "array", "maxItems": 2, "items": {"$ref": "#/definitions/node"}}},
                    "required": ["label"],
                    "additionalProperties": false
                }}
            })),
        ),
        (
            "tuple_and_extras",
            Some(json!({
                "type": "object",
                "properties": {
                    "point": {"type": "array", "prefixItems": [{"type": "number"}, {"type": "number"}, {"type": "boolean"}], "items": false, "minItems": 2},
                    "mixed": {"enum": [1, "two", null, [3], {"four": 4}]},
                    "note": {"type": "string"}
                },
                "required": ["point", "mixed"],
                "additionalProperties": {"type": "integer", "minimum": -20, "maximum": 20}
            })),
        ),
        (
            "unicode_enum",
            Some(json!({
                "type": "object",
                "properties": {"mood": {"enum": ["😀 happy", "très bien", "中文", "a\"quote", "back\\slash", "tab\there"]}, "free": {"type": "string", "maxLength": 3}},
                "required": ["mood", "free"],
                "additionalProperties": false
            })),
        ),
        ("forced_tool_call", Some(forced_call_schema())),
    ]
}

/// What `tool_choice: "required"` forces over two tools, one with its own `$defs`.
fn forced_call_schema() -> Value {
    let tools = [
        json!({"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"], "additionalProperties": false}}}),
        json!({"type": "function", "function": {"name": "lookup", "parameters": {
            "type": "object", "properties": {"ids": {"type": "array", "items": {"$ref": "#/$defs/id"}, "maxItems": 3}},
            "required": ["ids"], "additionalProperties": false,
            "$defs": {"id": {"type": "integer", "minimum": 1, "maximum": 999}}}}}),
    ];
    forced_tool_call(ToolFormat::Hermes, &tools, &ForcedChoice::Any)
        .unwrap()
        .schema
}

/// Samples among allowed tokens until complete; after `patience` steps prefers short tokens
/// that close something, so every walk ends.
fn walk(
    constraint: &mut JsonConstraint,
    vocab: &TokenVocab,
    tokens: &[Vec<u8>],
    eos: &[u32],
    rng: &mut StdRng,
) -> Vec<u8> {
    let mut mask = vec![false; vocab.len()];
    let mut text = Vec::new();
    for step in 0..4000 {
        let n = constraint.allowed(vocab, &mut mask).unwrap();
        assert!(n > 0, "stuck after {:?}", String::from_utf8_lossy(&text));
        let allowed: Vec<u32> = (0..mask.len() as u32)
            .filter(|&id| mask[id as usize])
            .collect();
        assert_eq!(allowed.len(), n);
        let eos_allowed = allowed.iter().any(|id| eos.contains(id));
        assert_eq!(eos_allowed, constraint.is_complete());
        let finishing = step > 150;
        let pick = if eos_allowed && (finishing || rng.random_bool(0.5)) {
            *allowed.iter().find(|id| eos.contains(id)).unwrap()
        } else if finishing {
            let closes = |id: &u32| tokens[*id as usize].iter().any(|b| b"\"}]".contains(b));
            let pool: Vec<u32> = allowed
                .iter()
                .copied()
                .filter(|id| !eos.contains(id))
                .collect();
            let closing: Vec<u32> = pool.iter().copied().filter(closes).collect();
            let pool = if closing.is_empty() { pool } else { closing };
            let shortest = pool
                .iter()
                .map(|&id| tokens[id as usize].len())
                .min()
                .unwrap();
            let short: Vec<u32> = pool
                .into_iter()
                .filter(|&id| tokens[id as usize].len() == shortest)
                .collect();
            short[rng.random_range(0..short.len())]
        } else {
            // Random logits: argmax of uniform noise over the allowed tokens.
            allowed[rng.random_range(0..allowed.len())]
        };
        if eos.contains(&pick) {
            return text;
        }
        constraint.advance(&tokens[pick as usize]).unwrap();
        text.extend_from_slice(&tokens[pick as usize]);
    }
    panic!(
        "no end after 4000 tokens: {:?}",
        String::from_utf8_lossy(&text)
    );
}

fn check_vocab(path: &Path, seeds: u64) {
    let (vocab, tokens, eos) = load_vocab(path);
    assert!(!eos.is_empty());
    for (name, schema) in schemas() {
        let validator = schema
            .as_ref()
            .map(|s| jsonschema::validator_for(s).unwrap());
        for seed in 0..seeds {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut constraint = JsonConstraint::new(schema.as_ref()).unwrap();
            let text = walk(&mut constraint, &vocab, &tokens, &eos, &mut rng);
            let text = String::from_utf8(text).expect("output is UTF-8");
            let value: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} {name} seed {seed}: {e}: {text}", path.display()));
            match &validator {
                Some(v) => {
                    let errors: Vec<String> =
                        v.iter_errors(&value).map(|e| e.to_string()).collect();
                    assert!(errors.is_empty(), "{name} seed {seed}: {text}: {errors:?}");
                }
                None => assert!(value.is_object(), "{text}"),
            }
        }
    }
}

#[test]
fn gpt2_byte_level_bpe() {
    check_vocab(&root().join("fixtures/tokenizer/vocab/gpt-2.gguf"), 6);
}

#[test]
fn qwen2_large_vocab() {
    check_vocab(&root().join("fixtures/tokenizer/vocab/qwen2.gguf"), 3);
}

#[test]
fn sentencepiece_with_byte_tokens() {
    check_vocab(&root().join("fixtures/tokenizer/vocab/llama-spm.gguf"), 4);
}

#[test]
fn smollm2_real_model_when_present() {
    let path = PathBuf::from("/root/.cache/conch/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.exists() {
        check_vocab(&path, 3);
    }
}
