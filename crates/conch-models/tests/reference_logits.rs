//! Logits of the tiny random models in fixtures/models/ against Hugging Face transformers'
//! (written by tools/gen_model_fixtures.py), from the HF directory and from llama.cpp's GGUF
//! conversion of it, as one forward pass, token by token, and prefill-then-decode.

use conch_formats::HfModelDir;
use conch_models::{load_hf, Model};
use std::path::{Path, PathBuf};

mod common;
use common::{assert_close, check_batched, fixture_models, read_f32};

struct Reference {
    tokens: Vec<u32>,
    vocab: usize,
    logits: Vec<f32>,
    has_gguf: bool,
}

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models")
        .join(name)
}

fn reference(name: &str) -> Reference {
    let dir = fixture_dir(name);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).expect("reference.json"))
            .unwrap();
    let logits = read_f32(&dir.join(json["logits"].as_str().unwrap()));
    let (rows, cols) = (
        json["rows"].as_u64().unwrap() as usize,
        json["cols"].as_u64().unwrap() as usize,
    );
    assert_eq!(logits.len(), rows * cols);
    let tokens: Vec<u32> = json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(tokens.len(), rows);
    Reference {
        tokens,
        vocab: cols,
        logits,
        has_gguf: json["gguf"].as_bool().unwrap(),
    }
}

/// (a) whole sequence at once, (b) token by token, (c) prefill of a part then decode of the rest,
/// (d) reusing a truncated cache prefix.
fn check_model(label: &str, model: &dyn Model, r: &Reference) {
    let n = r.tokens.len();
    assert_eq!(model.config().vocab_size, r.vocab);

    let mut cache = model.new_cache(n);
    let all = model.forward(&r.tokens, &mut cache, true).unwrap();
    assert_close(&format!("{label} full sequence"), &all, &r.logits);
    assert_eq!(cache.len(), n);

    let mut cache = model.new_cache(n);
    for (i, &t) in r.tokens.iter().enumerate() {
        let row = model.forward(&[t], &mut cache, false).unwrap();
        assert_close(
            &format!("{label} decode step {i}"),
            &row,
            &r.logits[i * r.vocab..(i + 1) * r.vocab],
        );
    }

    let split = n / 2 - 1;
    let mut cache = model.new_cache(n + 4);
    let last = model
        .forward(&r.tokens[..split], &mut cache, false)
        .unwrap();
    assert_close(
        &format!("{label} prefill last row"),
        &last,
        &r.logits[(split - 1) * r.vocab..split * r.vocab],
    );
    let rest = model.forward(&r.tokens[split..], &mut cache, true).unwrap();
    assert_close(
        &format!("{label} decode after prefill"),
        &rest,
        &r.logits[split * r.vocab..],
    );

    cache.truncate(3);
    let again = model.forward(&r.tokens[3..], &mut cache, true).unwrap();
    assert_close(
        &format!("{label} after truncate"),
        &again,
        &r.logits[3 * r.vocab..],
    );

    check_batched(label, model, &r.tokens, &r.logits);
}

fn check_fixture(name: &str) {
    let r = reference(name);
    for (label, model) in fixture_models(name, &fixture_dir(name), r.has_gguf) {
        check_model(&label, model.as_ref(), &r);
    }
}

#[test]
fn llama_tied() {
    check_fixture("llama_tied");
}

#[test]
fn llama_rope_llama3_sharded() {
    check_fixture("llama_rope_llama3_sharded");
}

#[test]
fn llama_rope_linear() {
    check_fixture("llama_rope_linear");
}

#[test]
fn qwen2() {
    check_fixture("qwen2");
}

#[test]
fn qwen3() {
    check_fixture("qwen3");
}

#[test]
fn gemma3() {
    check_fixture("gemma3");
}

#[test]
fn gemma3_softcap() {
    check_fixture("gemma3_softcap");
}

/// The same weights described with transformers-4 keys (`rope_theta`, `rope_scaling`,
/// `rope_local_base_freq`, `sliding_window_pattern`, no `layer_types`) give the same logits.
#[test]
fn old_style_config_keys() {
    use serde_json::json;
    let dir =
        common::hf_copy_with_config(&fixture_dir("gemma3").join("hf"), "old-keys-gemma3", |c| {
            c.remove("rope_parameters");
            c.remove("layer_types");
            c.remove("_sliding_window_pattern");
            c.insert("rope_theta".into(), json!(1000000.0));
            c.insert("rope_local_base_freq".into(), json!(10000.0));
            c.insert(
                "rope_scaling".into(),
                json!({"rope_type": "linear", "factor": 4.0}),
            );
            c.insert("sliding_window_pattern".into(), json!(6));
        });
    let model = load_hf(&HfModelDir::open(&dir).unwrap()).unwrap();
    check_model("gemma3 (old keys)", model.as_ref(), &reference("gemma3"));
    std::fs::remove_dir_all(&dir).unwrap();

    let dir = common::hf_copy_with_config(
        &fixture_dir("llama_rope_llama3_sharded").join("hf"),
        "old-keys-llama3",
        |c| {
            let mut params = c.remove("rope_parameters").unwrap();
            let theta = params
                .as_object_mut()
                .unwrap()
                .remove("rope_theta")
                .unwrap();
            params.as_object_mut().unwrap().remove("rope_type");
            params["type"] = json!("llama3");
            c.insert("rope_theta".into(), theta);
            c.insert("rope_scaling".into(), params);
        },
    );
    let model = load_hf(&HfModelDir::open(&dir).unwrap()).unwrap();
    check_model(
        "llama3 rope (old keys)",
        model.as_ref(),
        &reference("llama_rope_llama3_sharded"),
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn qwen2_sliding() {
    check_fixture("qwen2_sliding");
}

#[test]
fn qwen3_yarn() {
    check_fixture("qwen3_yarn");
}
