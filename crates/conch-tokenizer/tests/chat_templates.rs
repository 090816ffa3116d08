//! Chat templates must render byte-identically to transformers (fixtures written by
//! tools/gen_template_fixtures.py, with `strftime_now` pinned to the same instant).

use conch_tokenizer::{ChatTemplate, TemplateError};
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Case {
    template: String,
    case: String,
    bos_token: String,
    eos_token: String,
    messages: Vec<Value>,
    tools: Option<Vec<Value>>,
    add_generation_prompt: bool,
    extra_context: Option<Value>,
    expected: Option<String>,
    error: Option<String>,
}

#[test]
fn renders_match_transformers() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/templates");
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let now = chrono::NaiveDate::from_ymd_opt(2025, 3, 7)
        .unwrap()
        .and_hms_opt(14, 30, 0)
        .unwrap();
    let mut failures = Vec::new();
    for c in &cases {
        let source = std::fs::read_to_string(dir.join(&c.template)).unwrap();
        let template = ChatTemplate::with_fixed_time(&source, &c.bos_token, &c.eos_token, now)
            .unwrap_or_else(|e| panic!("{}: {e}", c.template));
        let got = template.render(
            &c.messages,
            c.tools.as_deref(),
            c.add_generation_prompt,
            c.extra_context.as_ref(),
        );
        let ok = match (&got, &c.expected, &c.error) {
            (Ok(text), Some(expected), _) => text == expected,
            (Err(TemplateError::Raised(msg)), None, Some(expected)) => msg == expected,
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{} / {}:\n--- transformers\n{}\n--- conch\n{}",
                c.template,
                c.case,
                c.expected
                    .as_deref()
                    .or(c.error.as_deref())
                    .unwrap_or_default(),
                match &got {
                    Ok(t) => t.clone(),
                    Err(e) => e.to_string(),
                }
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} renders differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn templates_are_found_in_gguf_and_tokenizer_config() {
    use conch_tokenizer::template::{
        template_from_gguf, template_from_hf_dir, template_from_tokenizer_config,
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let gguf = conch_formats::GgufFile::open(&root.join("tokenizer/vocab/smollm2.gguf")).unwrap();
    let expected = std::fs::read_to_string(root.join("templates/smollm2-instruct.jinja")).unwrap();
    assert_eq!(
        template_from_gguf(&gguf).as_deref(),
        Some(expected.as_str())
    );
    let gemma = conch_formats::GgufFile::open(&root.join("tokenizer/vocab/gemma3.gguf")).unwrap();
    assert_eq!(template_from_gguf(&gemma), None);

    let named = serde_json::json!({"chat_template": [
        {"name": "tool_use", "template": "T"},
        {"name": "default", "template": "D"},
    ]});
    assert_eq!(template_from_tokenizer_config(&named).as_deref(), Some("D"));
    assert_eq!(
        template_from_tokenizer_config(&serde_json::json!({"chat_template": "S"})).as_deref(),
        Some("S")
    );
    assert_eq!(template_from_tokenizer_config(&serde_json::json!({})), None);
    // the HF fixture directories carry no template
    assert_eq!(
        template_from_hf_dir(&root.join("tokenizer/hf/smollm2")).unwrap(),
        None
    );
}
