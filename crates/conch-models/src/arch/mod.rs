//! The architecture registry: one file per architecture, looked up by GGUF or Hugging Face name.
//!
//! Adding an architecture means a file here, a variant of [`Arch`] and its row in the tables of
//! `impl Arch` (names and builder).

mod gemma3;
mod llama;
mod qwen2;
mod qwen3;

use crate::blocks::decoder::Source;
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
}

impl Arch {
    pub const ALL: [Arch; 4] = [Arch::Llama, Arch::Qwen2, Arch::Qwen3, Arch::Gemma3];

    /// `general.architecture` in GGUF files.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }

    /// `model_type` values in Hugging Face `config.json`.
    pub fn hf_model_types(self) -> &'static [&'static str] {
        match self {
            Arch::Llama => &["llama"],
            Arch::Qwen2 => &["qwen2"],
            Arch::Qwen3 => &["qwen3"],
            Arch::Gemma3 => &["gemma3_text"],
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
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.gguf_name())
    }
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
