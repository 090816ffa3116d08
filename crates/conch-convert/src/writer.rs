//! Streaming writers: the header is written first from the tensor list, then each tensor's bytes as
//! they are made, so a multi-GB model never sits in memory. (`conch_formats::GgufWriter` holds every
//! tensor in memory; it is used here only to encode the metadata.)

use crate::ConvertError;
use conch_formats::{DType, GgufWriter, MetaValue};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A tensor to be written: GGUF name, element type, shape outermost first.
#[derive(Clone, Debug)]
pub(crate) struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub(crate) fn byte_len(&self) -> Result<usize, ConvertError> {
        let row = *self.shape.last().unwrap_or(&1);
        if row % self.dtype.block_size() != 0 {
            return Err(ConvertError::tensor(
                &self.name,
                format!(
                    "rows of {row} values do not fill whole {} blocks of {}",
                    self.dtype,
                    self.dtype.block_size()
                ),
            ));
        }
        let numel: usize = self.shape.iter().product();
        self.dtype
            .bytes_for(numel)
            .ok_or_else(|| ConvertError::tensor(&self.name, "size overflows"))
    }
}

const GGUF_ALIGNMENT: u64 = 32;

/// Writes a GGUF v3 file tensor by tensor, in the order given to [`GgufStreamWriter::create`].
pub(crate) struct GgufStreamWriter {
    path: PathBuf,
    out: BufWriter<File>,
    specs: Vec<TensorSpec>,
    next: usize,
}

impl GgufStreamWriter {
    pub(crate) fn create(
        path: &Path,
        metadata: Vec<(String, MetaValue)>,
        specs: Vec<TensorSpec>,
    ) -> Result<GgufStreamWriter, ConvertError> {
        let mut meta = GgufWriter::new();
        for (key, value) in metadata {
            meta.add_metadata(&key, value)
                .map_err(|e| ConvertError::input(path, format!("metadata: {e}")))?;
        }
        // GgufWriter's image of metadata alone: magic, version, tensor count (0), kv count, kvs.
        let mut header = meta.to_bytes();
        header[8..16].copy_from_slice(&(specs.len() as u64).to_le_bytes());
        let mut offset = 0u64;
        for spec in &specs {
            header.extend_from_slice(&(spec.name.len() as u64).to_le_bytes());
            header.extend_from_slice(spec.name.as_bytes());
            header.extend_from_slice(&(spec.shape.len() as u32).to_le_bytes());
            for &d in spec.shape.iter().rev() {
                header.extend_from_slice(&(d as u64).to_le_bytes());
            }
            header.extend_from_slice(&spec.dtype.ggml_id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset = align_up(offset + spec.byte_len()? as u64);
        }
        header.resize(align_up(header.len() as u64) as usize, 0);
        let file = File::create(path).map_err(|e| ConvertError::io(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&header)
            .map_err(|e| ConvertError::io(path, e))?;
        Ok(GgufStreamWriter {
            path: path.to_path_buf(),
            out,
            specs,
            next: 0,
        })
    }

    /// Writes the next tensor's bytes (which must be the next spec's exact size).
    pub(crate) fn write_next(&mut self, data: &[u8]) -> Result<(), ConvertError> {
        let spec = self
            .specs
            .get(self.next)
            .ok_or_else(|| ConvertError::input(&self.path, "more tensors written than declared"))?;
        let len = spec.byte_len()?;
        if data.len() != len {
            return Err(ConvertError::tensor(
                &spec.name,
                format!("{} bytes given, {len} expected", data.len()),
            ));
        }
        let pad = align_up(len as u64) as usize - len;
        let io = |e| ConvertError::io(&self.path, e);
        self.out.write_all(data).map_err(io)?;
        self.out.write_all(&vec![0u8; pad]).map_err(io)?;
        self.next += 1;
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<(), ConvertError> {
        if self.next != self.specs.len() {
            return Err(ConvertError::input(
                &self.path,
                format!("{} of {} tensors written", self.next, self.specs.len()),
            ));
        }
        let io = |e| ConvertError::io(&self.path, e);
        self.out.flush().map_err(io)?;
        self.out.get_ref().sync_all().map_err(io)
    }
}

fn align_up(n: u64) -> u64 {
    n.div_ceil(GGUF_ALIGNMENT) * GGUF_ALIGNMENT
}

/// Writes one safetensors file tensor by tensor, in the order given to [`SafetensorsStreamWriter::create`].
pub(crate) struct SafetensorsStreamWriter {
    path: PathBuf,
    out: BufWriter<File>,
    sizes: Vec<(String, usize)>,
    next: usize,
}

impl SafetensorsStreamWriter {
    pub(crate) fn create(
        path: &Path,
        specs: &[TensorSpec],
    ) -> Result<SafetensorsStreamWriter, ConvertError> {
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
        let mut offset = 0usize;
        let mut sizes = Vec::with_capacity(specs.len());
        for spec in specs {
            let dtype = match spec.dtype {
                DType::F32 => "F32",
                DType::F16 => "F16",
                DType::BF16 => "BF16",
                other => {
                    return Err(ConvertError::tensor(
                        &spec.name,
                        format!("safetensors cannot hold {other}"),
                    ))
                }
            };
            let len = spec.byte_len()?;
            header.insert(
                spec.name.clone(),
                serde_json::json!({ "dtype": dtype, "shape": spec.shape, "data_offsets": [offset, offset + len] }),
            );
            sizes.push((spec.name.clone(), len));
            offset += len;
        }
        let mut json = serde_json::to_vec(&serde_json::Value::Object(header))
            .map_err(|e| ConvertError::input(path, e.to_string()))?;
        json.resize(json.len().div_ceil(8) * 8, b' ');
        let file = File::create(path).map_err(|e| ConvertError::io(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let io = |e| ConvertError::io(path, e);
        out.write_all(&(json.len() as u64).to_le_bytes())
            .map_err(io)?;
        out.write_all(&json).map_err(io)?;
        Ok(SafetensorsStreamWriter {
            path: path.to_path_buf(),
            out,
            sizes,
            next: 0,
        })
    }

    pub(crate) fn write_next(&mut self, data: &[u8]) -> Result<(), ConvertError> {
        let (name, len) = self
            .sizes
            .get(self.next)
            .ok_or_else(|| ConvertError::input(&self.path, "more tensors written than declared"))?;
        if data.len() != *len {
            return Err(ConvertError::tensor(
                name,
                format!("{} bytes given, {len} expected", data.len()),
            ));
        }
        self.out
            .write_all(data)
            .map_err(|e| ConvertError::io(&self.path, e))?;
        self.next += 1;
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<(), ConvertError> {
        if self.next != self.sizes.len() {
            return Err(ConvertError::input(
                &self.path,
                format!("{} of {} tensors written", self.next, self.sizes.len()),
            ));
        }
        self.out
            .flush()
            .map_err(|e| ConvertError::io(&self.path, e))
    }
}
