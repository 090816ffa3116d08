//! Writes model files: requantizes GGUF files and converts Hugging Face checkpoints to quantized GGUF
//! ([`quantize`]), and synthesizes random-weight models of realistic shape ([`synth`]).
//!
//! Knows file formats, quantization types and the tensor naming of architectures; nothing of
//! terminals or HTTP.

mod hf_names;
mod quantize;
mod rng;
mod synth;
mod vocab;
mod writer;

pub use quantize::{quantize, QuantizeOptions, QuantizeReport, TensorChoice, TARGETS};
pub use synth::{
    find_preset, presets, synth, ParamCounts, Preset, SynthArch, SynthFormat, SynthOptions,
    SynthReport,
};

use conch_kernels::DType;
use std::path::PathBuf;

/// Why a conversion failed; every message names the file, tensor or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Format(#[from] conch_formats::FormatError),
    #[error("unsupported quantization target {0} (supported: Q8_0, Q4_0, Q4_K, Q6_K)")]
    UnsupportedTarget(DType),
    #[error("unknown preset {name:?} for architecture {arch} (available: {available})")]
    UnknownPreset {
        name: String,
        arch: String,
        available: String,
    },
    #[error("unknown architecture {0:?} (supported: qwen3, qwen3moe, mixtral)")]
    UnknownArch(String),
    #[error("{path}: {msg}")]
    Input { path: PathBuf, msg: String },
    #[error("tensor {name:?}: {msg}")]
    Tensor { name: String, msg: String },
}

impl ConvertError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> ConvertError {
        ConvertError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn input(path: &std::path::Path, msg: impl Into<String>) -> ConvertError {
        ConvertError::Input {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }

    pub(crate) fn tensor(name: &str, msg: impl Into<String>) -> ConvertError {
        ConvertError::Tensor {
            name: name.into(),
            msg: msg.into(),
        }
    }
}
