//! Hugging Face checkpoints to llama.cpp's GGUF names and metadata, as `convert_hf_to_gguf.py` does
//! for llama, mistral, mixtral, qwen2, qwen3 and qwen3_moe: Llama-family Q/K rows permuted, per-expert
//! matrices stacked into `[n_expert, rows, cols]`, a byte-level BPE `tokenizer.json` turned into a
//! `gpt2` vocabulary.

use crate::quantize::{to_f32, PlannedTensor, Source};
use crate::synth::permute_rows_for_gguf;
use crate::ConvertError;
use conch_formats::{DType, HfModelDir, MetaValue, TensorStore};
use serde_json::Value;

pub(crate) struct HfConversion {
    dir: HfModelDir,
    arch: &'static str,
    metadata: Vec<(String, MetaValue)>,
    /// Per output tensor: its GGUF name and its source names (several for stacked experts).
    tensors: Vec<(String, Vec<String>)>,
    heads: usize,
    kv_heads: usize,
}

fn cfg_usize(config: &Value, key: &str) -> Option<usize> {
    config.get(key).and_then(Value::as_u64).map(|v| v as usize)
}

impl HfConversion {
    pub(crate) fn new(
        dir: HfModelDir,
        notes: &mut Vec<String>,
    ) -> Result<HfConversion, ConvertError> {
        let c = &dir.config;
        let path = dir.dir.join("config.json");
        let model_type = c.get("model_type").and_then(Value::as_str).unwrap_or("");
        let arch = match model_type {
            "llama" | "mistral" | "mixtral" => "llama",
            "qwen2" => "qwen2",
            "qwen3" => "qwen3",
            "qwen3_moe" => "qwen3moe",
            other => {
                return Err(ConvertError::input(
                    &path,
                    format!("model_type {other:?} cannot be converted here (supported: llama, mistral, mixtral, qwen2, qwen3, qwen3_moe); convert it to an F16 GGUF with llama.cpp's convert_hf_to_gguf.py and quantize that"),
                ))
            }
        };
        // transformers 5 writes `rope_parameters`, older versions `rope_theta` and `rope_scaling`.
        let rope = c
            .get("rope_parameters")
            .or_else(|| c.get("rope_scaling"))
            .filter(|v| !v.is_null());
        let rope_theta = rope
            .and_then(|r| r.get("rope_theta"))
            .or_else(|| c.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(10000.0);
        let rope_type = rope
            .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let linear_factor = match rope_type {
            "default" => None,
            "linear" => Some(rope.and_then(|r| r.get("factor")).and_then(Value::as_f64).ok_or_else(|| ConvertError::input(&path, "linear rope scaling without a factor"))?),
            other => {
                return Err(ConvertError::input(&path, format!("rope type {other:?} is not converted here; convert with llama.cpp's convert_hf_to_gguf.py to F16 and quantize that")))
            }
        };
        let need = |key: &str| {
            cfg_usize(c, key).ok_or_else(|| {
                ConvertError::input(&path, format!("config.json has no integer {key:?}"))
            })
        };
        let hidden = need("hidden_size")?;
        let heads = need("num_attention_heads")?;
        let kv_heads = cfg_usize(c, "num_key_value_heads").unwrap_or(heads);
        let head_dim = cfg_usize(c, "head_dim").unwrap_or(hidden / heads.max(1));
        let layers = need("num_hidden_layers")?;
        let u = |v: usize| MetaValue::U32(v as u32);
        let mut m: Vec<(String, MetaValue)> = vec![
            (
                "general.architecture".into(),
                MetaValue::String(arch.into()),
            ),
            (
                "general.name".into(),
                MetaValue::String(
                    dir.dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
            ),
        ];
        let mut a = |k: &str, v: MetaValue| m.push((format!("{arch}.{k}"), v));
        a(
            "context_length",
            u(cfg_usize(c, "max_position_embeddings").unwrap_or(4096)),
        );
        a("embedding_length", u(hidden));
        a("block_count", u(layers));
        a("feed_forward_length", u(need("intermediate_size")?));
        a("attention.head_count", u(heads));
        a("attention.head_count_kv", u(kv_heads));
        a("attention.key_length", u(head_dim));
        a("attention.value_length", u(head_dim));
        a("rope.dimension_count", u(head_dim));
        a("rope.freq_base", MetaValue::F32(rope_theta as f32));
        if let Some(factor) = linear_factor {
            a("rope.scaling.type", MetaValue::String("linear".into()));
            a("rope.scaling.factor", MetaValue::F32(factor as f32));
        }
        a(
            "attention.layer_norm_rms_epsilon",
            MetaValue::F32(
                c.get("rms_norm_eps")
                    .and_then(Value::as_f64)
                    .unwrap_or(1e-6) as f32,
            ),
        );
        if let Some(v) = cfg_usize(c, "vocab_size") {
            a("vocab_size", u(v));
        }
        let n_expert = cfg_usize(c, "num_local_experts")
            .or_else(|| cfg_usize(c, "num_experts"))
            .unwrap_or(0);
        if n_expert > 0 {
            a("expert_count", u(n_expert));
            a("expert_used_count", u(need("num_experts_per_tok")?));
            if let Some(f) = cfg_usize(c, "moe_intermediate_size") {
                a("expert_feed_forward_length", u(f));
            }
        }
        if let Some(w) = cfg_usize(c, "sliding_window")
            .filter(|_| c.get("use_sliding_window").and_then(Value::as_bool) == Some(true))
        {
            notes.push(format!(
                "sliding_window {w} is not written; llama.cpp ignores it for {arch} too"
            ));
        }
        match dir
            .tokenizer_json
            .as_deref()
            .map(|p| tokenizer_metadata(p, &dir))
        {
            Some(Ok(t)) => m.extend(t),
            Some(Err(why)) => notes.push(format!(
                "tokenizer not converted ({why}); the GGUF has no vocabulary"
            )),
            None => notes.push("no tokenizer.json; the GGUF has no vocabulary".into()),
        }
        let tensors = map_names(&dir, n_expert, layers)?;
        Ok(HfConversion {
            dir,
            arch,
            metadata: m,
            tensors,
            heads,
            kv_heads,
        })
    }
}

/// GGUF name of one non-expert tensor.
fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.into());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let gguf = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "mlp.gate" | "block_sparse_moe.gate" => "ffn_gate_inp",
        _ => return None,
    };
    Some(format!("blk.{layer}.{gguf}.{suffix}"))
}

/// Expert matrix names: (GGUF stacked name, HF name of expert `j`) for each of gate, up, down.
fn expert_names(layer: usize, j: usize, mixtral_style: bool) -> [(String, String); 3] {
    let p = if mixtral_style {
        "block_sparse_moe.experts"
    } else {
        "mlp.experts"
    };
    let parts = if mixtral_style {
        ["w1", "w3", "w2"]
    } else {
        ["gate_proj", "up_proj", "down_proj"]
    };
    let gguf = ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"];
    std::array::from_fn(|i| {
        (
            format!("blk.{layer}.{}.weight", gguf[i]),
            format!("model.layers.{layer}.{p}.{j}.{}.weight", parts[i]),
        )
    })
}

fn map_names(
    dir: &HfModelDir,
    n_expert: usize,
    layers: usize,
) -> Result<Vec<(String, Vec<String>)>, ConvertError> {
    let names = dir.weights.tensor_names();
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut expert_sources = std::collections::HashSet::new();
    if n_expert > 0 {
        let mixtral_style = names.iter().any(|n| n.contains("block_sparse_moe"));
        for layer in 0..layers {
            let per_expert: Vec<[(String, String); 3]> = (0..n_expert)
                .map(|j| expert_names(layer, j, mixtral_style))
                .collect();
            for part in 0..3 {
                let sources: Vec<String> = per_expert.iter().map(|e| e[part].1.clone()).collect();
                if let Some(missing) = sources.iter().find(|s| !names.contains(s)) {
                    return Err(ConvertError::input(&dir.dir, format!("expert tensor {missing:?} is missing (stacked expert checkpoints are not converted here)")));
                }
                expert_sources.extend(sources.iter().cloned());
                out.push((per_expert[0][part].0.clone(), sources));
            }
        }
    }
    for name in &names {
        if expert_sources.contains(name) || name.ends_with("rotary_emb.inv_freq") {
            continue;
        }
        let gguf = gguf_name(name).ok_or_else(|| {
            ConvertError::input(&dir.dir, format!("tensor {name:?} has no GGUF name here"))
        })?;
        out.push((gguf, vec![name.clone()]));
    }
    out.sort_by_key(|(g, _)| order_key(g));
    Ok(out)
}

/// token_embd first, then layers in order, then the output tensors (llama.cpp's converter order).
fn order_key(name: &str) -> (usize, usize, String) {
    match name.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
        Some((layer, rest)) => (1, layer.parse().unwrap_or(usize::MAX), rest.to_string()),
        None if name.starts_with("token_embd") => (0, 0, name.into()),
        None => (2, 0, name.into()),
    }
}

impl Source for HfConversion {
    fn metadata(&self) -> Vec<(String, MetaValue)> {
        self.metadata.clone()
    }

    fn plan(&self) -> Result<Vec<PlannedTensor>, ConvertError> {
        self.tensors
            .iter()
            .map(|(gguf, sources)| {
                let first =
                    self.dir.weights.tensor(&sources[0]).ok_or_else(|| {
                        ConvertError::tensor(&sources[0], "listed but unreadable")
                    })?;
                let mut shape = first.shape.clone();
                if sources.len() > 1 {
                    shape.insert(0, sources.len());
                }
                // Norms, biases and the router are F32 in GGUF, as convert_hf_to_gguf.py writes them.
                let from = if shape.len() < 2 || gguf.contains("ffn_gate_inp") {
                    DType::F32
                } else {
                    first.dtype
                };
                Ok(PlannedTensor {
                    name: gguf.clone(),
                    shape,
                    from,
                })
            })
            .collect()
    }

    fn load(&self, index: usize) -> Result<(Vec<f32>, Option<Vec<u8>>), ConvertError> {
        let (gguf, sources) = &self.tensors[index];
        let mut values = Vec::new();
        let mut shape = Vec::new();
        for s in sources {
            let t = self
                .dir
                .weights
                .tensor(s)
                .ok_or_else(|| ConvertError::tensor(s, "listed but unreadable"))?;
            if !shape.is_empty() && shape != t.shape {
                return Err(ConvertError::tensor(
                    s,
                    format!(
                        "shape {:?} differs from the other experts' {shape:?}",
                        t.shape
                    ),
                ));
            }
            shape = t.shape.clone();
            values.extend(to_f32(&t)?);
        }
        if self.arch == "llama" && shape.len() == 2 {
            let heads = if gguf.ends_with("attn_q.weight") {
                Some(self.heads)
            } else if gguf.ends_with("attn_k.weight") {
                Some(self.kv_heads)
            } else {
                None
            };
            if let Some(h) = heads {
                if shape[0] % (2 * h) != 0 {
                    return Err(ConvertError::tensor(
                        gguf,
                        format!("{} rows do not split into {h} heads of even size", shape[0]),
                    ));
                }
                values = permute_rows_for_gguf(&values, h, shape[1]);
            }
        }
        Ok((values, None))
    }
}

/// `tokenizer.ggml.*` for a byte-level BPE tokenizer.json.
fn tokenizer_metadata(
    path: &std::path::Path,
    dir: &HfModelDir,
) -> Result<Vec<(String, MetaValue)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let json: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let model = &json["model"];
    if model["type"].as_str() != Some("BPE") || model["byte_fallback"].as_bool() == Some(true) {
        return Err("only byte-level BPE tokenizers are converted".into());
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or("model.vocab is not an object")?;
    let mut tokens: Vec<Option<String>> = Vec::new();
    let mut types: Vec<i32> = Vec::new();
    let mut put = |tokens: &mut Vec<Option<String>>, id: usize, tok: &str, ty: i32| {
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
            types.resize(id + 1, 1);
        }
        tokens[id] = Some(tok.to_string());
        types[id] = ty;
    };
    for (tok, id) in vocab {
        put(
            &mut tokens,
            id.as_u64().ok_or("vocab id is not an integer")? as usize,
            tok,
            1,
        );
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let id = added["id"].as_u64().ok_or("added token without id")? as usize;
        let content = added["content"]
            .as_str()
            .ok_or("added token without content")?;
        put(
            &mut tokens,
            id,
            content,
            if added["special"].as_bool() == Some(true) {
                3
            } else {
                4
            },
        );
    }
    if let Some(n) = cfg_usize(&dir.config, "vocab_size") {
        if n > tokens.len() {
            tokens.resize(n, None);
            types.resize(n, 1);
        }
    }
    // Unused ids become padding tokens, as the converter writes them.
    let tokens: Vec<MetaValue> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| MetaValue::String(t.unwrap_or_else(|| format!("[PAD{i}]"))))
        .collect();
    for (ty, tok) in types.iter_mut().zip(&tokens) {
        if tok.as_str().is_some_and(|s| s.starts_with("[PAD")) && *ty == 1 {
            *ty = 5;
        }
    }
    let merges: Vec<MetaValue> = model["merges"]
        .as_array()
        .ok_or("model.merges is not a list")?
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(pair) if pair.len() == 2 => Ok(format!(
                "{} {}",
                pair[0].as_str().unwrap_or(""),
                pair[1].as_str().unwrap_or("")
            )),
            _ => Err("a merge is neither \"a b\" nor [a, b]".to_string()),
        })
        .map(|r| r.map(MetaValue::String))
        .collect::<Result<_, _>>()?;
    let pre = pre_tokenizer_name(&json["pre_tokenizer"])?;
    let mut m = vec![
        (
            "tokenizer.ggml.model".to_string(),
            MetaValue::String("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".into(), MetaValue::String(pre.into())),
        ("tokenizer.ggml.tokens".into(), MetaValue::Array(tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            MetaValue::Array(types.into_iter().map(MetaValue::I32).collect()),
        ),
        ("tokenizer.ggml.merges".into(), MetaValue::Array(merges)),
    ];
    for (key, gguf) in [
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
        ("pad_token_id", "tokenizer.ggml.padding_token_id"),
    ] {
        let id = dir
            .config
            .get(key)
            .and_then(|v| v.as_u64().or_else(|| v.as_array()?.first()?.as_u64()));
        if let Some(id) = id {
            m.push((gguf.into(), MetaValue::U32(id as u32)));
        }
    }
    if let Some(t) = dir
        .tokenizer_config
        .as_ref()
        .and_then(|c| c.get("chat_template"))
        .and_then(Value::as_str)
    {
        m.push((
            "tokenizer.chat_template".into(),
            MetaValue::String(t.into()),
        ));
    }
    Ok(m)
}

/// llama.cpp's name for a tokenizer.json pre-tokenizer (its converter recognises them by hashing
/// their output; here by the split pattern): plain byte-level is GPT-2's, and the two common
/// patterns differ in how digits group (one at a time: Qwen2; up to three: Llama 3).
fn pre_tokenizer_name(pre: &Value) -> Result<&'static str, String> {
    let mut patterns = Vec::new();
    let mut byte_level_regex = false;
    let steps = match pre["type"].as_str() {
        Some("Sequence") => pre["pretokenizers"].as_array().cloned().unwrap_or_default(),
        _ => vec![pre.clone()],
    };
    for step in &steps {
        match step["type"].as_str() {
            Some("Split") => {
                patterns.push(step["pattern"]["Regex"].as_str().unwrap_or("").to_string())
            }
            Some("ByteLevel") => byte_level_regex |= step["use_regex"].as_bool().unwrap_or(true),
            other => return Err(format!("pre-tokenizer step {other:?} is not recognised")),
        }
    }
    match patterns.as_slice() {
        [] if byte_level_regex => Ok("gpt-2"),
        [p] if !byte_level_regex && p.contains(r"\p{N}{1,3}") => Ok("llama-bpe"),
        [p] if !byte_level_regex && p.contains(r"\p{N}|") => Ok("qwen2"),
        _ => Err(format!(
            "pre-tokenizer split {patterns:?} is not one llama.cpp names here"
        )),
    }
}
