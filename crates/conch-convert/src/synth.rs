//! Random-weight models of realistic shape, written as GGUF or as a Hugging Face directory.
//!
//! Weights are scaled like a trained model's so activations stay in range over many layers and a
//! router spreads tokens roughly evenly over experts: matrices ~N(0, 1/fan_in), the projections back
//! into the residual stream (attention output, FFN down) further divided by sqrt(2 · layers) as in
//! GPT-2's initialisation, embeddings ~N(0, 1), norm weights 1.

use crate::rng::Rng;
use crate::vocab::{SynthVocab, MIN_VOCAB};
use crate::writer::{GgufStreamWriter, SafetensorsStreamWriter, TensorSpec};
use crate::ConvertError;
use conch_formats::{DType, MetaValue};
use std::path::{Path, PathBuf};

/// Token embeddings of unit variance: each token's own vector, not the running average attention
/// adds, then dominates what the first routers see, so tokens spread over experts (with the small
/// embeddings of some trained models, random routers send most tokens to the same few experts).
const EMBEDDING_STD: f32 = 1.0;

/// An architecture [`synth`] can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynthArch {
    /// Dense Qwen3 (`qwen3` in GGUF).
    Qwen3,
    /// Qwen3 mixture of experts (`qwen3moe`).
    Qwen3Moe,
    /// Mixtral: GGUF architecture `llama` with experts, Q/K rows permuted as llama.cpp's converter does.
    Mixtral,
}

impl SynthArch {
    pub fn from_name(name: &str) -> Result<SynthArch, ConvertError> {
        match name {
            "qwen3" => Ok(SynthArch::Qwen3),
            "qwen3moe" | "qwen3_moe" => Ok(SynthArch::Qwen3Moe),
            "mixtral" => Ok(SynthArch::Mixtral),
            other => Err(ConvertError::UnknownArch(other.into())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SynthArch::Qwen3 => "qwen3",
            SynthArch::Qwen3Moe => "qwen3moe",
            SynthArch::Mixtral => "mixtral",
        }
    }

    fn gguf_arch(self) -> &'static str {
        match self {
            SynthArch::Mixtral => "llama",
            other => other.name(),
        }
    }

    fn is_moe(self) -> bool {
        self != SynthArch::Qwen3
    }
}

/// A model shape. For MoE presets `ffn` is each expert's intermediate size.
#[derive(Clone, Debug, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub arch: SynthArch,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    /// 0 for dense models.
    pub n_expert: usize,
    pub n_expert_used: usize,
    pub vocab: usize,
    pub context: usize,
}

/// Every preset. `tiny` exists for each architecture, for tests.
pub fn presets() -> Vec<Preset> {
    use SynthArch::*;
    #[allow(clippy::too_many_arguments)]
    let p = |name,
             arch,
             hidden,
             layers,
             heads,
             kv_heads,
             head_dim,
             ffn,
             n_expert,
             n_expert_used,
             vocab,
             context| Preset {
        name,
        arch,
        hidden,
        layers,
        heads,
        kv_heads,
        head_dim,
        ffn,
        n_expert,
        n_expert_used,
        vocab,
        context,
    };
    vec![
        p(
            "qwen3moe-1.3b-a0.25b",
            Qwen3Moe,
            1024,
            24,
            16,
            4,
            64,
            256,
            64,
            8,
            32000,
            4096,
        ),
        // Same attention and embeddings; one FFN as wide as the 8 active experts together.
        p(
            "qwen3-dense-0.25b",
            Qwen3,
            1024,
            24,
            16,
            4,
            64,
            2048,
            0,
            0,
            32000,
            4096,
        ),
        // Qwen3-1.7B-like width with the FFN sized so the total matches the MoE preset.
        p(
            "qwen3-dense-1.3b",
            Qwen3,
            2048,
            24,
            16,
            8,
            128,
            6144,
            0,
            0,
            32000,
            4096,
        ),
        p(
            "mixtral-1.1b-a0.4b",
            Mixtral,
            1024,
            24,
            16,
            4,
            64,
            1664,
            8,
            2,
            32000,
            4096,
        ),
        p("tiny", Qwen3Moe, 64, 2, 4, 2, 16, 32, 8, 2, 320, 512),
        // Wide enough (256) for K-quant blocks, so tests can quantize it.
        p("tiny", Qwen3, 256, 2, 4, 2, 64, 512, 0, 0, 320, 512),
        p("tiny", Mixtral, 64, 2, 4, 2, 16, 64, 4, 2, 320, 512),
    ]
}

/// The container [`synth`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynthFormat {
    /// One GGUF file with the tokenizer in its metadata.
    Gguf,
    /// A Hugging Face directory: `model.safetensors`, `config.json`, `tokenizer.json`, `tokenizer_config.json`.
    Safetensors,
}

#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub seed: u64,
    pub format: SynthFormat,
    /// F32, F16 or BF16 for the matrices; norms and routers are always F32 in GGUF.
    pub dtype: DType,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            seed: 0,
            format: SynthFormat::Gguf,
            dtype: DType::F16,
        }
    }
}

/// Parameter counts: `active` counts only `n_expert_used` experts per layer; both include the
/// embedding and output matrices (`embedding` is each one's size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamCounts {
    pub total: u64,
    pub active: u64,
    pub embedding: u64,
}

#[derive(Clone, Debug)]
pub struct SynthReport {
    pub preset: Preset,
    pub params: ParamCounts,
    pub files: Vec<PathBuf>,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug)]
enum Init {
    Normal(f32),
    Ones,
}

/// One generated tensor: its GGUF name and shape, and its Hugging Face names (one per expert when
/// GGUF stacks experts along the outermost dimension).
struct SynthTensor {
    gguf: String,
    hf: Vec<String>,
    shape: Vec<usize>,
    init: Init,
    /// Heads whose rows llama.cpp's converter interleaves (Llama-family Q and K).
    permute_heads: Option<usize>,
    is_expert: bool,
}

impl Preset {
    fn validate(&self) -> Result<(), String> {
        if self.vocab < MIN_VOCAB {
            return Err(format!(
                "vocab {} is below the tokenizer's minimum {MIN_VOCAB}",
                self.vocab
            ));
        }
        if self.heads % self.kv_heads.max(1) != 0 || self.head_dim % 2 != 0 {
            return Err("heads must be a multiple of kv_heads and head_dim even".into());
        }
        Ok(())
    }

    fn tensors(&self) -> Vec<SynthTensor> {
        let (h, l) = (self.hidden, self.layers);
        let q_dim = self.heads * self.head_dim;
        let kv_dim = self.kv_heads * self.head_dim;
        let residual_scale = 1.0 / ((2 * l) as f32).sqrt();
        let matrix = |fan_in: usize| Init::Normal(1.0 / (fan_in as f32).sqrt());
        let out_matrix = |fan_in: usize| Init::Normal(residual_scale / (fan_in as f32).sqrt());
        let t = |gguf: String, hf: String, shape: Vec<usize>, init| SynthTensor {
            gguf,
            hf: vec![hf],
            shape,
            init,
            permute_heads: None,
            is_expert: false,
        };
        let llama_names = self.arch == SynthArch::Mixtral;
        let mut v = vec![t(
            "token_embd.weight".into(),
            "model.embed_tokens.weight".into(),
            vec![self.vocab, h],
            Init::Normal(EMBEDDING_STD),
        )];
        for i in 0..l {
            let g = |n: &str| format!("blk.{i}.{n}.weight");
            let f = |n: &str| format!("model.layers.{i}.{n}.weight");
            v.push(t(g("attn_norm"), f("input_layernorm"), vec![h], Init::Ones));
            let mut q = t(
                g("attn_q"),
                f("self_attn.q_proj"),
                vec![q_dim, h],
                matrix(h),
            );
            let mut k = t(
                g("attn_k"),
                f("self_attn.k_proj"),
                vec![kv_dim, h],
                matrix(h),
            );
            if llama_names {
                q.permute_heads = Some(self.heads);
                k.permute_heads = Some(self.kv_heads);
            }
            v.push(q);
            v.push(k);
            v.push(t(
                g("attn_v"),
                f("self_attn.v_proj"),
                vec![kv_dim, h],
                matrix(h),
            ));
            v.push(t(
                g("attn_output"),
                f("self_attn.o_proj"),
                vec![h, q_dim],
                out_matrix(q_dim),
            ));
            if !llama_names {
                v.push(t(
                    g("attn_q_norm"),
                    f("self_attn.q_norm"),
                    vec![self.head_dim],
                    Init::Ones,
                ));
                v.push(t(
                    g("attn_k_norm"),
                    f("self_attn.k_norm"),
                    vec![self.head_dim],
                    Init::Ones,
                ));
            }
            v.push(t(
                g("ffn_norm"),
                f("post_attention_layernorm"),
                vec![h],
                Init::Ones,
            ));
            if self.arch.is_moe() {
                let e = self.n_expert;
                let (router, expert, [gate, down, up]) = if llama_names {
                    (
                        "block_sparse_moe.gate",
                        "block_sparse_moe.experts",
                        ["w1", "w2", "w3"],
                    )
                } else {
                    (
                        "mlp.gate",
                        "mlp.experts",
                        ["gate_proj", "down_proj", "up_proj"],
                    )
                };
                v.push(t(g("ffn_gate_inp"), f(router), vec![e, h], matrix(h)));
                let experts = |gguf: &str, hf: &str, rows, cols, init| SynthTensor {
                    gguf: g(gguf),
                    hf: (0..e).map(|j| f(&format!("{expert}.{j}.{hf}"))).collect(),
                    shape: vec![e, rows, cols],
                    init,
                    permute_heads: None,
                    is_expert: true,
                };
                v.push(experts("ffn_gate_exps", gate, self.ffn, h, matrix(h)));
                v.push(experts("ffn_up_exps", up, self.ffn, h, matrix(h)));
                v.push(experts(
                    "ffn_down_exps",
                    down,
                    h,
                    self.ffn,
                    out_matrix(self.ffn),
                ));
            } else {
                v.push(t(
                    g("ffn_gate"),
                    f("mlp.gate_proj"),
                    vec![self.ffn, h],
                    matrix(h),
                ));
                v.push(t(
                    g("ffn_up"),
                    f("mlp.up_proj"),
                    vec![self.ffn, h],
                    matrix(h),
                ));
                v.push(t(
                    g("ffn_down"),
                    f("mlp.down_proj"),
                    vec![h, self.ffn],
                    out_matrix(self.ffn),
                ));
            }
        }
        v.push(t(
            "output_norm.weight".into(),
            "model.norm.weight".into(),
            vec![h],
            Init::Ones,
        ));
        v.push(t(
            "output.weight".into(),
            "lm_head.weight".into(),
            vec![self.vocab, h],
            matrix(h),
        ));
        v
    }

    /// Total and active parameter counts, computed from the tensor list.
    pub fn param_counts(&self) -> ParamCounts {
        let mut counts = ParamCounts {
            total: 0,
            active: 0,
            embedding: (self.vocab * self.hidden) as u64,
        };
        for t in self.tensors() {
            let n: u64 = t.shape.iter().product::<usize>() as u64;
            counts.total += n;
            counts.active += if t.is_expert {
                n / self.n_expert as u64 * self.n_expert_used as u64
            } else {
                n
            };
        }
        counts
    }

    fn gguf_metadata(&self, dtype: DType) -> Vec<(String, MetaValue)> {
        let arch = self.arch.gguf_arch();
        let u = |v: usize| MetaValue::U32(v as u32);
        let file_type = match dtype {
            DType::F32 => 0,
            DType::F16 => 1,
            _ => 32,
        };
        let mut m: Vec<(String, MetaValue)> = vec![
            (
                "general.architecture".into(),
                MetaValue::String(arch.into()),
            ),
            (
                "general.name".into(),
                MetaValue::String(format!("conch synth {} {}", self.arch.name(), self.name)),
            ),
            ("general.file_type".into(), MetaValue::U32(file_type)),
        ];
        let mut a = |k: &str, v: MetaValue| m.push((format!("{arch}.{k}"), v));
        a("vocab_size", u(self.vocab));
        a("context_length", u(self.context));
        a("embedding_length", u(self.hidden));
        a("block_count", u(self.layers));
        a("feed_forward_length", u(self.ffn));
        a("attention.head_count", u(self.heads));
        a("attention.head_count_kv", u(self.kv_heads));
        a("attention.key_length", u(self.head_dim));
        a("attention.value_length", u(self.head_dim));
        a("rope.dimension_count", u(self.head_dim));
        a("rope.freq_base", MetaValue::F32(1_000_000.0));
        a("attention.layer_norm_rms_epsilon", MetaValue::F32(1e-6));
        if self.arch.is_moe() {
            a("expert_count", u(self.n_expert));
            a("expert_used_count", u(self.n_expert_used));
            if self.arch == SynthArch::Qwen3Moe {
                a("expert_feed_forward_length", u(self.ffn));
            }
        }
        m
    }

    fn hf_config(&self, dtype: DType, vocab: &SynthVocab) -> serde_json::Value {
        let torch_dtype = match dtype {
            DType::F32 => "float32",
            DType::F16 => "float16",
            _ => "bfloat16",
        };
        let mut c = serde_json::json!({
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.ffn,
            "vocab_size": self.vocab,
            "max_position_embeddings": self.context,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1_000_000.0,
            "hidden_act": "silu",
            "attention_bias": false,
            "tie_word_embeddings": false,
            "torch_dtype": torch_dtype,
            "bos_token_id": vocab.first_special,
            "eos_token_id": vocab.first_special + 2,
        });
        let obj = c.as_object_mut().expect("object literal");
        let mut set = |k: &str, v: serde_json::Value| obj.insert(k.into(), v);
        match self.arch {
            SynthArch::Qwen3 => {
                set("architectures", serde_json::json!(["Qwen3ForCausalLM"]));
                set("model_type", "qwen3".into());
            }
            SynthArch::Qwen3Moe => {
                set("architectures", serde_json::json!(["Qwen3MoeForCausalLM"]));
                set("model_type", "qwen3_moe".into());
                set("num_experts", self.n_expert.into());
                set("num_experts_per_tok", self.n_expert_used.into());
                set("moe_intermediate_size", self.ffn.into());
                set("norm_topk_prob", true.into());
                set("decoder_sparse_step", 1.into());
                set("mlp_only_layers", serde_json::json!([]));
            }
            SynthArch::Mixtral => {
                set("architectures", serde_json::json!(["MixtralForCausalLM"]));
                set("model_type", "mixtral".into());
                set("num_local_experts", self.n_expert.into());
                set("num_experts_per_tok", self.n_expert_used.into());
            }
        }
        c
    }
}

enum SynthWriter {
    Gguf(GgufStreamWriter),
    Safetensors(SafetensorsStreamWriter),
}

/// Finds a preset by architecture name (`qwen3`, `qwen3moe`, `mixtral`) and preset name.
pub fn find_preset(arch: &str, name: &str) -> Result<Preset, ConvertError> {
    let arch = SynthArch::from_name(arch)?;
    let all: Vec<Preset> = presets().into_iter().filter(|p| p.arch == arch).collect();
    all.iter()
        .find(|p| p.name == name)
        .cloned()
        .ok_or_else(|| ConvertError::UnknownPreset {
            name: name.into(),
            arch: arch.name().into(),
            available: all.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
        })
}

/// Writes a random-weight model of `preset` (see [`presets`]) for `arch` to `out`: a GGUF file, or a
/// directory for [`SynthFormat::Safetensors`]. The same seed gives byte-identical files.
pub fn synth(
    arch: &str,
    preset: &str,
    out: &Path,
    opts: &SynthOptions,
) -> Result<SynthReport, ConvertError> {
    let preset = find_preset(arch, preset)?;
    preset
        .validate()
        .map_err(|msg| ConvertError::input(out, format!("preset {}: {msg}", preset.name)))?;
    if !matches!(opts.dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(ConvertError::input(
            out,
            format!("synth writes F32, F16 or BF16 weights, not {}", opts.dtype),
        ));
    }
    let vocab = SynthVocab::new(preset.vocab);
    let tensors = preset.tensors();
    // Norms and routers stay F32, as llama.cpp's converter writes them.
    let dtype_of = |t: &SynthTensor| {
        if t.shape.len() == 1 || t.gguf.contains("ffn_gate_inp") {
            DType::F32
        } else {
            opts.dtype
        }
    };
    let mut files = Vec::new();
    let mut writer = match opts.format {
        SynthFormat::Gguf => {
            let mut metadata = preset.gguf_metadata(opts.dtype);
            metadata.extend(vocab.gguf_metadata());
            let specs = tensors
                .iter()
                .map(|t| TensorSpec {
                    name: t.gguf.clone(),
                    dtype: dtype_of(t),
                    shape: t.shape.clone(),
                })
                .collect();
            files.push(out.to_path_buf());
            SynthWriter::Gguf(GgufStreamWriter::create(out, metadata, specs)?)
        }
        SynthFormat::Safetensors => {
            std::fs::create_dir_all(out).map_err(|e| ConvertError::io(out, e))?;
            let write_json = |name: &str, v: &serde_json::Value| -> Result<PathBuf, ConvertError> {
                let path = out.join(name);
                let text = serde_json::to_string_pretty(v).expect("json values serialize");
                std::fs::write(&path, text).map_err(|e| ConvertError::io(&path, e))?;
                Ok(path)
            };
            let (tokenizer, tokenizer_config) = vocab.hf_files();
            files.push(write_json(
                "config.json",
                &preset.hf_config(opts.dtype, &vocab),
            )?);
            files.push(write_json("tokenizer.json", &tokenizer)?);
            files.push(write_json("tokenizer_config.json", &tokenizer_config)?);
            let specs: Vec<TensorSpec> = tensors
                .iter()
                .flat_map(|t| {
                    let shape = if t.hf.len() > 1 {
                        t.shape[1..].to_vec()
                    } else {
                        t.shape.clone()
                    };
                    t.hf.iter().map(move |name| TensorSpec {
                        name: name.clone(),
                        dtype: opts.dtype,
                        shape: shape.clone(),
                    })
                })
                .collect();
            let path = out.join("model.safetensors");
            let writer = SafetensorsStreamWriter::create(&path, &specs)?;
            files.push(path);
            SynthWriter::Safetensors(writer)
        }
    };
    for (index, t) in tensors.iter().enumerate() {
        let mut rng = Rng::new(opts.seed, index as u64);
        let numel: usize = t.shape.iter().product();
        let values: Vec<f32> = match t.init {
            Init::Ones => vec![1.0; numel],
            Init::Normal(std) => (0..numel).map(|_| rng.normal() * std).collect(),
        };
        match &mut writer {
            SynthWriter::Gguf(w) => {
                let values = match t.permute_heads {
                    Some(heads) => permute_rows_for_gguf(&values, heads, t.shape[1]),
                    None => values,
                };
                w.write_next(&encode(&t.gguf, dtype_of(t), &values)?)?;
            }
            SynthWriter::Safetensors(w) => {
                // Stacked experts are written one tensor per expert.
                let per_name = values.len() / t.hf.len();
                for (name, chunk) in t.hf.iter().zip(values.chunks_exact(per_name)) {
                    w.write_next(&encode(name, opts.dtype, chunk)?)?;
                }
            }
        }
    }
    match writer {
        SynthWriter::Gguf(w) => w.finish()?,
        SynthWriter::Safetensors(w) => w.finish()?,
    }
    let bytes = files
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .map(|m| m.len())
                .map_err(|e| ConvertError::io(p, e))
        })
        .sum::<Result<u64, _>>()?;
    Ok(SynthReport {
        params: preset.param_counts(),
        preset,
        files,
        bytes,
    })
}

pub(crate) fn encode(name: &str, dtype: DType, values: &[f32]) -> Result<Vec<u8>, ConvertError> {
    let len = dtype.bytes_for(values.len()).ok_or_else(|| {
        ConvertError::tensor(
            name,
            format!("{} values do not fill whole {dtype} blocks", values.len()),
        )
    })?;
    let mut out = vec![0u8; len];
    // Blocks are independent, so the work splits over threads at block boundaries.
    let blocks = values.len() / dtype.block_size();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let blocks_per_thread = blocks.div_ceil(threads).max(MIN_BLOCKS_PER_THREAD);
    let results: Vec<Result<(), conch_kernels::QuantError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = values
            .chunks(blocks_per_thread * dtype.block_size())
            .zip(out.chunks_mut(blocks_per_thread * dtype.type_size()))
            .map(|(src, dst)| scope.spawn(move || conch_kernels::quant::quantize(dtype, src, dst)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("quantization does not panic"))
            .collect()
    });
    results
        .into_iter()
        .collect::<Result<(), _>>()
        .map_err(|e| ConvertError::tensor(name, e.to_string()))?;
    Ok(out)
}

/// Below this many blocks a thread costs more than it saves.
const MIN_BLOCKS_PER_THREAD: usize = 4096;

/// Hugging Face Llama Q/K rows (each head's two rotary halves one after the other) to llama.cpp's
/// order (the halves interleaved), as its converter's `permute` does.
pub(crate) fn permute_rows_for_gguf(values: &[f32], heads: usize, row_len: usize) -> Vec<f32> {
    let rows = values.len() / row_len;
    let head_rows = rows / heads;
    let half = head_rows / 2;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for s in 0..2 {
            for i in 0..half {
                let src = (h * head_rows + s * half + i) * row_len;
                let dst = (h * head_rows + 2 * i + s) * row_len;
                out[dst..dst + row_len].copy_from_slice(&values[src..src + row_len]);
            }
        }
    }
    out
}
