//! Bad models and bad calls give errors naming the problem, never panics.

use conch_formats::{GgufFile, GgufWriter, HfModelDir, MetaValue, TensorStore};
use conch_models::{load_gguf, load_hf, ModelError};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models")
        .join(name)
}

/// Rewrites the fixture GGUF of `name`, letting `edit_meta` and `edit_tensor` change or drop entries.
fn rewritten_gguf(
    name: &str,
    edit_meta: impl Fn(&str, MetaValue) -> Option<MetaValue>,
    edit_tensor: impl Fn(&str, Vec<usize>, Vec<u8>) -> Option<(Vec<usize>, Vec<u8>)>,
) -> GgufFile {
    let src = GgufFile::open(&fixture(name).join("model.gguf")).unwrap();
    let mut w = GgufWriter::new();
    for (key, value) in src.metadata() {
        if key.starts_with("GGUF.") || key == "general.alignment" {
            continue;
        }
        if let Some(v) = edit_meta(key, value.clone()) {
            w.add_metadata(key, v).unwrap();
        }
    }
    for info in src.tensors() {
        let t = src.tensor(&info.name).unwrap();
        if let Some((shape, data)) = edit_tensor(&info.name, t.shape.clone(), t.data.to_vec()) {
            w.add_tensor(&info.name, t.dtype, &shape, data).unwrap();
        }
    }
    GgufFile::from_bytes(w.to_bytes()).unwrap()
}

fn load_err(file: &GgufFile) -> ModelError {
    match load_gguf(file) {
        Err(e) => e,
        Ok(_) => panic!("a damaged model loaded"),
    }
}

fn assert_mentions(e: &ModelError, needles: &[&str]) {
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} does not mention {n:?}");
    }
}

#[test]
fn unchanged_rewrite_loads() {
    let file = rewritten_gguf("qwen2", |_, v| Some(v), |_, s, d| Some((s, d)));
    load_gguf(&file).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let file = rewritten_gguf(
        "qwen2",
        |_, v| Some(v),
        |n, s, d| (n != "blk.1.ffn_up.weight").then_some((s, d)),
    );
    let e = load_err(&file);
    assert!(matches!(e, ModelError::MissingTensor(_)));
    assert_mentions(&e, &["blk.1.ffn_up.weight"]);
}

#[test]
fn wrong_tensor_shape_is_named() {
    // Same bytes, rows and columns swapped.
    let file = rewritten_gguf(
        "qwen2",
        |_, v| Some(v),
        |n, s, d| {
            Some(if n == "blk.0.attn_k.weight" {
                (vec![s[1], s[0]], d)
            } else {
                (s, d)
            })
        },
    );
    assert_mentions(
        &load_err(&file),
        &["blk.0.attn_k.weight", "shape [48, 24], expected [24, 48]"],
    );
    let file = rewritten_gguf(
        "qwen2",
        |_, v| Some(v),
        |n, s, d| {
            Some(if n == "blk.0.attn_k.bias" {
                (vec![s[0] - 4], d[..d.len() - 16].to_vec())
            } else {
                (s, d)
            })
        },
    );
    assert_mentions(&load_err(&file), &["blk.0.attn_k.bias"]);
}

#[test]
fn inconsistent_metadata_is_named() {
    let file = rewritten_gguf(
        "qwen3",
        |k, v| {
            Some(if k == "qwen3.attention.head_count_kv" {
                MetaValue::U32(3)
            } else {
                v
            })
        },
        |_, s, d| Some((s, d)),
    );
    assert_mentions(
        &load_err(&file),
        &["num_kv_heads 3 does not divide num_heads 4"],
    );
    let file = rewritten_gguf(
        "qwen3",
        |k, v| (k != "qwen3.block_count").then_some(v),
        |_, s, d| Some((s, d)),
    );
    assert_mentions(&load_err(&file), &["qwen3.block_count"]);
    // One layer more than the file has tensors for.
    let layers = GgufFile::open(&fixture("qwen3").join("model.gguf"))
        .unwrap()
        .get_u64("qwen3.block_count")
        .unwrap() as u32;
    let file = rewritten_gguf(
        "qwen3",
        |k, v| {
            Some(if k == "qwen3.block_count" {
                MetaValue::U32(layers + 1)
            } else {
                v
            })
        },
        |_, s, d| Some((s, d)),
    );
    assert_mentions(&load_err(&file), &[&format!("blk.{layers}.")]);
    let file = rewritten_gguf(
        "qwen3",
        |k, v| {
            Some(if k == "general.architecture" {
                MetaValue::String("rwkv9".into())
            } else {
                v
            })
        },
        |_, s, d| Some((s, d)),
    );
    assert_mentions(&load_err(&file), &["rwkv9"]);
}

fn copy_hf(name: &str, tag: &str, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let src = fixture(name).join("hf");
    let dst =
        std::env::temp_dir().join(format!("conch-models-{}-{name}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(
        dst.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    dst
}

#[test]
fn hf_config_not_matching_weights_is_an_error() {
    let dir = copy_hf("llama_tied", "hidden", |c| {
        c["intermediate_size"] = 99.into()
    });
    let e = match load_hf(&HfModelDir::open(&dir).unwrap()) {
        Err(e) => e,
        Ok(_) => panic!("loaded with a wrong intermediate_size"),
    };
    assert_mentions(&e, &["model.layers.0.mlp.gate_proj.weight", "[99, 48]"]);
    std::fs::remove_dir_all(&dir).unwrap();
    let dir = copy_hf("llama_tied", "heads", |c| {
        c["num_attention_heads"] = 5.into();
        c.as_object_mut().unwrap().remove("head_dim");
    });
    let e = load_hf(&HfModelDir::open(&dir).unwrap()).err().unwrap();
    assert_mentions(
        &e,
        &["hidden_size 48 is not divisible by num_attention_heads 5"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let dir = copy_hf("llama_tied", "untied", |c| {
        c["tie_word_embeddings"] = false.into()
    });
    let e = load_hf(&HfModelDir::open(&dir).unwrap()).err().unwrap();
    assert_mentions(&e, &["lm_head.weight"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn context_overflow_and_bad_tokens_are_errors_that_leave_the_cache_alone() {
    let file = GgufFile::open(&fixture("llama_tied").join("model.gguf")).unwrap();
    let model = load_gguf(&file).unwrap();
    let mut cache = model.new_cache(4);
    model.forward(&[1, 2, 3], &mut cache, false).unwrap();
    match model.forward(&[4, 5], &mut cache, false) {
        Err(ModelError::ContextFull {
            capacity: 4,
            needed: 5,
        }) => {}
        other => panic!("expected ContextFull, got {other:?}"),
    }
    assert_eq!(cache.len(), 3);
    let vocab = model.config().vocab_size as u32;
    let e = model.forward(&[vocab], &mut cache, false).unwrap_err();
    assert!(matches!(e, ModelError::TokenOutOfRange { token, .. } if token == vocab));
    assert_mentions(&e, &[&vocab.to_string()]);
    assert!(matches!(
        model.forward(&[], &mut cache, false),
        Err(ModelError::EmptyInput)
    ));
    assert_eq!(cache.len(), 3);
    // The cache still works after the errors.
    assert_eq!(
        model.forward(&[4], &mut cache, true).unwrap().len(),
        vocab as usize
    );

    let other = load_hf(&HfModelDir::open(&fixture("qwen3").join("hf")).unwrap()).unwrap();
    let mut foreign = other.new_cache(8);
    assert!(matches!(
        model.forward(&[1], &mut foreign, false),
        Err(ModelError::CacheMismatch(_))
    ));
}
