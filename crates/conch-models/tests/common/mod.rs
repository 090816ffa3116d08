//! Helpers shared by the reference-logit tests (dense and MoE fixtures).
#![allow(dead_code)] // each test binary uses its own subset

use conch_formats::{GgufFile, HfModelDir};
use conch_models::{load_gguf, load_hf, Model};
use std::path::{Path, PathBuf};

pub const TOLERANCE: f32 = 1e-4;

/// A little-endian f32 file written by the fixture generators.
pub fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let d = got
        .iter()
        .zip(want)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(d <= TOLERANCE, "{what}: max |diff| {d} > {TOLERANCE}");
}

/// The fixture's model from its HF directory, and from its GGUF conversion when it has one,
/// each with a label naming the source.
pub fn fixture_models(name: &str, dir: &Path, has_gguf: bool) -> Vec<(String, Box<dyn Model>)> {
    let mut models = vec![(
        format!("{name} (hf)"),
        load_hf(&HfModelDir::open(&dir.join("hf")).unwrap()).unwrap(),
    )];
    if has_gguf {
        let file = GgufFile::open(&dir.join("model.gguf")).unwrap();
        models.push((format!("{name} (gguf)"), load_gguf(&file).unwrap()));
    }
    models
}

/// Copies the HF directory `src` to a fresh temporary one, with `config.json` rewritten by `edit`.
pub fn hf_copy_with_config(
    src: &Path,
    tag: &str,
    edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>),
) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("conch-models-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    edit(config.as_object_mut().unwrap());
    std::fs::write(
        dst.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    dst
}

/// The reference rows `rows` of `logits` (`vocab` wide).
fn reference_rows(logits: &[f32], vocab: usize, rows: std::ops::Range<usize>) -> &[f32] {
    &logits[rows.start * vocab..rows.end * vocab]
}

/// Batched forward passes against the reference logits of `tokens`: sequences at different
/// stages (a whole prompt, the rest of a half-prefilled prompt, one decode step) run together,
/// in a pool of 4-position blocks so rows cross block boundaries; then a sequence that takes its
/// first blocks from the prefix cache of another.
pub fn check_batched(label: &str, model: &dyn Model, tokens: &[u32], logits: &[f32]) {
    use conch_models::BatchItem;
    let n = tokens.len();
    let vocab = model.config().vocab_size;
    let pool = model.new_pool(4, 64);

    let split = n / 2 + 1;
    let mut whole = pool.new_cache(n);
    let mut second_half = pool.new_cache(n);
    model
        .forward(&tokens[..split], &mut second_half, false)
        .unwrap();
    let mut stepping = pool.new_cache(n);
    model
        .forward(&tokens[..n - 1], &mut stepping, false)
        .unwrap();
    let mut short = pool.new_cache(n);
    let mut batch = [
        BatchItem {
            tokens,
            cache: &mut whole,
            all_logits: true,
        },
        BatchItem {
            tokens: &tokens[split..],
            cache: &mut second_half,
            all_logits: true,
        },
        BatchItem {
            tokens: &tokens[n - 1..],
            cache: &mut stepping,
            all_logits: false,
        },
        BatchItem {
            tokens: &tokens[..3],
            cache: &mut short,
            all_logits: false,
        },
    ];
    let out = model.forward_batch(&mut batch, None).unwrap();
    assert_close(&format!("{label} batched whole"), &out[0], logits);
    assert_close(
        &format!("{label} batched second half"),
        &out[1],
        reference_rows(logits, vocab, split..n),
    );
    assert_close(
        &format!("{label} batched decode step"),
        &out[2],
        reference_rows(logits, vocab, n - 1..n),
    );
    assert_close(
        &format!("{label} batched short prompt"),
        &out[3],
        reference_rows(logits, vocab, 2..3),
    );
    assert_eq!((whole.len(), second_half.len(), short.len()), (n, n, 3));

    pool.share_prefix(&whole, tokens);
    let mut reused = pool.cache_with_prefix(&tokens[..n - 1], n);
    let hit = reused.len();
    if model.kv_layout().recurrent {
        // Linear-attention layers keep a recurrent state, which prefix blocks do not carry.
        assert_eq!(hit, 0, "{label}: a recurrent cache took a prefix");
        return;
    }
    assert!(
        hit >= 4 && hit % 4 == 0 && hit < n,
        "{label}: {hit} positions reused"
    );
    let rest = model.forward(&tokens[hit..], &mut reused, true).unwrap();
    assert_close(
        &format!("{label} after a prefix-cache hit"),
        &rest,
        reference_rows(logits, vocab, hit..n),
    );
}
