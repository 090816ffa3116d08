//! Smoke test on the real quantized models in ~/.cache/conch/models (skipped when absent):
//! logits are finite and the greedy continuation of an unambiguous prompt is the expected word.
//! Prompt token ids come from the GGUF's own vocabulary (looked up by piece), not from our output.

use conch_formats::GgufFile;
use conch_models::load_gguf;
use std::path::{Path, PathBuf};

fn model_path(file: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".cache/conch/models").join(file);
    if p.is_file() {
        Some(p)
    } else {
        // scripts/test fetches the models and sets this, so there a missing model is a failure.
        assert!(
            std::env::var_os("CONCH_REQUIRE_REAL_MODELS").is_none(),
            "{} is missing",
            p.display()
        );
        eprintln!("skipping: {} not present", p.display());
        None
    }
}

/// Id of the vocabulary entry exactly equal to `piece`.
fn token_id(file: &GgufFile, piece: &str) -> u32 {
    let tokens = file
        .get_str_array("tokenizer.ggml.tokens")
        .expect("vocabulary");
    tokens
        .iter()
        .position(|t| *t == piece)
        .unwrap_or_else(|| panic!("no token {piece:?}")) as u32
}

fn greedy_next(path: &Path, prompt: &[&str], bos: bool) -> (GgufFile, u32) {
    let file = GgufFile::open(path).unwrap();
    let model = load_gguf(&file).unwrap();
    let mut ids: Vec<u32> = prompt.iter().map(|p| token_id(&file, p)).collect();
    if bos {
        let bos_id = file.get_u64("tokenizer.ggml.bos_token_id").expect("bos id") as u32;
        ids.insert(0, bos_id);
    }
    let mut cache = model.new_cache(ids.len());
    let logits = model.forward(&ids, &mut cache, false).unwrap();
    assert_eq!(logits.len(), model.config().vocab_size);
    assert!(logits.iter().all(|v| v.is_finite()), "non-finite logits");
    let best = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0 as u32;
    (file, best)
}

#[test]
fn smollm2_counts() {
    let Some(path) = model_path("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    // GPT-2 byte-level pieces ("Ġ" is a space); SmolLM's pre-tokenizer splits digits off alone,
    // as llama-tokenize shows for "1, 2, 3, 4, 5, ".
    let prompt = [
        "1", ",", "Ġ", "2", ",", "Ġ", "3", ",", "Ġ", "4", ",", "Ġ", "5", ",", "Ġ",
    ];
    let (file, next) = greedy_next(&path, &prompt, false);
    assert_eq!(next, token_id(&file, "6"));
}

#[test]
fn gemma3_counts() {
    let Some(path) = model_path("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    // SentencePiece pieces: "▁" is a leading space; Gemma splits digits one per token.
    let prompt = [
        "1", ",", "▁", "2", ",", "▁", "3", ",", "▁", "4", ",", "▁", "5", ",", "▁",
    ];
    let (file, next) = greedy_next(&path, &prompt, true);
    assert_eq!(next, token_id(&file, "6"));
}
