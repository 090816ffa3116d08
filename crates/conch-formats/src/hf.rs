//! A Hugging Face model directory: config.json, weights, tokenizer and generation settings.

use crate::safetensors::SafetensorsModel;
use crate::FormatError;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// An opened Hugging Face model directory. The JSON files are given as they are; their meaning
/// is for the model and tokenizer code to read.
pub struct HfModelDir {
    pub dir: PathBuf,
    /// `config.json` (required).
    pub config: Value,
    /// `generation_config.json`, if present.
    pub generation_config: Option<Value>,
    /// `tokenizer_config.json`, if present.
    pub tokenizer_config: Option<Value>,
    /// The path of `tokenizer.json`, if present.
    pub tokenizer_json: Option<PathBuf>,
    pub weights: SafetensorsModel,
}

impl HfModelDir {
    pub fn open(dir: &Path) -> Result<HfModelDir, FormatError> {
        let config =
            read_json_object(&dir.join("config.json"))?.ok_or_else(|| FormatError::Invalid {
                path: dir.to_owned(),
                msg: "no config.json in the model directory".into(),
            })?;
        let tokenizer_json = Some(dir.join("tokenizer.json")).filter(|p| p.is_file());
        Ok(HfModelDir {
            dir: dir.to_owned(),
            config,
            generation_config: read_json_object(&dir.join("generation_config.json"))?,
            tokenizer_config: read_json_object(&dir.join("tokenizer_config.json"))?,
            tokenizer_json,
            weights: SafetensorsModel::open_dir(dir)?,
        })
    }
}

/// The JSON object in `path`; `None` if the file does not exist.
fn read_json_object(path: &Path) -> Result<Option<Value>, FormatError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(FormatError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let invalid = |msg: String| FormatError::Invalid {
        path: path.to_owned(),
        msg,
    };
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("invalid JSON: {e}")))?;
    if !value.is_object() {
        return Err(invalid("expected a JSON object".into()));
    }
    Ok(Some(value))
}
