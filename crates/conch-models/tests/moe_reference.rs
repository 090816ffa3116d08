//! Mixture-of-experts models (fixtures/moe/, written by tools/gen_moe_fixtures.py from transformers)
//! against transformers' logits and per-layer routing, from the HF directory and from llama.cpp's
//! GGUF conversion where it exists: whole sequence, token by token, prefill-then-decode.

use conch_formats::{GgufFile, HfModelDir};
use conch_models::blocks::decoder::Source;
use conch_models::{
    load_gguf, load_hf, ExpertCounts, Model, ModelConfig, Routing, RoutingObserver,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;
use common::{assert_close, check_batched, fixture_models, read_f32};

struct RecordedLayer {
    top_k: usize,
    /// Per token, sorted by id.
    ids: Vec<i32>,
    weights: Vec<f32>,
}

struct Reference {
    tokens: Vec<u32>,
    vocab: usize,
    logits: Vec<f32>,
    has_gguf: bool,
    layers: BTreeMap<usize, RecordedLayer>,
}

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/moe")
        .join(name)
}

fn read_i32(path: &Path) -> Vec<i32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn reference(name: &str) -> Reference {
    let dir = fixture_dir(name);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).expect("reference.json"))
            .unwrap();
    let tokens: Vec<u32> = json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let vocab = json["vocab_size"].as_u64().unwrap() as usize;
    let logits = read_f32(&dir.join(json["logits"].as_str().unwrap()));
    assert_eq!(logits.len(), tokens.len() * vocab);
    let layers = json["moe_layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let top_k = l["top_k"].as_u64().unwrap() as usize;
            let ids = read_i32(&dir.join(l["ids"].as_str().unwrap()));
            let weights = read_f32(&dir.join(l["weights"].as_str().unwrap()));
            assert_eq!(ids.len(), tokens.len() * top_k);
            let layer = l["layer"].as_u64().unwrap() as usize;
            (
                layer,
                RecordedLayer {
                    top_k,
                    ids,
                    weights,
                },
            )
        })
        .collect();
    Reference {
        tokens,
        vocab,
        logits,
        has_gguf: json["gguf"].as_bool().unwrap(),
        layers,
    }
}

/// Every (layer, position) choice the model reported, ids sorted with their weights.
#[derive(Default)]
struct RoutingLog {
    choices: BTreeMap<(usize, usize), Vec<(u32, f32)>>,
}

impl RoutingObserver for RoutingLog {
    fn observe(&mut self, layer: usize, first_position: usize, routing: &Routing) {
        for t in 0..routing.n_tokens() {
            let mut pairs: Vec<(u32, f32)> = routing
                .token_ids(t)
                .iter()
                .copied()
                .zip(routing.token_weights(t).iter().copied())
                .collect();
            pairs.sort_by_key(|p| p.0);
            let previous = self.choices.insert((layer, first_position + t), pairs);
            assert!(previous.is_none(), "layer {layer} routed a position twice");
        }
    }
}

impl RoutingLog {
    fn check(&self, what: &str, r: &Reference) {
        let n = r.tokens.len();
        let layers: Vec<usize> = self.choices.keys().map(|k| k.0).collect();
        for l in &layers {
            assert!(
                r.layers.contains_key(l),
                "{what}: layer {l} routed but is dense in the reference"
            );
        }
        for (&layer, rec) in &r.layers {
            for t in 0..n {
                let got = self
                    .choices
                    .get(&(layer, t))
                    .unwrap_or_else(|| panic!("{what}: no routing for layer {layer} token {t}"));
                let want_ids: Vec<u32> = rec.ids[t * rec.top_k..(t + 1) * rec.top_k]
                    .iter()
                    .map(|&i| i as u32)
                    .collect();
                let got_ids: Vec<u32> = got.iter().map(|p| p.0).collect();
                assert_eq!(got_ids, want_ids, "{what}: layer {layer} token {t} experts");
                let got_w: Vec<f32> = got.iter().map(|p| p.1).collect();
                assert_close(
                    &format!("{what}: layer {layer} token {t} weights"),
                    &got_w,
                    &rec.weights[t * rec.top_k..(t + 1) * rec.top_k],
                );
            }
        }
    }
}

fn check_model(label: &str, model: &dyn Model, r: &Reference) {
    let n = r.tokens.len();
    assert_eq!(model.config().vocab_size, r.vocab);
    let moe = model.config().moe.as_ref().expect("an MoE configuration");
    assert_eq!(
        moe.num_sparse_layers(),
        r.layers.len(),
        "{label}: MoE layers"
    );

    let mut log = RoutingLog::default();
    let mut cache = model.new_cache(n);
    let all = model
        .forward_observed(&r.tokens, &mut cache, true, &mut log)
        .unwrap();
    assert_close(&format!("{label} full sequence"), &all, &r.logits);
    log.check(&format!("{label} full sequence"), r);

    let mut log = RoutingLog::default();
    let mut cache = model.new_cache(n);
    for (i, &t) in r.tokens.iter().enumerate() {
        let row = model
            .forward_observed(&[t], &mut cache, false, &mut log)
            .unwrap();
        assert_close(
            &format!("{label} decode step {i}"),
            &row,
            &r.logits[i * r.vocab..(i + 1) * r.vocab],
        );
    }
    log.check(&format!("{label} token by token"), r);

    let split = n / 2 + 1;
    let mut cache = model.new_cache(n);
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
    check_batched(label, model, &r.tokens, &r.logits);
}

fn check_fixture(name: &str) {
    let r = reference(name);
    for (label, model) in fixture_models(name, &fixture_dir(name), r.has_gguf) {
        check_model(&label, model.as_ref(), &r);
    }
}

#[test]
fn mixtral() {
    check_fixture("mixtral");
}

#[test]
fn qwen2_moe() {
    check_fixture("qwen2_moe");
}

#[test]
fn qwen3_moe() {
    check_fixture("qwen3_moe");
}

#[test]
fn qwen3_moe_mixed_dense_layers() {
    check_fixture("qwen3_moe_mixed");
}

/// OLMoE with `clip_qkv` active. llama.cpp's converter drops `clip_qkv` (its GGUF has no
/// `attention.clamp_kqv`), so the GGUF is a model without clipping: it is checked against the HF
/// weights with clipping switched off, after the HF model (with clipping) matched transformers.
#[test]
fn olmoe() {
    let name = "olmoe";
    let r = reference(name);
    let dir = fixture_dir(name);
    let hf = HfModelDir::open(&dir.join("hf")).unwrap();
    let model = load_hf(&hf).unwrap();
    assert_eq!(model.config().clip_qkv, Some(1.5));
    check_model("olmoe (hf)", model.as_ref(), &r);

    let mut unclipped = ModelConfig::from_hf_json(&hf.config).unwrap();
    unclipped.clip_qkv = None;
    let unclipped = conch_models::arch::build(unclipped, &hf.weights, Source::Hf).unwrap();
    let gguf = load_gguf(&GgufFile::open(&dir.join("model.gguf")).unwrap()).unwrap();
    assert_eq!(gguf.config().clip_qkv, None);
    let n = r.tokens.len();
    let want = unclipped
        .forward(&r.tokens, &mut unclipped.new_cache(n), true)
        .unwrap();
    let got = gguf
        .forward(&r.tokens, &mut gguf.new_cache(n), true)
        .unwrap();
    assert_close("olmoe (gguf) vs hf without clipping", &got, &want);
    assert!(
        want.iter()
            .zip(&r.logits)
            .any(|(a, b)| (a - b).abs() > 1e-2),
        "clipping should matter in this fixture"
    );
    let mut cache = gguf.new_cache(n);
    for (i, &t) in r.tokens.iter().enumerate() {
        let row = gguf.forward(&[t], &mut cache, false).unwrap();
        assert_close(
            &format!("olmoe (gguf) decode step {i}"),
            &row,
            &want[i * r.vocab..(i + 1) * r.vocab],
        );
    }
}

#[test]
fn granitemoe() {
    check_fixture("granitemoe");
}

#[test]
fn minimax_m2() {
    check_fixture("minimax_m2");
}

#[test]
fn ernie4_5_moe() {
    check_fixture("ernie4_5_moe");
}

#[test]
fn glm4_moe() {
    check_fixture("glm4_moe");
}

#[test]
fn deepseek_v2() {
    check_fixture("deepseek_v2");
}

#[test]
fn deepseek_v2_yarn() {
    check_fixture("deepseek_v2_yarn");
}

#[test]
fn deepseek_v3() {
    check_fixture("deepseek_v3");
}

#[test]
fn gpt_oss() {
    check_fixture("gpt_oss");
}

#[test]
fn phimoe() {
    check_fixture("phimoe");
}

/// LongRoPE's multiplier depends on how far one forward pass reaches (transformers' PhiMoE), so
/// the whole sequence and its first tokens alone each have their own reference.
#[test]
fn phimoe_longrope() {
    let name = "phimoe_longrope";
    let r = reference(name);
    let dir = fixture_dir(name);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let prefix = json["prefix_tokens"].as_u64().unwrap() as usize;
    let prefix_logits = read_f32(&dir.join(json["prefix_logits"].as_str().unwrap()));
    for (label, model) in fixture_models(name, &dir, r.has_gguf) {
        let n = r.tokens.len();
        let all = model
            .forward(&r.tokens, &mut model.new_cache(n), true)
            .unwrap();
        assert_close(&format!("{label} whole sequence"), &all, &r.logits);
        let head = model
            .forward(&r.tokens[..prefix], &mut model.new_cache(n), true)
            .unwrap();
        assert_close(
            &format!("{label} first {prefix} tokens"),
            &head,
            &prefix_logits,
        );
    }
}

#[test]
fn minimax_text01() {
    check_fixture("minimax_text01");
}

/// Expert counts sum to tokens × top-k per MoE layer and agree with the recorded choices.
#[test]
fn expert_counts_follow_the_recorded_routing() {
    let r = reference("qwen3_moe_mixed");
    let model =
        load_hf(&HfModelDir::open(&fixture_dir("qwen3_moe_mixed").join("hf")).unwrap()).unwrap();
    let mut counts = ExpertCounts::default();
    let mut cache = model.new_cache(r.tokens.len());
    model
        .forward_observed(&r.tokens, &mut cache, false, &mut counts)
        .unwrap();
    let n_expert = model.config().moe.as_ref().unwrap().n_expert();
    for (layer, row) in counts.counts.iter().enumerate() {
        match r.layers.get(&layer) {
            None => assert!(row.is_empty(), "dense layer {layer} has counts"),
            Some(rec) => {
                let mut want = vec![0u64; n_expert];
                for &id in &rec.ids {
                    want[id as usize] += 1;
                }
                let mut got = row.clone();
                got.resize(n_expert, 0);
                assert_eq!(got, want, "layer {layer}");
            }
        }
    }
}

/// Total and active parameter counts agree with the tensors of the checkpoint.
#[test]
fn parameter_counts_match_the_checkpoint() {
    for name in [
        "mixtral",
        "qwen2_moe",
        "qwen3_moe_mixed",
        "granitemoe",
        "deepseek_v2",
        "deepseek_v3",
        "ernie4_5_moe",
    ] {
        let dir = HfModelDir::open(&fixture_dir(name).join("hf")).unwrap();
        let model = load_hf(&dir).unwrap();
        let c = model.config();
        let counts = c.parameter_counts();
        let stored: u64 = count_stored_weights(&fixture_dir(name).join("hf/model.safetensors"));
        assert_eq!(counts.total, stored, "{name}: total");
        let moe = c.moe.as_ref().unwrap();
        let per_expert = 3 * (c.hidden_size * moe.expert_intermediate_size) as u64;
        let unused =
            (moe.n_expert() - moe.top_k()) as u64 * per_expert * moe.num_sparse_layers() as u64;
        assert_eq!(counts.active, counts.total - unused, "{name}: active");
        assert!(!moe.routing_description().is_empty());
    }
}

/// Elements of every tensor in a safetensors file except biases (correction biases too) and q/k
/// norms (the count leaves them out).
fn count_stored_weights(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| {
            *k != "__metadata__"
                && !k.ends_with(".bias")
                && !k.ends_with("e_score_correction_bias")
                && !k.ends_with("q_norm.weight")
                && !k.ends_with("k_norm.weight")
        })
        .map(|(_, v)| {
            v["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product::<u64>()
        })
        .sum()
}

/// Copies a fixture's HF directory with `config.json` rewritten by `edit`.
fn hf_copy_with_config(
    name: &str,
    tag: &str,
    edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>),
) -> PathBuf {
    common::hf_copy_with_config(
        &fixture_dir(name).join("hf"),
        &format!("moe-{name}-{tag}"),
        edit,
    )
}

fn load_error(dir: &Path) -> String {
    match load_hf(&HfModelDir::open(dir).unwrap()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Inconsistent MoE configurations are errors that say what is wrong, not panics.
#[test]
fn bad_moe_configs_are_named_errors() {
    use serde_json::json;
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "num_experts_per_tok",
            json!(9),
            "cannot choose 9 of 8 experts",
        ),
        ("num_local_experts", json!(0), "cannot choose"),
        // The weights hold 8 experts; a configuration of 12 names a tensor that is not there.
        ("num_local_experts", json!(12), "experts.8"),
        (
            "intermediate_size",
            json!(41),
            "block_sparse_moe.experts.0.w1.weight",
        ),
    ];
    for (i, (key, value, needle)) in cases.into_iter().enumerate() {
        let dir = hf_copy_with_config("mixtral", &i.to_string(), |c| {
            c.insert(key.into(), value.clone());
        });
        let err = load_error(&dir);
        assert!(err.contains(needle), "{key}={value}: {err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let dir = hf_copy_with_config("deepseek_v3", "groups", |c| {
        c.insert("n_group".into(), json!(3));
    });
    let err = load_error(&dir);
    assert!(err.contains("do not split into 3 groups"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// transformers-4 hub key names (`num_experts`, `scoring_func`, `topk_method`, MiniMax's
/// `attn_type_list` and `layernorm_*` factors) give the same model.
#[test]
fn hub_config_keys_give_the_same_model() {
    use serde_json::json;
    let dir = hf_copy_with_config("qwen3_moe", "hub", |c| {
        let n = c.remove("num_local_experts").unwrap();
        c.insert("num_experts".into(), n);
    });
    let model = load_hf(&HfModelDir::open(&dir).unwrap()).unwrap();
    check_model(
        "qwen3_moe (hub keys)",
        model.as_ref(),
        &reference("qwen3_moe"),
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let dir = hf_copy_with_config("deepseek_v3", "hub", |c| {
        c.insert("scoring_func".into(), json!("sigmoid"));
        c.insert("topk_method".into(), json!("noaux_tc"));
    });
    let model = load_hf(&HfModelDir::open(&dir).unwrap()).unwrap();
    check_model(
        "deepseek_v3 (hub keys)",
        model.as_ref(),
        &reference("deepseek_v3"),
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let dir = hf_copy_with_config("minimax_text01", "hub", |c| {
        let types = c.remove("layer_types").unwrap();
        let list: Vec<u64> = types
            .as_array()
            .unwrap()
            .iter()
            .map(|t| u64::from(t.as_str() == Some("full_attention")))
            .collect();
        c.insert("attn_type_list".into(), json!(list));
        for (new, old) in [
            (
                "linear_attn_alpha_factor",
                "layernorm_linear_attention_alpha",
            ),
            ("full_attn_alpha_factor", "layernorm_full_attention_alpha"),
            ("mlp_alpha_factor", "layernorm_mlp_alpha"),
        ] {
            let v = c.remove(new).unwrap();
            c.insert(old.into(), v);
        }
    });
    let model = load_hf(&HfModelDir::open(&dir).unwrap()).unwrap();
    check_model(
        "minimax_text01 (hub keys)",
        model.as_ref(),
        &reference("minimax_text01"),
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
