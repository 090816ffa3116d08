//! The MoE block against independent references: transformers' recorded router choices and MoE block
//! outputs of the tiny models in `fixtures/moe/` (written by `tools/gen_moe_fixtures.py`), and a naive
//! dense computation of the experts.

use super::*;

use conch_formats::{SafetensorsModel, TensorStore};
use conch_kernels::{DType, QMatrix};
use serde_json::Value;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/moe")
}

fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures/moe exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("reference.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.len() >= 10,
        "expected the MoE fixtures, found {names:?}"
    );
    names
}

fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures_dir().join(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn read_f32(name: &str, file: &Value) -> Vec<f32> {
    let bytes = std::fs::read(fixtures_dir().join(name).join(file.as_str().unwrap())).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn read_i32(name: &str, file: &Value) -> Vec<i32> {
    let bytes = std::fs::read(fixtures_dir().join(name).join(file.as_str().unwrap())).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The fixture's routing description (written by the generator from the model's config) as a
/// [`RouterConfig`].
fn router_config(routing: &Value, n_expert: usize) -> RouterConfig {
    let top_k = routing["top_k"].as_u64().unwrap() as usize;
    let normalization = match (
        routing["normalize"].as_bool(),
        routing["normalize_min"].as_f64(),
    ) {
        (Some(true), Some(min)) => Normalization::SumClamped { min: min as f32 },
        (Some(true), None) => Normalization::Sum,
        _ => Normalization::None,
    };
    let scoring = match routing["scoring"].as_str().unwrap() {
        "softmax" => Scoring::Softmax,
        "sigmoid" => Scoring::Sigmoid,
        "softmax_of_top_k" => Scoring::SoftmaxOfTopK,
        "sparsemixer" => Scoring::SparseMixer {
            jitter_eps: routing["jitter_eps"].as_f64().unwrap() as f32,
        },
        other => panic!("unknown scoring {other}"),
    };
    let mut cfg = RouterConfig::new(n_expert, top_k, scoring, normalization);
    if let Some(n_group) = routing["n_group"].as_u64() {
        let score = match routing["group_score"].as_str().unwrap() {
            "max" => GroupScore::Max,
            "sum_top2" => GroupScore::SumOfTop2,
            other => panic!("unknown group score {other}"),
        };
        cfg.group_limit = Some(GroupLimit {
            n_group: n_group as usize,
            topk_group: routing["topk_group"].as_u64().unwrap() as usize,
            score,
        });
    }
    if let Some(s) = routing["routed_scaling_factor"].as_f64() {
        cfg.scaling = s as f32;
    }
    cfg
}

/// (id, weight) pairs of one token sorted by id, as the fixtures store them.
fn by_id(ids: &[u32], weights: &[f32]) -> Vec<(u32, f32)> {
    let mut pairs: Vec<(u32, f32)> = ids.iter().copied().zip(weights.iter().copied()).collect();
    pairs.sort_by_key(|p| p.0);
    pairs
}

#[test]
fn router_matches_transformers_choices_and_weights() {
    let mut checked = 0;
    for name in fixture_names() {
        let reference = reference(&name);
        for layer in reference["moe_layers"].as_array().unwrap() {
            let n_expert = layer["n_expert"].as_u64().unwrap() as usize;
            let top_k = layer["top_k"].as_u64().unwrap() as usize;
            let cfg = router_config(&reference["routing"], n_expert);
            let logits = read_f32(&name, &layer["logits"]);
            let want_ids = read_i32(&name, &layer["ids"]);
            let want_weights = read_f32(&name, &layer["weights"]);
            let bias = layer.get("correction_bias").map(|f| read_f32(&name, f));
            let n = logits.len() / n_expert;
            let got = route(&logits, n, &cfg, bias.as_deref()).unwrap();
            assert_eq!(got.top_k, top_k, "{name}");
            for t in 0..n {
                let got_pairs = by_id(got.token_ids(t), got.token_weights(t));
                let want = &want_ids[t * top_k..(t + 1) * top_k];
                let got_ids: Vec<i32> = got_pairs.iter().map(|p| p.0 as i32).collect();
                assert_eq!(
                    got_ids, want,
                    "{name} layer {} token {t}: expert ids",
                    layer["layer"]
                );
                for (k, (_, w)) in got_pairs.iter().enumerate() {
                    let expected = want_weights[t * top_k + k];
                    assert!(
                        (w - expected).abs() <= 1e-6 + 1e-5 * expected.abs(),
                        "{name} layer {} token {t}: weight {w} vs {expected}",
                        layer["layer"]
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} MoE layers checked");
}

/// A deterministic pseudo-random generator for test data.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Experts stored as owned f32 matrices, recording which ones were looked up.
struct OwnedExperts {
    hidden: usize,
    inter: usize,
    layout: &'static str,
    gate_up: Vec<Vec<u8>>,
    gate_up_bias: Vec<Vec<f32>>,
    down: Vec<Vec<u8>>,
    down_bias: Vec<Vec<f32>>,
    touched: RefCell<Vec<usize>>,
    activation: ExpertActivation,
}

impl OwnedExperts {
    fn random(
        n_expert: usize,
        hidden: usize,
        inter: usize,
        layout: &'static str,
        rng: &mut Lcg,
    ) -> OwnedExperts {
        OwnedExperts {
            hidden,
            inter,
            layout,
            gate_up: (0..n_expert)
                .map(|_| f32_bytes(&rng.vec(2 * inter * hidden)))
                .collect(),
            gate_up_bias: (0..n_expert).map(|_| rng.vec(2 * inter)).collect(),
            down: (0..n_expert)
                .map(|_| f32_bytes(&rng.vec(hidden * inter)))
                .collect(),
            down_bias: (0..n_expert).map(|_| rng.vec(hidden)).collect(),
            touched: RefCell::new(Vec::new()),
            activation: ExpertActivation::Swiglu,
        }
    }

    /// `v` as a bias, empty meaning none.
    fn bias(v: &[f32]) -> Option<&[f32]> {
        (!v.is_empty()).then_some(v)
    }

    /// Expert `e` computed densely for one token, straight from the definition.
    fn naive(&self, e: usize, x: &[f32]) -> Vec<f32> {
        let w: Vec<f32> = self.gate_up[e]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let row = |r: usize| -> f32 {
            w[r * self.hidden..(r + 1) * self.hidden]
                .iter()
                .zip(x)
                .map(|(a, b)| a * b)
                .sum::<f32>()
                + self.gate_up_bias[e].get(r).copied().unwrap_or(0.0)
        };
        let h: Vec<f32> = (0..self.inter)
            .map(|i| {
                let (g, u) = match self.layout {
                    "separate" | "concatenated" => (row(i), row(self.inter + i)),
                    _ => (row(2 * i), row(2 * i + 1)),
                };
                match self.activation {
                    ExpertActivation::Swiglu => g / (1.0 + (-g).exp()) * u,
                    ExpertActivation::ClampedSwiglu { alpha, limit } => {
                        let g = g.min(limit);
                        let u = u.clamp(-limit, limit);
                        (u + 1.0) * g / (1.0 + (-alpha * g).exp())
                    }
                }
            })
            .collect();
        let d: Vec<f32> = self.down[e]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (0..self.hidden)
            .map(|o| {
                d[o * self.inter..(o + 1) * self.inter]
                    .iter()
                    .zip(&h)
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
                    + self.down_bias[e].get(o).copied().unwrap_or(0.0)
            })
            .collect()
    }
}

impl ExpertSet for OwnedExperts {
    fn n_expert(&self) -> usize {
        self.gate_up.len()
    }

    fn expert(&self, id: usize) -> ExpertWeights<'_> {
        self.touched.borrow_mut().push(id);
        let (h, i) = (self.hidden, self.inter);
        let half = i * h * 4;
        let gate_up = match self.layout {
            "separate" => GateUp::Separate {
                gate: Projection {
                    weight: QMatrix {
                        dtype: DType::F32,
                        rows: i,
                        cols: h,
                        data: &self.gate_up[id][..half],
                    },
                    bias: Self::bias(&self.gate_up_bias[id]).map(|b| &b[..i]),
                },
                up: Projection {
                    weight: QMatrix {
                        dtype: DType::F32,
                        rows: i,
                        cols: h,
                        data: &self.gate_up[id][half..],
                    },
                    bias: Self::bias(&self.gate_up_bias[id]).map(|b| &b[i..]),
                },
            },
            layout => {
                let p = Projection {
                    weight: QMatrix {
                        dtype: DType::F32,
                        rows: 2 * i,
                        cols: h,
                        data: &self.gate_up[id],
                    },
                    bias: Self::bias(&self.gate_up_bias[id]),
                };
                if layout == "concatenated" {
                    GateUp::Concatenated(p)
                } else {
                    GateUp::Interleaved(p)
                }
            }
        };
        ExpertWeights {
            gate_up,
            down: Projection {
                weight: QMatrix {
                    dtype: DType::F32,
                    rows: h,
                    cols: i,
                    data: &self.down[id],
                },
                bias: Self::bias(&self.down_bias[id]),
            },
        }
    }
}

#[test]
fn grouped_experts_match_naive_dense_computation_and_skip_unchosen() {
    let (n_expert, hidden, inter, n) = (7, 12, 10, 5);
    for (layout, activation) in [
        ("separate", ExpertActivation::Swiglu),
        ("concatenated", ExpertActivation::Swiglu),
        (
            "interleaved",
            ExpertActivation::ClampedSwiglu {
                alpha: 1.702,
                limit: 0.6,
            },
        ),
    ] {
        let mut rng = Lcg(17);
        let mut experts = OwnedExperts::random(n_expert, hidden, inter, layout, &mut rng);
        experts.activation = activation;
        let x: Vec<f32> = rng.vec(n * hidden).iter().map(|v| v * 3.0).collect();
        // Experts 2 and 5 are never chosen.
        let ids = vec![0, 3, 3, 1, 6, 0, 4, 6, 1, 3];
        let weights = rng.vec(ids.len());
        let routing = Routing {
            top_k: 2,
            ids: ids.clone(),
            weights: weights.clone(),
        };
        let mut out = vec![0.5f32; n * hidden];
        let mut scratch = ExpertScratch::default();
        run_experts(
            &x,
            n,
            hidden,
            &routing,
            &experts,
            experts.activation,
            &mut scratch,
            &mut out,
        )
        .unwrap();
        for t in 0..n {
            let mut want = vec![0.5f32; hidden];
            for k in 0..2 {
                let y = experts.naive(ids[t * 2 + k] as usize, &x[t * hidden..(t + 1) * hidden]);
                want.iter_mut()
                    .zip(&y)
                    .for_each(|(w, v)| *w += weights[t * 2 + k] * v);
            }
            for (o, (g, w)) in out[t * hidden..(t + 1) * hidden]
                .iter()
                .zip(&want)
                .enumerate()
            {
                assert!(
                    (g - w).abs() < 1e-4,
                    "{layout} token {t} output {o}: {g} vs {w}"
                );
            }
        }
        let mut touched = experts.touched.borrow().clone();
        touched.sort();
        assert_eq!(
            touched,
            [0, 1, 3, 4, 6],
            "{layout}: each chosen expert looked up once, unchosen never"
        );
    }
}

#[test]
fn shared_expert_gate_scales_by_sigmoid() {
    let (hidden, inter, n) = (8, 6, 3);
    let mut rng = Lcg(5);
    let experts = OwnedExperts::random(1, hidden, inter, "concatenated", &mut rng);
    let gate_w = rng.vec(hidden);
    let gate_bytes = f32_bytes(&gate_w);
    let gate = Projection::new(QMatrix {
        dtype: DType::F32,
        rows: 1,
        cols: hidden,
        data: &gate_bytes,
    });
    let x = rng.vec(n * hidden);
    let mut out = vec![0.0f32; n * hidden];
    let mut scratch = ExpertScratch::default();
    let weights = experts.expert(0);
    run_shared_expert(
        &x,
        n,
        hidden,
        &weights,
        Some(gate),
        ExpertActivation::Swiglu,
        &mut scratch,
        &mut out,
    )
    .unwrap();
    for t in 0..n {
        let xt = &x[t * hidden..(t + 1) * hidden];
        let g: f32 = gate_w.iter().zip(xt).map(|(a, b)| a * b).sum();
        let s = 1.0 / (1.0 + (-g).exp());
        let y = experts.naive(0, xt);
        for (o, v) in y.iter().enumerate() {
            assert!((out[t * hidden + o] - s * v).abs() < 1e-5);
        }
    }
}

#[test]
fn mismatched_shapes_are_errors_not_panics() {
    let mut rng = Lcg(9);
    let experts = OwnedExperts::random(3, 8, 4, "separate", &mut rng);
    let x = rng.vec(2 * 8);
    let mut out = vec![0.0; 2 * 8];
    let mut scratch = ExpertScratch::default();
    let routing = Routing {
        top_k: 1,
        ids: vec![0, 5],
        weights: vec![1.0, 1.0],
    };
    assert!(run_experts(
        &x,
        2,
        8,
        &routing,
        &experts,
        ExpertActivation::Swiglu,
        &mut scratch,
        &mut out
    )
    .is_err());
    let routing = Routing {
        top_k: 1,
        ids: vec![0, 1],
        weights: vec![1.0, 1.0],
    };
    assert!(run_experts(
        &x,
        2,
        9,
        &routing,
        &experts,
        ExpertActivation::Swiglu,
        &mut scratch,
        &mut out
    )
    .is_err());
    assert!(run_experts(
        &x[..8],
        1,
        8,
        &routing,
        &experts,
        ExpertActivation::Swiglu,
        &mut scratch,
        &mut out[..8]
    )
    .is_err());
    let data = vec![0u8; 3 * 4 * 8 * 4];
    assert!(stacked_matrix(DType::F32, 3, 4, 8, &data, 3).is_err());
    assert!(stacked_matrix(DType::F32, 3, 4, 9, &data, 0).is_err());
    assert!(stacked_matrix(DType::Q8_0, 3, 4, 8, &data, 0).is_err());
    let m = stacked_matrix(DType::F32, 3, 4, 8, &data, 2).unwrap();
    assert_eq!((m.rows, m.cols, m.data.len()), (4, 8, 128));
}

/// The weights of one transformers checkpoint's MoE layer, rearranged only where the checkpoint
/// stores matrices transposed (`[in, out]`); the gate/up layout stays as the checkpoint has it.
struct HfMoeLayer {
    experts: OwnedExperts,
    shared: Vec<(OwnedExperts, Option<Vec<u8>>)>,
    router: Vec<u8>,
    router_bias: Option<Vec<f32>>,
}

fn hf_f32(store: &SafetensorsModel, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = store
        .tensor(name)
        .unwrap_or_else(|| panic!("no tensor {name}"));
    assert_eq!(t.dtype, DType::F32, "{name}");
    (
        t.data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        t.shape.clone(),
    )
}

fn hf_bytes(store: &SafetensorsModel, name: &str) -> Vec<u8> {
    store
        .tensor(name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
        .data
        .to_vec()
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| v[r * cols + c]))
        .collect()
}

fn empty_experts(hidden: usize, inter: usize, layout: &'static str) -> OwnedExperts {
    OwnedExperts {
        hidden,
        inter,
        layout,
        gate_up: vec![],
        gate_up_bias: vec![],
        down: vec![],
        down_bias: vec![],
        touched: RefCell::new(vec![]),
        activation: ExpertActivation::Swiglu,
    }
}

/// Per-expert `{prefix}{e}.{gate}/{up}/{down}.weight` tensors, gate rows then up rows.
fn per_expert(
    store: &SafetensorsModel,
    prefix: &str,
    n_expert: usize,
    names: [&str; 3],
    hidden: usize,
) -> OwnedExperts {
    let (_, shape) = hf_f32(store, &format!("{prefix}0.{}.weight", names[2]));
    let mut ex = empty_experts(hidden, shape[1], "separate");
    for e in 0..n_expert {
        let mut gate_up = hf_bytes(store, &format!("{prefix}{e}.{}.weight", names[0]));
        gate_up.extend(hf_bytes(store, &format!("{prefix}{e}.{}.weight", names[1])));
        ex.gate_up.push(gate_up);
        ex.gate_up_bias.push(vec![]);
        ex.down
            .push(hf_bytes(store, &format!("{prefix}{e}.{}.weight", names[2])));
        ex.down_bias.push(vec![]);
    }
    ex
}

/// A dense gated MLP (`{prefix}gate_proj`, `up_proj`, `down_proj`, with biases if present) as one expert.
fn dense_mlp(store: &SafetensorsModel, prefix: &str, hidden: usize) -> OwnedExperts {
    let (_, shape) = hf_f32(store, &format!("{prefix}down_proj.weight"));
    let mut ex = empty_experts(hidden, shape[1], "separate");
    let bias = |n: &str| {
        store
            .tensor(&format!("{prefix}{n}.bias"))
            .map(|_| hf_f32(store, &format!("{prefix}{n}.bias")).0)
    };
    let mut gate_up = hf_bytes(store, &format!("{prefix}gate_proj.weight"));
    gate_up.extend(hf_bytes(store, &format!("{prefix}up_proj.weight")));
    ex.gate_up.push(gate_up);
    ex.gate_up_bias
        .push(match (bias("gate_proj"), bias("up_proj")) {
            (Some(mut g), Some(u)) => {
                g.extend(u);
                g
            }
            _ => vec![],
        });
    ex.down
        .push(hf_bytes(store, &format!("{prefix}down_proj.weight")));
    ex.down_bias.push(bias("down_proj").unwrap_or_default());
    ex
}

fn hf_moe_layer(
    arch: &str,
    store: &SafetensorsModel,
    layer: usize,
    n_expert: usize,
    hidden: usize,
) -> HfMoeLayer {
    let l = format!("model.layers.{layer}.");
    let w123 = ["w1", "w3", "w2"];
    let projs = ["gate_proj", "up_proj", "down_proj"];
    let simple = |block: &str, names: [&str; 3], router: &str| HfMoeLayer {
        experts: per_expert(
            store,
            &format!("{l}{block}.experts."),
            n_expert,
            names,
            hidden,
        ),
        shared: vec![],
        router: hf_bytes(store, &format!("{l}{block}.{router}.weight")),
        router_bias: None,
    };
    match arch {
        "MixtralForCausalLM"
        | "MiniMaxForCausalLM"
        | "MiniMaxM2ForCausalLM"
        | "PhimoeForCausalLM"
            if store
                .tensor(&format!("{l}block_sparse_moe.gate.weight"))
                .is_some() =>
        {
            simple("block_sparse_moe", w123, "gate")
        }
        "MixtralForCausalLM"
        | "MiniMaxForCausalLM"
        | "MiniMaxM2ForCausalLM"
        | "PhimoeForCausalLM" => simple("mlp", projs, "gate"),
        "Qwen3MoeForCausalLM" | "OlmoeForCausalLM" => simple("mlp", projs, "gate"),
        "Qwen2MoeForCausalLM" => {
            let mut m = simple("mlp", projs, "gate");
            let gate = hf_bytes(store, &format!("{l}mlp.shared_expert_gate.weight"));
            m.shared.push((
                dense_mlp(store, &format!("{l}mlp.shared_expert."), hidden),
                Some(gate),
            ));
            m
        }
        "DeepseekV2ForCausalLM"
        | "DeepseekV3ForCausalLM"
        | "Glm4MoeForCausalLM"
        | "Ernie4_5_MoeForCausalLM" => {
            let mut m = simple("mlp", projs, "gate");
            if store
                .tensor(&format!("{l}mlp.shared_experts.down_proj.weight"))
                .is_some()
            {
                m.shared.push((
                    dense_mlp(store, &format!("{l}mlp.shared_experts."), hidden),
                    None,
                ));
            }
            m
        }
        "GptOssForCausalLM" => {
            let (gate_up, gu_shape) = hf_f32(store, &format!("{l}mlp.experts.gate_up_proj"));
            let (gate_up_bias, _) = hf_f32(store, &format!("{l}mlp.experts.gate_up_proj_bias"));
            let (down, _) = hf_f32(store, &format!("{l}mlp.experts.down_proj"));
            let (down_bias, _) = hf_f32(store, &format!("{l}mlp.experts.down_proj_bias"));
            let inter = gu_shape[2] / 2;
            let mut ex = empty_experts(hidden, inter, "interleaved");
            ex.activation = ExpertActivation::GPT_OSS;
            for e in 0..n_expert {
                // Stored [in, out]; QMatrix wants [out, in].
                let gu = &gate_up[e * hidden * 2 * inter..(e + 1) * hidden * 2 * inter];
                ex.gate_up
                    .push(f32_bytes(&transpose(gu, hidden, 2 * inter)));
                ex.gate_up_bias
                    .push(gate_up_bias[e * 2 * inter..(e + 1) * 2 * inter].to_vec());
                let d = &down[e * inter * hidden..(e + 1) * inter * hidden];
                ex.down.push(f32_bytes(&transpose(d, inter, hidden)));
                ex.down_bias
                    .push(down_bias[e * hidden..(e + 1) * hidden].to_vec());
            }
            HfMoeLayer {
                experts: ex,
                shared: vec![],
                router: hf_bytes(store, &format!("{l}mlp.router.weight")),
                router_bias: Some(hf_f32(store, &format!("{l}mlp.router.bias")).0),
            }
        }
        "GraniteMoeForCausalLM" => {
            let (input, in_shape) =
                hf_f32(store, &format!("{l}block_sparse_moe.input_linear.weight"));
            let (output, _) = hf_f32(store, &format!("{l}block_sparse_moe.output_linear.weight"));
            let inter = in_shape[1] / 2;
            let mut ex = empty_experts(hidden, inter, "concatenated");
            for e in 0..n_expert {
                ex.gate_up.push(f32_bytes(
                    &input[e * 2 * inter * hidden..(e + 1) * 2 * inter * hidden],
                ));
                ex.gate_up_bias.push(vec![]);
                ex.down.push(f32_bytes(
                    &output[e * hidden * inter..(e + 1) * hidden * inter],
                ));
                ex.down_bias.push(vec![]);
            }
            HfMoeLayer {
                experts: ex,
                shared: vec![],
                router: hf_bytes(store, &format!("{l}block_sparse_moe.router.layer.weight")),
                router_bias: None,
            }
        }
        other => panic!("no MoE tensor layout for {other}"),
    }
}

#[test]
fn moe_block_matches_transformers_outputs() {
    let mut checked = Vec::new();
    for name in fixture_names() {
        let reference = reference(&name);
        let arch = reference["arch"].as_str().unwrap();
        let hidden = reference["hidden_size"].as_u64().unwrap() as usize;
        let store = SafetensorsModel::open_dir(&fixtures_dir().join(&name).join("hf")).unwrap();
        for entry in reference["moe_layers"].as_array().unwrap() {
            let layer = entry["layer"].as_u64().unwrap() as usize;
            let n_expert = entry["n_expert"].as_u64().unwrap() as usize;
            let cfg = router_config(&reference["routing"], n_expert);
            let hf = hf_moe_layer(arch, &store, layer, n_expert, hidden);
            let bias = entry.get("correction_bias").map(|f| read_f32(&name, f));
            let shared: Vec<SharedExpert<'_>> = hf
                .shared
                .iter()
                .map(|(ex, gate)| SharedExpert {
                    weights: ex.expert(0),
                    gate: gate.as_ref().map(|g| {
                        Projection::new(QMatrix {
                            dtype: DType::F32,
                            rows: 1,
                            cols: hidden,
                            data: g,
                        })
                    }),
                })
                .collect();
            let moe = MoeLayer {
                config: &cfg,
                router: Projection {
                    weight: QMatrix {
                        dtype: DType::F32,
                        rows: n_expert,
                        cols: hidden,
                        data: &hf.router,
                    },
                    bias: hf.router_bias.as_deref(),
                },
                correction_bias: bias.as_deref(),
                experts: &hf.experts,
                shared: &shared,
                activation: hf.experts.activation,
            };
            let x = read_f32(&name, &entry["moe_in"]);
            let want = read_f32(&name, &entry["moe_out"]);
            let n = x.len() / hidden;
            let mut out = vec![0.0; x.len()];
            let routing =
                moe_forward(&moe, &x, n, hidden, &mut ExpertScratch::default(), &mut out).unwrap();
            let want_ids = read_i32(&name, &entry["ids"]);
            for t in 0..n {
                let got: Vec<i32> = by_id(routing.token_ids(t), routing.token_weights(t))
                    .iter()
                    .map(|p| p.0 as i32)
                    .collect();
                assert_eq!(
                    got,
                    want_ids[t * cfg.top_k..(t + 1) * cfg.top_k],
                    "{name} layer {layer} token {t}"
                );
            }
            let max_err = out
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
                .fold(0.0f32, f32::max);
            assert!(
                max_err < 1e-4,
                "{name} layer {layer}: MoE output off by {max_err}"
            );
            // Only experts some token chose were looked up, each once.
            let mut touched = hf.experts.touched.borrow().clone();
            touched.sort();
            let mut chosen: Vec<usize> = routing.ids.iter().map(|&i| i as usize).collect();
            chosen.sort();
            chosen.dedup();
            assert_eq!(touched, chosen, "{name} layer {layer}");
        }
        checked.push(name);
    }
    assert!(checked.len() >= 10, "{checked:?}");
}

#[test]
fn router_matches_transformers_on_edge_cases() {
    let text = std::fs::read_to_string(fixtures_dir().join("router_cases.json")).unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    let floats = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    assert!(cases.len() >= 5);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let n_expert = case["n_expert"].as_u64().unwrap() as usize;
        let cfg = router_config(&case["routing"], n_expert);
        let logits = floats(&case["logits"]);
        let bias = case.get("correction_bias").map(floats);
        let want_ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let want_weights = floats(&case["weights"]);
        let n = logits.len() / n_expert;
        let got = route(&logits, n, &cfg, bias.as_deref()).unwrap();
        for t in 0..n {
            let pairs = by_id(got.token_ids(t), got.token_weights(t));
            let k = cfg.top_k;
            for (j, (id, w)) in pairs.iter().enumerate() {
                assert_eq!(*id, want_ids[t * k + j], "{name} token {t}");
                let expected = want_weights[t * k + j];
                assert!(
                    (w - expected).abs() <= 1e-6 + 1e-5 * expected.abs(),
                    "{name} token {t}: {w} vs {expected}"
                );
            }
        }
    }
}

/// Experts in GGUF's stacked layout (`[n_expert, rows, cols]` per projection) in one element type.
struct Stacked {
    dtype: DType,
    n_expert: usize,
    hidden: usize,
    inter: usize,
    gate: Vec<u8>,
    up: Vec<u8>,
    down: Vec<u8>,
}

impl ExpertSet for Stacked {
    fn n_expert(&self) -> usize {
        self.n_expert
    }

    fn expert(&self, id: usize) -> ExpertWeights<'_> {
        let (e, h, i) = (self.n_expert, self.hidden, self.inter);
        let m = |data, rows, cols| {
            Projection::new(stacked_matrix(self.dtype, e, rows, cols, data, id).unwrap())
        };
        ExpertWeights {
            gate_up: GateUp::Separate {
                gate: m(&self.gate, i, h),
                up: m(&self.up, i, h),
            },
            down: m(&self.down, h, i),
        }
    }
}

#[test]
fn stacked_quantized_experts_match_their_dequantized_values() {
    use conch_kernels::quant::{dequantize, quantize};
    let (n_expert, hidden, inter, n) = (4, 64, 32, 6);
    let mut rng = Lcg(23);
    let quantized = |len: usize, rng: &mut Lcg| {
        let values = rng.vec(len);
        let mut bytes = vec![0u8; DType::Q8_0.bytes_for(len).unwrap()];
        quantize(DType::Q8_0, &values, &mut bytes).unwrap();
        bytes
    };
    let dequantized = |bytes: &[u8]| {
        let mut values =
            vec![0f32; bytes.len() / DType::Q8_0.type_size() * DType::Q8_0.block_size()];
        dequantize(DType::Q8_0, bytes, &mut values).unwrap();
        values
    };
    let (gate, up, down) = (
        quantized(n_expert * inter * hidden, &mut rng),
        quantized(n_expert * inter * hidden, &mut rng),
        quantized(n_expert * hidden * inter, &mut rng),
    );
    let (gate_f, up_f, down_f) = (dequantized(&gate), dequantized(&up), dequantized(&down));
    let q8 = Stacked {
        dtype: DType::Q8_0,
        n_expert,
        hidden,
        inter,
        gate,
        up,
        down,
    };
    let x = rng.vec(n * hidden);
    let routing = Routing {
        top_k: 2,
        ids: vec![3, 1, 0, 3, 2, 1, 3, 0, 1, 2, 0, 3],
        weights: rng.vec(2 * n),
    };
    let mut got = vec![0f32; n * hidden];
    run_experts(
        &x,
        n,
        hidden,
        &routing,
        &q8,
        ExpertActivation::Swiglu,
        &mut ExpertScratch::default(),
        &mut got,
    )
    .unwrap();
    // Reference: expert e's matrices are the e-th [rows × cols] blocks of the dequantized stacks.
    let dot = |w: &[f32], v: &[f32]| w.iter().zip(v).map(|(a, b)| a * b).sum::<f32>();
    let mut want = vec![0f32; n * hidden];
    for t in 0..n {
        let xt = &x[t * hidden..(t + 1) * hidden];
        for k in 0..2 {
            let (e, w) = (routing.ids[t * 2 + k] as usize, routing.weights[t * 2 + k]);
            let h: Vec<f32> = (0..inter)
                .map(|i| {
                    let row = (e * inter + i) * hidden..(e * inter + i + 1) * hidden;
                    let g = dot(&gate_f[row.clone()], xt);
                    g / (1.0 + (-g).exp()) * dot(&up_f[row], xt)
                })
                .collect();
            for o in 0..hidden {
                want[t * hidden + o] += w * dot(
                    &down_f[(e * hidden + o) * inter..(e * hidden + o + 1) * inter],
                    &h,
                );
            }
        }
    }
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_err = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
    // Q8_0 products quantize the activations too (about 1e-2 relative); a wrong expert slice is O(1).
    assert!(
        max_err < 2e-2 * scale,
        "max error {max_err} for outputs up to {scale}"
    );
}
