//! Model file formats: GGUF (v2, v3), safetensors (single file and sharded) and the
//! Hugging Face model directory around them.
//!
//! Everything here reads untrusted bytes: every offset, size and count is checked against
//! the file before use, and problems come back as a [`FormatError`] naming what is wrong.
//! Shapes are given outermost first (PyTorch order): a GGUF tensor with `ne = [cols, rows]`
//! has `shape = [rows, cols]`.

pub mod bytes;
pub mod gguf;
pub mod hf;
pub mod safetensors;

pub use bytes::Bytes;
pub use conch_kernels::DType;
pub use gguf::{GgufFile, GgufWriter, MetaValue, TensorInfo};
pub use hf::HfModelDir;
pub use safetensors::{SafetensorsFile, SafetensorsModel};

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum FormatError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not what it claims to be or is damaged; the message names the problem.
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("{path}: unsupported {what}")]
    Unsupported { path: PathBuf, what: String },
}

/// A tensor's name, element type, shape (outermost first) and bytes in `dtype`'s layout.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Bytes,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Anything that holds named tensors: a GGUF file, a set of safetensors shards.
pub trait TensorStore: Send + Sync {
    fn tensor_names(&self) -> Vec<String>;
    fn tensor(&self, name: &str) -> Option<Tensor>;
}
