//! Requantizes a GGUF file, or converts a Hugging Face safetensors directory, to a quantized GGUF.
//!
//! Which tensors are quantized follows llama.cpp's `llama-quantize` (src/llama-quant.cpp): only
//! tensors of two or more dimensions whose names end in `weight`, never norms nor the MoE router
//! (`ffn_gate_inp`); the output matrix (or, when the model has none, the tied token embedding) gets
//! Q6_K unless the target is Q8_0; K and V of 8-expert models get Q8_0; target Q4_K is llama.cpp's
//! Q4_K_S mix; rows whose length is not a
//! multiple of the block size fall back Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, and to F16 where even
//! that does not fit. With these rules the output is byte-identical to llama-quantize's
//! (`Q8_0`, `Q4_0`, `Q4_K_S`, `Q6_K`) on the same F32 input.

use crate::hf_names::HfConversion;
use crate::writer::{GgufStreamWriter, TensorSpec};
use crate::ConvertError;
use conch_formats::{DType, GgufFile, HfModelDir, MetaValue, Tensor, TensorStore};
use std::path::{Path, PathBuf};

/// The quantization targets [`quantize`] accepts.
pub const TARGETS: [DType; 4] = [DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K];

#[derive(Clone, Debug, Default)]
pub struct QuantizeOptions {
    /// Quantize every eligible tensor to the target, the output matrix included, without Q4_K_S's
    /// Q5_K exceptions (llama-quantize `--pure`).
    pub pure: bool,
}

/// What became of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorChoice {
    pub name: String,
    pub shape: Vec<usize>,
    pub from: DType,
    pub to: DType,
}

#[derive(Clone, Debug)]
pub struct QuantizeReport {
    pub output: PathBuf,
    /// llama.cpp's `general.file_type` written.
    pub file_type: u32,
    pub tensors: Vec<TensorChoice>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Things the caller should know (a tokenizer that could not be carried over, say).
    pub notes: Vec<String>,
}

/// llama.cpp's `llama_ftype` for a whole-model target (Q4_K is written as Q4_K_S, the closest).
fn file_type(target: DType) -> u32 {
    match target {
        DType::Q4_0 => 2,
        DType::Q8_0 => 7,
        DType::Q4_K => 14,
        _ => 18,
    }
}

/// What llama-quantize's choice of a tensor's type depends on besides the tensor itself.
pub(crate) struct TypeRules {
    pub target: DType,
    pub pure: bool,
    /// Whether the model has its own `output.weight` (else the token embedding is the output).
    pub has_output: bool,
    pub n_layer: usize,
    pub n_expert: usize,
}

impl TypeRules {
    /// The type one tensor is written in.
    pub(crate) fn choose(&self, name: &str, shape: &[usize], from: DType) -> DType {
        let eligible = shape.len() >= 2
            && name.ends_with("weight")
            && !name.contains("_norm.weight")
            && !name.contains("ffn_gate_inp.weight");
        if !eligible {
            return from;
        }
        let is_output =
            name == "output.weight" || (!self.has_output && name == "token_embd.weight");
        let mut to = self.target;
        if !self.pure {
            if is_output && self.target != DType::Q8_0 {
                to = DType::Q6_K;
            } else if let Some(t) = self.exception(name) {
                to = t;
            }
        }
        let row = shape[shape.len() - 1];
        if row % to.block_size() != 0 {
            to = match to {
                DType::Q4_K => DType::Q5_0,
                DType::Q5_K => DType::Q5_1,
                DType::Q6_K => DType::Q8_0,
                other => other,
            };
            if row % to.block_size() != 0 {
                to = DType::F16;
            }
        }
        to
    }

    /// llama-quantize's exceptions for sensitive matrices: K and V at Q8_0 in 8-expert models; for
    /// Q4_K_S, Q5_K for V of the first four layers, FFN down of the first eighth of the layers, and
    /// attention output in 8-expert models.
    fn exception(&self, name: &str) -> Option<DType> {
        let layer: usize = name.strip_prefix("blk.")?.split('.').next()?.parse().ok()?;
        let is = |kind: &str| {
            name.contains(&format!(".{kind}.")) || name.contains(&format!(".{kind}_exps."))
        };
        if (is("attn_k") || is("attn_v")) && self.n_expert == 8 {
            return Some(DType::Q8_0);
        }
        let q4_k_s_bump = self.target == DType::Q4_K
            && ((is("attn_v") && layer < 4)
                || (is("ffn_down") && layer < self.n_layer / 8)
                || (is("attn_output") && self.n_expert == 8));
        q4_k_s_bump.then_some(DType::Q5_K)
    }
}

/// Writes `output`, a GGUF of `input` quantized to `target` (one of [`TARGETS`]). `input` is an F32,
/// F16 or BF16 GGUF file (metadata copied) or a Hugging Face directory of safetensors (names,
/// metadata and, for byte-level BPE `tokenizer.json`, the vocabulary converted as llama.cpp's
/// `convert_hf_to_gguf.py` does) of a llama, mistral, mixtral, qwen2, qwen3 or qwen3_moe model.
pub fn quantize(
    input: &Path,
    output: &Path,
    target: DType,
    opts: &QuantizeOptions,
) -> Result<QuantizeReport, ConvertError> {
    if !TARGETS.contains(&target) {
        return Err(ConvertError::UnsupportedTarget(target));
    }
    if !input.exists() {
        return Err(ConvertError::input(input, "no such file or directory"));
    }
    if input == output {
        return Err(ConvertError::input(
            output,
            "output would overwrite the input",
        ));
    }
    let mut notes = Vec::new();
    let source: Box<dyn Source> = if input.is_dir() {
        let dir = HfModelDir::open(input)?;
        Box::new(HfConversion::new(dir, &mut notes)?)
    } else {
        Box::new(GgufSource::open(input)?)
    };
    let plan = source.plan()?;
    let mut metadata = source.metadata();
    let arch_key = |key: &str| {
        let arch = metadata
            .iter()
            .find(|(k, _)| k == "general.architecture")
            .and_then(|(_, v)| v.as_str())?;
        metadata
            .iter()
            .find(|(k, _)| *k == format!("{arch}.{key}"))
            .and_then(|(_, v)| v.as_u64())
    };
    let rules = TypeRules {
        target,
        pure: opts.pure,
        has_output: plan.iter().any(|t| t.name == "output.weight"),
        n_layer: arch_key("block_count").unwrap_or(0) as usize,
        n_expert: arch_key("expert_count").unwrap_or(0) as usize,
    };
    let choices: Vec<TensorChoice> = plan
        .iter()
        .map(|t| TensorChoice {
            name: t.name.clone(),
            shape: t.shape.clone(),
            from: t.from,
            to: rules.choose(&t.name, &t.shape, t.from),
        })
        .collect();
    metadata.retain(|(k, _)| {
        k != "general.file_type" && k != "general.quantization_version" && k != "general.alignment"
    });
    metadata.push((
        "general.file_type".into(),
        MetaValue::U32(file_type(target)),
    ));
    metadata.push(("general.quantization_version".into(), MetaValue::U32(2)));
    let specs = choices
        .iter()
        .map(|c| TensorSpec {
            name: c.name.clone(),
            dtype: c.to,
            shape: c.shape.clone(),
        })
        .collect();
    let mut writer = GgufStreamWriter::create(output, metadata, specs)?;
    let mut bytes_in = 0u64;
    for (index, c) in choices.iter().enumerate() {
        let (values, raw) = source.load(index)?;
        bytes_in += raw.as_ref().map_or(values.len() * 4, |r| r.len()) as u64;
        match raw {
            Some(raw) if c.to == c.from => writer.write_next(&raw)?,
            _ => writer.write_next(&crate::synth::encode(&c.name, c.to, &values)?)?,
        }
    }
    writer.finish()?;
    let bytes_out = std::fs::metadata(output)
        .map_err(|e| ConvertError::io(output, e))?
        .len();
    Ok(QuantizeReport {
        output: output.to_path_buf(),
        file_type: file_type(target),
        tensors: choices,
        bytes_in,
        bytes_out,
        notes,
    })
}

/// One tensor of the output, as the source provides it.
pub(crate) struct PlannedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub from: DType,
}

/// Where tensors and metadata come from.
pub(crate) trait Source {
    fn metadata(&self) -> Vec<(String, MetaValue)>;
    fn plan(&self) -> Result<Vec<PlannedTensor>, ConvertError>;
    /// Tensor `index` of the plan as f32 values, plus its original bytes when it is one stored tensor
    /// (to be copied unchanged if its type stays).
    fn load(&self, index: usize) -> Result<(Vec<f32>, Option<Vec<u8>>), ConvertError>;
}

struct GgufSource {
    path: PathBuf,
    file: GgufFile,
}

impl GgufSource {
    fn open(path: &Path) -> Result<GgufSource, ConvertError> {
        let file = GgufFile::open(path)?;
        Ok(GgufSource {
            path: path.to_path_buf(),
            file,
        })
    }
}

impl Source for GgufSource {
    fn metadata(&self) -> Vec<(String, MetaValue)> {
        self.file
            .metadata()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn plan(&self) -> Result<Vec<PlannedTensor>, ConvertError> {
        self.file
            .tensors()
            .iter()
            .map(|t| {
                if t.dtype.is_quantized() {
                    return Err(ConvertError::input(
                        &self.path,
                        format!("tensor {:?} is already {}; requantizing loses accuracy twice, give an F32, F16 or BF16 file", t.name, t.dtype),
                    ));
                }
                Ok(PlannedTensor { name: t.name.clone(), shape: t.shape.clone(), from: t.dtype })
            })
            .collect()
    }

    fn load(&self, index: usize) -> Result<(Vec<f32>, Option<Vec<u8>>), ConvertError> {
        let name = &self.file.tensors()[index].name;
        let tensor = self
            .file
            .tensor(name)
            .ok_or_else(|| ConvertError::tensor(name, "listed but unreadable"))?;
        let values = to_f32(&tensor)?;
        Ok((values, Some(tensor.data.to_vec())))
    }
}

pub(crate) fn to_f32(t: &Tensor) -> Result<Vec<f32>, ConvertError> {
    let mut values = vec![0.0; t.numel()];
    conch_kernels::quant::dequantize(t.dtype, &t.data, &mut values)
        .map_err(|e| ConvertError::tensor(&t.name, e.to_string()))?;
    Ok(values)
}
