//! quantize and synth against independent references: transformers' logits of the committed HF
//! fixtures, the `gguf` Python package's Q8_0/Q4_0 bytes, and parameter counts worked out by hand.

use conch_convert::{
    find_preset, quantize, synth, ConvertError, QuantizeOptions, SynthFormat, SynthOptions,
};
use conch_formats::{DType, GgufFile, GgufWriter, HfModelDir, MetaValue, TensorStore};
use conch_models::{load_gguf, load_hf, ExpertCounts, Model};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh scratch directory per test (tests run in parallel).
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("conch-convert-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn logits(model: &dyn Model, tokens: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(tokens.len());
    model.forward(tokens, &mut cache, true).unwrap()
}

fn gguf_logits(path: &Path, tokens: &[u32]) -> Vec<f32> {
    let file = GgufFile::open(path).unwrap();
    logits(load_gguf(&file).unwrap().as_ref(), tokens)
}

/// ‖a − b‖ / ‖b‖.
fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let diff: f32 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let norm: f32 = b.iter().map(|y| y * y).sum();
    (diff / norm).sqrt()
}

fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

fn synth_f32(arch: &str, out: &Path, seed: u64, format: SynthFormat) {
    synth(
        arch,
        "tiny",
        out,
        &SynthOptions {
            seed,
            format,
            dtype: DType::F32,
        },
    )
    .unwrap();
}

#[test]
fn synth_tiny_presets_load_in_conch_with_expected_parameter_counts() {
    let dir = scratch("load");
    for arch in ["qwen3", "qwen3moe", "mixtral"] {
        let p = find_preset(arch, "tiny").unwrap();
        let path = dir.join(format!("{arch}.gguf"));
        let report = synth(arch, "tiny", &path, &SynthOptions::default()).unwrap();
        // Worked out from the shape: embeddings + output, per layer attention, norms and FFN.
        let (h, q, kv) = (p.hidden, p.heads * p.head_dim, p.kv_heads * p.head_dim);
        let attention = h * q * 2 + h * kv * 2 + if arch == "mixtral" { 0 } else { 2 * p.head_dim };
        let (ffn_total, ffn_active) = if p.n_expert == 0 {
            (3 * h * p.ffn, 3 * h * p.ffn)
        } else {
            (
                p.n_expert * 3 * h * p.ffn + p.n_expert * h,
                p.n_expert_used * 3 * h * p.ffn + p.n_expert * h,
            )
        };
        let fixed = 2 * p.vocab * h + h;
        let per_layer = attention + 2 * h;
        assert_eq!(
            report.params.total,
            (fixed + p.layers * (per_layer + ffn_total)) as u64,
            "{arch}"
        );
        assert_eq!(
            report.params.active,
            (fixed + p.layers * (per_layer + ffn_active)) as u64,
            "{arch}"
        );

        let file = GgufFile::open(&path).unwrap();
        let in_file: usize = file
            .tensors()
            .iter()
            .map(|t| t.shape.iter().product::<usize>())
            .sum();
        assert_eq!(in_file as u64, report.params.total);
        let model = load_gguf(&file).unwrap();
        let out = logits(model.as_ref(), &tokens(12, p.vocab));
        assert_eq!(out.len(), 12 * p.vocab);
        assert!(out.iter().all(|x| x.is_finite()));
        let tokenizer = conch_tokenizer::Tokenizer::from_gguf(&file).unwrap();
        let ids = tokenizer
            .encode("hello world, the cat", false, false)
            .unwrap();
        assert!(ids.len() < 20, "merges should shorten text: {ids:?}");
        assert_eq!(tokenizer.decode(&ids, false), "hello world, the cat");
    }
}

#[test]
fn synth_is_deterministic_per_seed() {
    let dir = scratch("seed");
    let (a, b, c) = (dir.join("a.gguf"), dir.join("b.gguf"), dir.join("c.gguf"));
    synth_f32("qwen3moe", &a, 7, SynthFormat::Gguf);
    synth_f32("qwen3moe", &b, 7, SynthFormat::Gguf);
    synth_f32("qwen3moe", &c, 8, SynthFormat::Gguf);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
    let (d, e) = (dir.join("d"), dir.join("e"));
    synth_f32("mixtral", &d, 7, SynthFormat::Safetensors);
    synth_f32("mixtral", &e, 7, SynthFormat::Safetensors);
    for f in ["model.safetensors", "config.json", "tokenizer.json"] {
        assert_eq!(
            std::fs::read(d.join(f)).unwrap(),
            std::fs::read(e.join(f)).unwrap(),
            "{f}"
        );
    }
}

/// The safetensors directory is the same model in transformers' naming (Llama Q/K rows in HF order,
/// experts one tensor each): Conch must compute the same logits from both.
#[test]
fn synth_safetensors_and_gguf_are_the_same_model() {
    let dir = scratch("formats");
    for arch in ["mixtral", "qwen3moe", "qwen3"] {
        let gguf = dir.join(format!("{arch}.gguf"));
        let hf = dir.join(arch);
        synth_f32(arch, &gguf, 3, SynthFormat::Gguf);
        synth_f32(arch, &hf, 3, SynthFormat::Safetensors);
        let vocab = find_preset(arch, "tiny").unwrap().vocab;
        let toks = tokens(10, vocab);
        let from_hf = logits(
            load_hf(&HfModelDir::open(&hf).unwrap()).unwrap().as_ref(),
            &toks,
        );
        let err = relative_error(&gguf_logits(&gguf, &toks), &from_hf);
        assert!(err < 1e-5, "{arch}: {err}");
        // The GGUF vocabulary (Conch's llama.cpp-style tokenizer) and tokenizer.json (the
        // `tokenizers` crate) must split text alike: digits, contractions, punctuation, non-ASCII.
        let text = "Hello world,the 2024 cats SAT'S!\n  \u{dc}n\u{ef}code ok";
        let g = conch_tokenizer::Tokenizer::from_gguf(&GgufFile::open(&gguf).unwrap()).unwrap();
        let h = conch_tokenizer::Tokenizer::from_hf_dir(&hf).unwrap();
        assert_eq!(
            g.encode(text, false, false).unwrap(),
            h.encode(text, false, false).unwrap(),
            "{arch}"
        );
    }
}

/// Random routers must spread tokens over all experts roughly evenly.
#[test]
fn synth_moe_routes_tokens_evenly() {
    let dir = scratch("spread");
    for arch in ["qwen3moe", "mixtral"] {
        let path = dir.join(format!("{arch}.gguf"));
        synth(
            arch,
            "tiny",
            &path,
            &SynthOptions {
                seed: 11,
                ..Default::default()
            },
        )
        .unwrap();
        let p = find_preset(arch, "tiny").unwrap();
        let file = GgufFile::open(&path).unwrap();
        let model = load_gguf(&file).unwrap();
        let toks = tokens(300, p.vocab);
        let mut counts = ExpertCounts::default();
        let mut cache = model.new_cache(toks.len());
        model
            .forward_observed(&toks, &mut cache, false, &mut counts)
            .unwrap();
        assert_eq!(counts.counts.len(), p.layers);
        for (layer, row) in counts.counts.iter().enumerate() {
            let total: u64 = row.iter().sum();
            assert_eq!(total as usize, toks.len() * p.n_expert_used);
            let fair = total as f64 / p.n_expert as f64;
            assert_eq!(
                row.len(),
                p.n_expert,
                "{arch} layer {layer}: an expert never chosen"
            );
            for (e, &c) in row.iter().enumerate() {
                assert!(
                    (0.4 * fair..=2.0 * fair).contains(&(c as f64)),
                    "{arch} layer {layer} expert {e}: {c} of {total}"
                );
            }
        }
    }
}

/// Quantized copies of a random model against the F32 original, run by Conch. A type's relative RMS
/// weight error on Gaussian weights is about 0.5% (Q8_0), 2% (Q6_K), 5% (Q4_K) and 7% (Q4_0); Conch's
/// matmuls also round activations to 8 bits, and errors of the ~8 matrix products on a token's path add
/// up, so the logits may drift by a few times the weight error but no more.
#[test]
fn quantized_synth_model_stays_close_to_f32() {
    let dir = scratch("quant");
    let f32_path = dir.join("f32.gguf");
    synth_f32("qwen3", &f32_path, 5, SynthFormat::Gguf);
    let p = find_preset("qwen3", "tiny").unwrap();
    let toks = tokens(16, p.vocab);
    let reference = gguf_logits(&f32_path, &toks);
    for (target, bound) in [
        (DType::Q8_0, 0.025),
        (DType::Q6_K, 0.08),
        (DType::Q4_K, 0.2),
        (DType::Q4_0, 0.25),
    ] {
        let out = dir.join(format!("{target}.gguf"));
        let report = quantize(&f32_path, &out, target, &QuantizeOptions::default()).unwrap();
        let file = GgufFile::open(&out).unwrap();
        for t in file.tensors() {
            let expected = if t.shape.len() == 1 {
                DType::F32
            } else if t.name == "output.weight" && target != DType::Q8_0 {
                DType::Q6_K
            } else if t.name.ends_with("attn_v.weight") && target == DType::Q4_K {
                DType::Q5_K // Q4_K_S: V of the first four layers
            } else {
                target
            };
            assert_eq!(t.dtype, expected, "{target} {}", t.name);
        }
        assert!(report.bytes_out < report.bytes_in / 3);
        let err = relative_error(&gguf_logits(&out, &toks), &reference);
        assert!(err < bound, "{target}: relative logits error {err}");
        assert!(err > 0.0, "{target}: nothing was quantized");
    }
}

/// Hugging Face directories converted by quantize: every tensor must come out exactly as when the
/// F32 GGUF of llama.cpp's own converter (committed beside each fixture) is quantized, and the logits
/// must stay near transformers'. Hidden sizes of 32 and 64 quantize nearly every matrix; 48 makes
/// most rows fall back to F16. Through these random tiny models a 0.5% Q8_0 weight error grows to
/// about 3% of the logits, so 6% is the bound.
#[test]
fn quantized_hf_fixtures_match_llama_cpp_converter_and_transformers() {
    let dir = scratch("hf");
    for fixture in [
        "models/qwen3",
        "models/qwen2",
        "models/llama_tied",
        "models/llama_rope_linear",
        "moe/mixtral",
        "moe/qwen3_moe",
    ] {
        let root = repo().join("fixtures").join(fixture);
        let reference: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("reference.json")).unwrap()).unwrap();
        let toks: Vec<u32> = reference["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let expected = read_f32(&root.join("logits.f32"));
        let name = fixture.replace('/', "_");
        let (from_hf, from_gguf) = (
            dir.join(format!("{name}.hf.gguf")),
            dir.join(format!("{name}.gguf.gguf")),
        );
        let report = quantize(
            &root.join("hf"),
            &from_hf,
            DType::Q8_0,
            &QuantizeOptions::default(),
        )
        .unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("hf/config.json")).unwrap()).unwrap();
        let quantizable = config["hidden_size"].as_u64().unwrap() % 32 == 0;
        assert_eq!(
            report.tensors.iter().any(|t| t.to == DType::Q8_0),
            quantizable,
            "{fixture}"
        );
        quantize(
            &root.join("model.gguf"),
            &from_gguf,
            DType::Q8_0,
            &QuantizeOptions::default(),
        )
        .unwrap();
        let (a, b) = (
            GgufFile::open(&from_hf).unwrap(),
            GgufFile::open(&from_gguf).unwrap(),
        );
        let mut names_a = a.tensor_names();
        let mut names_b = b.tensor_names();
        names_a.sort();
        names_b.sort();
        assert_eq!(names_a, names_b, "{fixture}");
        for n in &names_a {
            let (x, y) = (a.tensor(n).unwrap(), b.tensor(n).unwrap());
            assert_eq!((x.dtype, &x.shape), (y.dtype, &y.shape), "{fixture} {n}");
            assert!(x.data[..] == y.data[..], "{fixture} {n}: bytes differ");
        }
        if root.join("hf/tokenizer.json").exists() {
            for key in [
                "model",
                "pre",
                "tokens",
                "merges",
                "token_type",
                "bos_token_id",
                "eos_token_id",
            ] {
                let key = format!("tokenizer.ggml.{key}");
                assert_eq!(a.get(&key), b.get(&key), "{fixture} {key}");
            }
        }
        let err = relative_error(&gguf_logits(&from_hf, &toks), &expected);
        assert!(err < 0.06, "{fixture}: relative logits error {err}");
    }
}

fn write_single_tensor_gguf(path: &Path, name: &str, values: &[f32], shape: &[usize]) {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", MetaValue::String("llama".into()))
        .unwrap();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    w.add_tensor(name, DType::F32, shape, bytes).unwrap();
    w.write(path).unwrap();
}

/// Bytes the `gguf` Python package wrote for the same input (fixtures/quant, tools/gen_quant_fixtures.py).
#[test]
fn legacy_quantization_matches_gguf_python() {
    let dir = scratch("gguf_py");
    for target in [DType::Q8_0, DType::Q4_0] {
        let quant = repo().join("fixtures/quant");
        let input = read_f32(&quant.join(format!("{target}.quant_in.f32.bin")));
        let expected = std::fs::read(quant.join(format!("{target}.quant_out.bin"))).unwrap();
        let (src, out) = (
            dir.join(format!("{target}.in.gguf")),
            dir.join(format!("{target}.out.gguf")),
        );
        write_single_tensor_gguf(&src, "blk.0.ffn_up.weight", &input, &[input.len() / 64, 64]);
        quantize(&src, &out, target, &QuantizeOptions::default()).unwrap();
        let file = GgufFile::open(&out).unwrap();
        let t = file.tensor("blk.0.ffn_up.weight").unwrap();
        assert_eq!(t.dtype, target);
        assert_eq!(&t.data[..], &expected[..], "{target}");
        assert_eq!(
            file.get_u64("general.file_type"),
            Some(if target == DType::Q8_0 { 7 } else { 2 })
        );
    }
}

#[test]
fn rows_that_do_not_fill_blocks_fall_back_like_llama_quantize() {
    let dir = scratch("fallback");
    let cases = [
        (DType::Q4_K, 64, DType::Q5_0),
        (DType::Q6_K, 96, DType::Q8_0),
        (DType::Q4_K, 48, DType::F16),
        (DType::Q8_0, 48, DType::F16),
    ];
    for (target, row, expected) in cases {
        let (src, out) = (
            dir.join("in.gguf"),
            dir.join(format!("{target}-{row}.gguf")),
        );
        let values: Vec<f32> = (0..row * 4).map(|i| (i as f32 * 0.37).sin()).collect();
        write_single_tensor_gguf(&src, "blk.0.ffn_down.weight", &values, &[4, row]);
        quantize(&src, &out, target, &QuantizeOptions::default()).unwrap();
        let file = GgufFile::open(&out).unwrap();
        assert_eq!(
            file.tensor("blk.0.ffn_down.weight").unwrap().dtype,
            expected,
            "{target} rows of {row}"
        );
    }
}

/// llama-quantize keeps K and V of 8-expert models at Q8_0 and, for Q4_K_S, their attention output at Q5_K.
#[test]
fn eight_expert_models_get_llama_quantize_exceptions() {
    let dir = scratch("experts");
    let src = dir.join("moe.gguf");
    synth_f32("qwen3moe", &src, 2, SynthFormat::Gguf);
    assert_eq!(find_preset("qwen3moe", "tiny").unwrap().n_expert, 8);
    let out = dir.join("q4_0.gguf");
    let report = quantize(&src, &out, DType::Q4_0, &QuantizeOptions::default()).unwrap();
    let type_of = |name: &str| report.tensors.iter().find(|t| t.name == name).unwrap().to;
    assert_eq!(type_of("blk.1.attn_k.weight"), DType::Q8_0);
    assert_eq!(type_of("blk.1.attn_v.weight"), DType::Q8_0);
    assert_eq!(type_of("blk.1.attn_q.weight"), DType::Q4_0);
    assert_eq!(type_of("blk.1.ffn_up_exps.weight"), DType::Q4_0);
    assert_eq!(type_of("blk.1.ffn_gate_inp.weight"), DType::F32);
    let pure = quantize(&src, &out, DType::Q4_0, &QuantizeOptions { pure: true }).unwrap();
    assert!(pure
        .tensors
        .iter()
        .filter(|t| t.shape.len() > 1 && !t.name.contains("gate_inp"))
        .all(|t| t.to == DType::Q4_0));
    // Q4_K_S wants Q5_K for attention output; rows of 64 cannot hold it, so it falls back to Q5_1.
    let report = quantize(&src, &out, DType::Q4_K, &QuantizeOptions::default()).unwrap();
    assert_eq!(
        report
            .tensors
            .iter()
            .find(|t| t.name == "blk.0.attn_output.weight")
            .unwrap()
            .to,
        DType::Q5_1
    );
}

#[test]
fn bad_input_gives_clear_errors() {
    let dir = scratch("errors");
    let msg = |e: ConvertError| e.to_string();
    let out = dir.join("x.gguf");
    let e = msg(synth("qwen3moe", "huge", &out, &SynthOptions::default()).unwrap_err());
    assert!(
        e.contains("huge") && e.contains("qwen3moe-1.3b-a0.25b"),
        "{e}"
    );
    let e = msg(synth("gpt9", "tiny", &out, &SynthOptions::default()).unwrap_err());
    assert!(e.contains("gpt9"), "{e}");
    let e = msg(synth(
        "qwen3",
        "tiny",
        &out,
        &SynthOptions {
            dtype: DType::Q4_0,
            ..Default::default()
        },
    )
    .unwrap_err());
    assert!(e.contains("Q4_0"), "{e}");
    let missing = dir.join("no-such-model");
    let e = msg(quantize(&missing, &out, DType::Q8_0, &QuantizeOptions::default()).unwrap_err());
    assert!(e.contains("no-such-model"), "{e}");
    let f32_path = dir.join("f32.gguf");
    synth_f32("qwen3", &f32_path, 1, SynthFormat::Gguf);
    let e = msg(quantize(&f32_path, &out, DType::Q5_1, &QuantizeOptions::default()).unwrap_err());
    assert!(e.contains("Q5_1"), "{e}");
    let q = dir.join("q.gguf");
    quantize(&f32_path, &q, DType::Q8_0, &QuantizeOptions::default()).unwrap();
    let e = msg(quantize(&q, &out, DType::Q4_0, &QuantizeOptions::default()).unwrap_err());
    assert!(e.contains("already Q8_0"), "{e}");
    let e = msg(quantize(
        &repo().join("fixtures/models/gemma3/hf"),
        &out,
        DType::Q8_0,
        &QuantizeOptions::default(),
    )
    .unwrap_err());
    assert!(e.contains("gemma3"), "{e}");
    let garbage = dir.join("garbage.gguf");
    std::fs::write(&garbage, b"not a gguf file").unwrap();
    assert!(quantize(&garbage, &out, DType::Q8_0, &QuantizeOptions::default()).is_err());
}
