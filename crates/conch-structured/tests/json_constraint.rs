//! The decoder's grammar, byte by byte, against serde_json and JSON Schema semantics.

use conch_structured::{ConstraintError, JsonConstraint, TokenVocab};
use serde_json::{json, Value};

/// Feeds `text` one byte at a time; `Ok(complete)` if every byte was accepted.
fn feed(c: &mut JsonConstraint, text: &str) -> Result<bool, ConstraintError> {
    for b in text.bytes() {
        c.advance(&[b])?;
    }
    Ok(c.is_complete())
}

/// Whether `text` is a complete value the decoder would produce for `schema`.
fn accepts(schema: Option<Value>, text: &str) -> bool {
    let mut c = JsonConstraint::new(schema.as_ref()).expect("schema compiles");
    feed(&mut c, text).unwrap_or(false)
}

/// Whether `text` is a prefix of something the decoder could produce.
fn accepts_prefix(schema: Option<Value>, text: &str) -> bool {
    let mut c = JsonConstraint::new(schema.as_ref()).expect("schema compiles");
    feed(&mut c, text).is_ok()
}

#[test]
fn json_object_mode_accepts_objects_only() {
    for ok in [
        "{}",
        r#"{"a": 1}"#,
        "{\n  \"a\": [1, 2.5, -3e10, true, false, null, {\"b\": \"c\"}],\n  \"d\": {}\n}",
        r#"{"":""}"#,
        r#"{"a":{"a":{"a":[[[]]]}}}"#,
    ] {
        assert!(accepts(None, ok), "{ok}");
        serde_json::from_str::<Value>(ok).unwrap();
    }
    for bad in [
        "[]",
        "1",
        "\"s\"",
        "{,}",
        r#"{"a" 1}"#,
        r#"{"a":1,}"#,
        "{} ",
        r#"{'a':1}"#,
        "{\"a\":01}",
    ] {
        assert!(!accepts(None, bad), "{bad}");
    }
    // Not yet complete, but a valid prefix.
    assert!(accepts_prefix(None, r#"{"a": [1, {"#));
    assert!(!accepts(None, r#"{"a": [1, {"#));
}

#[test]
fn string_escapes_and_unicode() {
    let s = Some(json!({"type": "string"}));
    for ok in [
        r#""plain""#,
        r#""\"\\\/\b\f\n\r\t""#,
        r#""\u00e9\u4E2D""#,
        r#""\ud83d\ude00""#,
        "\"héllo 中文 😀\"",
        "\"\u{7f}\"",
    ] {
        assert!(accepts(s.clone(), ok), "{ok}");
        serde_json::from_str::<String>(ok).unwrap();
    }
    for bad in [
        "\"a\nb\"",          // raw control character
        "\"\t\"",            // raw tab
        r#""\x41""#,         // not a JSON escape
        r#""\u12G4""#,       // not hex
        r#""\ude00""#,       // lone low surrogate
        r#""\ud83d""#,       // high surrogate without its low half
        r#""\ud83d\u0041""#, // high surrogate followed by a non-surrogate
    ] {
        assert!(!accepts(s.clone(), bad), "{bad}");
        assert!(
            serde_json::from_str::<String>(bad).is_err(),
            "serde_json agrees: {bad}"
        );
    }
    // Invalid UTF-8 inside a string: overlong, surrogate, out of range, stray continuation.
    for bytes in [
        &[0xC0u8, 0xAF][..],
        &[0xED, 0xA0, 0x80],
        &[0xF4, 0x90, 0x80, 0x80],
        &[0x80],
    ] {
        let mut c = JsonConstraint::new(s.as_ref()).unwrap();
        c.advance(b"\"").unwrap();
        let fed = bytes.iter().try_for_each(|&b| c.advance(&[b]));
        assert!(fed.is_err(), "{bytes:?}");
    }
    // A character split across tokens.
    let mut c = JsonConstraint::new(s.as_ref()).unwrap();
    let emoji = "😀".as_bytes();
    c.advance(&[b'"', emoji[0]]).unwrap();
    c.advance(&emoji[1..3]).unwrap();
    assert!(c.advance(b"\"").is_err(), "the character is not finished");
    c.advance(&emoji[3..]).unwrap();
    c.advance(b"\"").unwrap();
    assert!(c.is_complete());
}

#[test]
fn string_lengths_count_characters() {
    let s = Some(json!({"type": "string", "minLength": 2, "maxLength": 3}));
    assert!(!accepts(s.clone(), r#""a""#));
    assert!(accepts(s.clone(), r#""ab""#));
    assert!(accepts(s.clone(), "\"é中😀\""));
    assert!(accepts(s.clone(), r#""\n\u00e9\ud83d\ude00""#));
    assert!(!accepts_prefix(s.clone(), r#""abcd"#));
    assert!(!accepts_prefix(s, r#""ab\n\"#));
}

#[test]
fn numbers_follow_the_json_grammar() {
    let n = Some(json!({"type": "number"}));
    for ok in [
        "0",
        "-0",
        "1",
        "-12.5",
        "3e7",
        "3E+07",
        "0.001e-5",
        "123456789",
    ] {
        assert!(accepts(n.clone(), ok), "{ok}");
    }
    for bad in [
        "01", "+1", "1.", ".5", "1e", "1e+", "--1", "0x10", "1.5.2", "NaN", "Infinity",
    ] {
        assert!(!accepts(n.clone(), bad), "{bad}");
    }
    // A top-level number is complete at any digit, and may still grow.
    let mut c = JsonConstraint::new(n.as_ref()).unwrap();
    feed(&mut c, "12").unwrap();
    assert!(c.is_complete());
    c.advance(b"3").unwrap();
    // Digits are bounded, so a model cannot write a number forever.
    assert!(!accepts_prefix(n, &"9".repeat(40)));
}

#[test]
fn integers_respect_bounds() {
    let i = |schema: Value| Some(schema);
    let small = json!({"type": "integer", "minimum": -5, "maximum": 120});
    for v in -5..=120 {
        assert!(accepts(i(small.clone()), &v.to_string()), "{v}");
    }
    for bad in ["-6", "121", "1000", "-10", "1.5", "1e2", "-0"] {
        assert!(!accepts(i(small.clone()), bad), "{bad}");
    }
    // Prefixes that cannot reach the range are refused early.
    assert!(!accepts_prefix(i(small.clone()), "130"));
    assert!(accepts_prefix(i(small.clone()), "12"));
    assert!(!accepts_prefix(i(small.clone()), "-6"));
    let exclusive = json!({"type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 13});
    assert!(!accepts(i(exclusive.clone()), "10"));
    assert!(accepts(i(exclusive.clone()), "11"));
    assert!(accepts(i(exclusive.clone()), "12"));
    assert!(!accepts(i(exclusive), "13"));
    let negative = json!({"type": "integer", "maximum": -3});
    assert!(accepts(i(negative.clone()), "-3"));
    assert!(accepts(i(negative.clone()), "-1000000"));
    assert!(!accepts_prefix(i(negative.clone()), "0"));
    assert!(!accepts(i(negative), "-2"));
}

#[test]
fn objects_follow_schema_order_and_required() {
    let schema = json!({
        "type": "object",
        "properties": {
            "a": {"type": "integer"},
            "b": {"type": "string"},
            "c": {"type": "boolean"}
        },
        "required": ["b"],
        "additionalProperties": false
    });
    let s = || Some(schema.clone());
    assert!(accepts(s(), r#"{"b":"x"}"#));
    assert!(accepts(s(), r#"{"a":1,"b":"x","c":true}"#));
    assert!(accepts(s(), r#"{ "a" : 1 , "b" : "x" }"#));
    assert!(!accepts(s(), r#"{}"#), "b is required");
    assert!(!accepts(s(), r#"{"a":1}"#), "b is required");
    assert!(!accepts_prefix(s(), r#"{"b":"x","a""#), "schema order");
    assert!(!accepts_prefix(s(), r#"{"d""#), "no additional properties");
    assert!(!accepts_prefix(s(), r#"{"a":1,"a""#), "no repeated keys");
    assert!(!accepts_prefix(s(), r#"{"a":"1""#), "a is an integer");
    assert!(
        !accepts_prefix(s(), r#"{"b":"x","c":true,"#),
        "nothing may follow"
    );
}

#[test]
fn additional_properties_follow_declared_ones() {
    let schema = json!({
        "type": "object",
        "properties": {"id": {"type": "integer"}},
        "required": ["id"],
        "additionalProperties": {"type": "number"}
    });
    let s = || Some(schema.clone());
    assert!(accepts(s(), r#"{"id":1,"x":2.5,"y":3}"#));
    assert!(!accepts_prefix(s(), r#"{"x""#), "required id comes first");
    assert!(
        !accepts_prefix(s(), r#"{"id":1,"x":"s""#),
        "additional values are numbers"
    );
    assert!(
        !accepts(s(), r#"{"id":1,"id":2}"#),
        "a declared key is not an additional one"
    );
    assert!(
        !accepts_prefix(s(), r#"{"id":1,"\u0069"#),
        "no escapes in additional keys"
    );
}

#[test]
fn arrays_enforce_items_and_bounds() {
    let schema =
        json!({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3});
    let s = || Some(schema.clone());
    assert!(!accepts(s(), "[]"));
    assert!(accepts(s(), "[1]"));
    assert!(accepts(s(), "[1, 2, 3]"));
    assert!(!accepts_prefix(s(), "[1,2,3,"));
    assert!(!accepts(s(), "[1,]"));
    let tuple = json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}], "items": false});
    assert!(accepts(Some(tuple.clone()), r#"["a",true]"#));
    assert!(accepts(Some(tuple.clone()), r#"["a"]"#));
    assert!(!accepts_prefix(Some(tuple.clone()), r#"[true"#));
    assert!(!accepts_prefix(Some(tuple), r#"["a",true,"#));
}

#[test]
fn enums_consts_any_of_and_type_arrays() {
    let e = json!({"enum": ["red", "green", 10, 1, null, {"k": [1, 2]}]});
    for ok in [
        r#""red""#,
        r#""green""#,
        "10",
        "1",
        "null",
        r#"{"k":[1,2]}"#,
    ] {
        assert!(accepts(Some(e.clone()), ok), "{ok}");
    }
    for bad in [r#""blue""#, "2", r#"{"k": [1, 2]}"#, r#""re""#] {
        assert!(!accepts(Some(e.clone()), bad), "{bad}");
    }
    let c = json!({"const": "only"});
    assert!(accepts(Some(c.clone()), r#""only""#));
    assert!(!accepts(Some(c), r#""other""#));
    let any_of = json!({"anyOf": [
        {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}}, "required": ["kind", "r"], "additionalProperties": false},
        {"type": "object", "properties": {"kind": {"const": "square"}, "side": {"type": "integer"}}, "required": ["kind", "side"], "additionalProperties": false}
    ]});
    assert!(accepts(
        Some(any_of.clone()),
        r#"{"kind":"circle","r":1.5}"#
    ));
    assert!(accepts(
        Some(any_of.clone()),
        r#"{"kind":"square","side":2}"#
    ));
    assert!(!accepts_prefix(Some(any_of), r#"{"kind":"circle","side""#));
    let nullable = json!({"type": ["string", "null"], "maxLength": 2});
    assert!(accepts(Some(nullable.clone()), "null"));
    assert!(accepts(Some(nullable.clone()), r#""ab""#));
    assert!(!accepts(Some(nullable), r#""abc""#));
    let boolean = json!({"type": "boolean"});
    assert!(accepts(Some(boolean.clone()), "true"));
    assert!(!accepts(Some(boolean), "1"));
}

#[test]
fn recursive_refs() {
    let tree = json!({
        "$ref": "#/$defs/node",
        "$defs": {"node": {
            "type": "object",
            "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            "required": ["v", "kids"],
            "additionalProperties": false
        }}
    });
    assert!(accepts(
        Some(tree.clone()),
        r#"{"v":1,"kids":[{"v":2,"kids":[]},{"v":3,"kids":[{"v":4,"kids":[]}]}]}"#
    ));
    assert!(!accepts_prefix(Some(tree), r#"{"v":1,"kids":[{"v":2}"#));
    let legacy = json!({"definitions": {"x": {"type": "integer"}}, "type": "array", "items": {"$ref": "#/definitions/x"}});
    assert!(accepts(Some(legacy.clone()), "[1,2]"));
    assert!(!accepts(Some(legacy), r#"["a"]"#));
}

#[test]
fn whitespace_is_bounded_and_not_trailing() {
    let ws = " ".repeat(conch_structured::MAX_WHITESPACE_RUN as usize);
    assert!(accepts(None, &format!("{{{ws}}}")));
    assert!(!accepts_prefix(None, &format!("{{{ws} ")));
    assert!(!accepts_prefix(None, "{} "));
}

#[test]
fn schema_errors_name_keyword_and_place() {
    let cases = [
        (json!({"type": "string", "pattern": "^a$"}), "pattern", "#"),
        (
            json!({"type": "object", "properties": {"x": {"type": "string", "pattern": "a"}}}),
            "pattern",
            "#/properties/x",
        ),
        (
            json!({"type": "object", "patternProperties": {}}),
            "patternProperties",
            "#",
        ),
        (json!({"not": {"type": "string"}}), "not", "#"),
        (json!({"type": "number", "minimum": 0}), "minimum", "#"),
        (
            json!({"type": "array", "uniqueItems": true}),
            "uniqueItems",
            "#",
        ),
        (json!({"type": "strnig"}), "strnig", "#"),
        (json!({"$ref": "#/$defs/missing"}), "does not resolve", "#"),
        (
            json!({"$ref": "http://example.com/s.json"}),
            "not supported",
            "#",
        ),
        (
            json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/n"}}, "required": ["a"], "$defs": {"n": {"type": "object", "properties": {"a": {"$ref": "#/$defs/n"}}, "required": ["a"]}}}),
            "no instance",
            "#",
        ),
        (
            json!({"type": "integer", "minimum": 5, "maximum": 4}),
            "no value",
            "#",
        ),
        (json!({"enum": []}), "enum", "#"),
        (
            json!({"type": "object", "required": ["x"], "additionalProperties": false}),
            "\"x\"",
            "#",
        ),
        (json!(false), "false", "#"),
    ];
    for (schema, needle, path) in cases {
        let e = JsonConstraint::new(Some(&schema)).expect_err(&schema.to_string());
        assert!(e.message.contains(needle), "{schema}: {e}");
        assert_eq!(e.path, path, "{schema}: {e}");
    }
    // `format` is an annotation (not enforced); descriptions and titles are ignored.
    let ok = json!({"type": "string", "format": "date-time", "description": "d", "title": "t"});
    assert!(JsonConstraint::new(Some(&ok)).is_ok());
}

/// A vocabulary of every single byte plus some multi-byte tokens.
fn byte_vocab() -> (TokenVocab, Vec<Vec<u8>>) {
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    for t in [
        "{\"", "\":", "\",", "\"}", "true", "false", "null", "12", "\n  ", "  ", "é", "name",
        "\\u00", "😀", "\"a\"",
    ] {
        tokens.push(t.as_bytes().to_vec());
    }
    tokens.push(vec![0xF0, 0x9F]); // half an emoji
    tokens.push(Vec::new()); // a special token: never allowed
    tokens.push(b"<eos>".to_vec());
    let eos = tokens.len() as u32 - 1;
    (TokenVocab::new(tokens.clone(), &[eos]), tokens)
}

#[test]
fn mask_agrees_with_advance() {
    let (vocab, tokens) = byte_vocab();
    let eos = tokens.len() - 1;
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 4}, "n": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}}},
        "required": ["name"],
    });
    let mut c = JsonConstraint::new(Some(&schema)).unwrap();
    let text = "{\"name\": \"é😀\\u00e9\", \"n\": 12, \"tags\": [\"a\"], \"x\": null}";
    let mut mask = vec![false; vocab.len()];
    for step in text.bytes().map(|b| vec![b]).chain([Vec::new()]) {
        let count = c.allowed(&vocab, &mut mask).unwrap();
        assert_eq!(count, mask.iter().filter(|&&m| m).count());
        for (id, bytes) in tokens.iter().enumerate() {
            let expected = if id == eos {
                c.is_complete()
            } else {
                !bytes.is_empty() && c.clone().advance(bytes).is_ok()
            };
            assert_eq!(
                mask[id],
                expected,
                "token {:?} after prefix",
                String::from_utf8_lossy(bytes)
            );
        }
        if step.is_empty() {
            break;
        }
        c.advance(&step).unwrap();
    }
    assert!(c.is_complete());
    assert!(mask[eos]);
    assert_eq!(
        mask.iter().filter(|&&m| m).count(),
        1,
        "only eos once complete"
    );
}

#[test]
fn mask_length_is_checked() {
    let (vocab, _) = byte_vocab();
    let c = JsonConstraint::new(None).unwrap();
    let mut short = vec![false; 3];
    assert!(matches!(
        c.allowed(&vocab, &mut short),
        Err(ConstraintError::MaskLength { .. })
    ));
}

#[test]
fn rejected_token_leaves_state_unchanged() {
    let mut c = JsonConstraint::new(None).unwrap();
    c.advance(b"{\"a\"").unwrap();
    assert!(c.advance(b": 1 ]").is_err());
    c.advance(b": 1}").unwrap();
    assert!(c.is_complete());
}
