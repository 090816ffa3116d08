//! The architecture registry: one file per architecture, looked up by GGUF or Hugging Face name.
//!
//! Adding an architecture means a file here, a variant of [`Arch`] and its row in the tables of
//! `impl Arch` (names and builder).

mod deepseek2;
mod ernie4_5_moe;
mod gemma3;
mod glm4_moe;
mod gpt_oss;
mod granitemoe;
mod llama;
mod minimax_m2;
mod minimax_text01;
mod mixtral;
mod olmoe;
mod phimoe;
mod qwen2;
mod qwen2_moe;
mod qwen3;
mod qwen3_moe;

use crate::blocks::decoder::{Decoder, DecoderSpec, Source};
use crate::config::ModelConfig;
use crate::{Model, ModelError};
use conch_formats::{GgufFile, HfModelDir, TensorStore};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Llama 2/3 and look-alikes (SmolLM2).
    Llama,
    Qwen2,
    Qwen3,
    /// Gemma 3 text models.
    Gemma3,
    Mixtral,
    Qwen2Moe,
    Qwen3Moe,
    Olmoe,
    GraniteMoe,
    MiniMaxM2,
    /// ERNIE-4.5 MoE text models.
    Ernie45Moe,
    /// GLM-4.5 / 4.6 MoE.
    Glm4Moe,
    /// DeepSeek-V2 and V3 (one GGUF architecture, `deepseek2`).
    Deepseek2,
    GptOss,
    /// Phi-3.5-MoE.
    PhiMoe,
    /// MiniMax-Text-01 and MiniMax-M1.
    MiniMaxText01,
}

impl Arch {
    /// Every architecture; `Llama` comes before `Mixtral`, which shares its GGUF name.
    pub const ALL: [Arch; 16] = [
        Arch::Llama,
        Arch::Qwen2,
        Arch::Qwen3,
        Arch::Gemma3,
        Arch::Mixtral,
        Arch::Qwen2Moe,
        Arch::Qwen3Moe,
        Arch::Olmoe,
        Arch::GraniteMoe,
        Arch::MiniMaxM2,
        Arch::Ernie45Moe,
        Arch::Glm4Moe,
        Arch::Deepseek2,
        Arch::GptOss,
        Arch::PhiMoe,
        Arch::MiniMaxText01,
    ];

    /// `general.architecture` in GGUF files (llama.cpp writes Mixtral as `llama` with experts).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama | Arch::Mixtral => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
            Arch::Qwen2Moe => "qwen2moe",
            Arch::Qwen3Moe => "qwen3moe",
            Arch::Olmoe => "olmoe",
            Arch::GraniteMoe => "granitemoe",
            Arch::MiniMaxM2 => "minimax-m2",
            Arch::Ernie45Moe => "ernie4_5-moe",
            Arch::Glm4Moe => "glm4moe",
            Arch::Deepseek2 => "deepseek2",
            Arch::GptOss => "gpt-oss",
            Arch::PhiMoe => "phimoe",
            Arch::MiniMaxText01 => "minimax-01",
        }
    }

    /// A short name that tells every architecture apart.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Mixtral => "mixtral",
            other => other.gguf_name(),
        }
    }

    /// `model_type` values in Hugging Face `config.json`.
    pub fn hf_model_types(self) -> &'static [&'static str] {
        match self {
            Arch::Llama => &["llama"],
            Arch::Qwen2 => &["qwen2"],
            Arch::Qwen3 => &["qwen3"],
            Arch::Gemma3 => &["gemma3_text"],
            Arch::Mixtral => &["mixtral"],
            Arch::Qwen2Moe => &["qwen2_moe"],
            Arch::Qwen3Moe => &["qwen3_moe"],
            Arch::Olmoe => &["olmoe"],
            Arch::GraniteMoe => &["granitemoe"],
            Arch::MiniMaxM2 => &["minimax_m2"],
            Arch::Ernie45Moe => &["ernie4_5_moe"],
            Arch::Glm4Moe => &["glm4_moe"],
            Arch::Deepseek2 => &["deepseek_v2", "deepseek_v3"],
            Arch::GptOss => &["gpt_oss"],
            Arch::PhiMoe => &["phimoe"],
            Arch::MiniMaxText01 => &["minimax", "minimax_text_01", "minimax_m1"],
        }
    }

    pub fn from_gguf_name(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.gguf_name() == name)
    }

    pub fn from_hf_model_type(model_type: &str) -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.hf_model_types().contains(&model_type))
    }

    fn build(
        self,
        config: ModelConfig,
        store: &dyn TensorStore,
        source: Source,
    ) -> Result<Box<dyn Model>, ModelError> {
        match self {
            Arch::Llama => llama::build(config, store, source),
            Arch::Qwen2 => qwen2::build(config, store, source),
            Arch::Qwen3 => qwen3::build(config, store, source),
            Arch::Gemma3 => gemma3::build(config, store, source),
            Arch::Mixtral => decoder(config, store, source, &mixtral::SPEC),
            Arch::Qwen2Moe => decoder(config, store, source, &qwen2_moe::SPEC),
            Arch::Qwen3Moe => decoder(config, store, source, &qwen3_moe::SPEC),
            Arch::Olmoe => decoder(config, store, source, &olmoe::SPEC),
            Arch::GraniteMoe => decoder(config, store, source, &granitemoe::SPEC),
            Arch::MiniMaxM2 => decoder(config, store, source, &minimax_m2::SPEC),
            Arch::Ernie45Moe => decoder(config, store, source, &ernie4_5_moe::SPEC),
            Arch::Glm4Moe => decoder(config, store, source, &glm4_moe::SPEC),
            Arch::Deepseek2 => decoder(config, store, source, &deepseek2::SPEC),
            Arch::GptOss => decoder(config, store, source, &gpt_oss::SPEC),
            Arch::PhiMoe => decoder(config, store, source, &phimoe::SPEC),
            Arch::MiniMaxText01 => decoder(config, store, source, &minimax_text01::SPEC),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The shared decoder with one architecture's spec.
fn decoder(
    config: ModelConfig,
    store: &dyn TensorStore,
    source: Source,
    spec: &DecoderSpec,
) -> Result<Box<dyn Model>, ModelError> {
    Ok(Box::new(Decoder::load(config, store, source, spec)?))
}

/// Builds a model from an already parsed configuration and a tensor store.
pub fn build(
    config: ModelConfig,
    store: &dyn TensorStore,
    source: Source,
) -> Result<Box<dyn Model>, ModelError> {
    config.arch.build(config, store, source)
}

/// Builds the model a GGUF file describes.
pub fn load_gguf(file: &GgufFile) -> Result<Box<dyn Model>, ModelError> {
    let get = |key: &str| file.get(key).cloned();
    let vocab_from_embedding = file
        .tensor_info("token_embd.weight")
        .and_then(|t| t.shape.first().copied());
    let has_output = file.tensor_info("output.weight").is_some();
    let config = ModelConfig::from_gguf_metadata(&get, vocab_from_embedding, has_output)?;
    build(config, file, Source::Gguf)
}

/// Builds the model a Hugging Face directory describes.
pub fn load_hf(dir: &HfModelDir) -> Result<Box<dyn Model>, ModelError> {
    let config = ModelConfig::from_hf_json(&dir.config)?;
    build(config, &dir.weights, Source::Hf)
}
