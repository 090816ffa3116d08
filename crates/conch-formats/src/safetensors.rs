//! safetensors reader: one file, or shards listed by `model.safetensors.index.json`.
//!
//! Layout: u64 little-endian header length N, N bytes of JSON mapping each tensor name to
//! `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the byte after the header),
//! plus an optional `__metadata__` map of strings; then the data.

use crate::{Bytes, DType, FormatError, Tensor, TensorStore};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where one tensor lies in its file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub range: std::ops::Range<usize>,
}

/// One open safetensors file, its tensors as views into the memory map.
pub struct SafetensorsFile {
    path: PathBuf,
    metadata: BTreeMap<String, String>,
    /// In data order.
    entries: Vec<TensorEntry>,
    index: HashMap<String, usize>,
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<SafetensorsFile, FormatError> {
        let io = |source| FormatError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        if file.metadata().map_err(io)?.len() == 0 {
            return Err(invalid(path, "empty file (not safetensors)".into()));
        }
        // SAFETY: read-only map; the file is assumed not to change while open (as for GGUF).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(path.to_owned(), Arc::new(map))
    }

    /// Parses a safetensors image held in memory (tests, fuzzing); the same checks as [`SafetensorsFile::open`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<SafetensorsFile, FormatError> {
        Self::parse(PathBuf::from("<memory>"), Arc::new(bytes))
    }

    fn parse(
        path: PathBuf,
        owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    ) -> Result<SafetensorsFile, FormatError> {
        let (metadata, entries) =
            parse_header((*owner).as_ref()).map_err(|msg| invalid(&path, msg))?;
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        Ok(SafetensorsFile {
            path,
            metadata,
            entries,
            index,
            owner,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `__metadata__` strings.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Tensors in the order of their data.
    pub fn entries(&self) -> &[TensorEntry] {
        &self.entries
    }
}

impl TensorStore for SafetensorsFile {
    fn tensor_names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.name.clone()).collect()
    }

    fn tensor(&self, name: &str) -> Option<Tensor> {
        let e = &self.entries[*self.index.get(name)?];
        let data = Bytes::slice_of(self.owner.clone(), e.range.clone())?;
        Some(Tensor {
            name: e.name.clone(),
            dtype: e.dtype,
            shape: e.shape.clone(),
            data,
        })
    }
}

fn invalid(path: &Path, msg: String) -> FormatError {
    FormatError::Invalid {
        path: path.to_owned(),
        msg,
    }
}

fn parse_header(buf: &[u8]) -> Result<(BTreeMap<String, String>, Vec<TensorEntry>), String> {
    let len_bytes: [u8; 8] = buf
        .get(..8)
        .ok_or_else(|| {
            format!(
                "truncated: {} bytes is too short for the 8-byte header length",
                buf.len()
            )
        })?
        .try_into()
        .expect("8 bytes");
    let header_len = u64::from_le_bytes(len_bytes);
    let rest = (buf.len() - 8) as u64;
    if header_len > rest {
        return Err(format!(
            "header length {header_len} exceeds the {rest} bytes after it"
        ));
    }
    let data_start = 8 + header_len as usize;
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&buf[8..data_start])
            .map_err(|e| format!("header is not a JSON object: {e}"))?;

    let data_len = (buf.len() - data_start) as u64;
    let mut metadata = BTreeMap::new();
    let mut entries = Vec::with_capacity(json.len());
    for (name, value) in json {
        if name == "__metadata__" {
            metadata = serde_json::from_value(value)
                .map_err(|e| format!("__metadata__ is not a map of strings: {e}"))?;
            continue;
        }
        let raw: RawEntry = serde_json::from_value(value)
            .map_err(|e| format!("tensor {name:?}: bad header entry: {e}"))?;
        let dtype = match raw.dtype.as_str() {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            other => {
                return Err(format!(
                    "unsupported dtype {other} for tensor {name:?} (F32, F16 and BF16 are read)"
                ))
            }
        };
        let [begin, end] = raw.data_offsets;
        let bytes = raw
            .shape
            .iter()
            .try_fold(dtype.type_size() as u64, |acc, &d| acc.checked_mul(d))
            .filter(|&b| b <= isize::MAX as u64)
            .ok_or_else(|| format!("tensor {name:?}: shape {:?} is too large", raw.shape))?;
        if begin > end || end > data_len {
            return Err(format!(
                "tensor {name:?}: data_offsets [{begin}, {end}] out of range (the data section has {data_len} bytes)"
            ));
        }
        if end - begin != bytes {
            return Err(format!(
                "tensor {name:?}: data_offsets [{begin}, {end}] span {} bytes but shape {:?} of {dtype} needs {bytes}",
                end - begin,
                raw.shape
            ));
        }
        let shape = raw.shape.iter().map(|&d| d as usize).collect();
        let range = data_start + begin as usize..data_start + end as usize;
        entries.push(TensorEntry {
            name,
            dtype,
            shape,
            range,
        });
    }
    entries.sort_by_key(|e| (e.range.start, e.range.end));
    for pair in entries.windows(2) {
        if pair[1].range.start < pair[0].range.end {
            return Err(format!(
                "tensors {:?} and {:?} overlap",
                pair[0].name, pair[1].name
            ));
        }
    }
    Ok((metadata, entries))
}

/// The weights of a model: one safetensors file or several shards, as one [`TensorStore`].
pub struct SafetensorsModel {
    files: Vec<SafetensorsFile>,
    /// Tensor name → index into `files`.
    owner_of: HashMap<String, usize>,
    names: Vec<String>,
}

const INDEX_FILE: &str = "model.safetensors.index.json";
const SINGLE_FILE: &str = "model.safetensors";

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl SafetensorsModel {
    /// Opens the weights in `dir`: the shards named by `model.safetensors.index.json` if present,
    /// else `model.safetensors`, else every `*.safetensors` file in the directory.
    pub fn open_dir(dir: &Path) -> Result<SafetensorsModel, FormatError> {
        let index_path = dir.join(INDEX_FILE);
        if index_path.exists() {
            return Self::open_sharded(&index_path);
        }
        let single = dir.join(SINGLE_FILE);
        if single.exists() {
            return Self::from_files(vec![SafetensorsFile::open(&single)?]);
        }
        let io = |source| FormatError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .map(|e| e.map(|e| e.path()).map_err(io))
            .collect::<Result<_, _>>()?;
        paths.retain(|p| p.extension().is_some_and(|e| e == "safetensors"));
        paths.sort();
        if paths.is_empty() {
            return Err(invalid(
                dir,
                format!("no {SINGLE_FILE}, {INDEX_FILE} or other .safetensors file"),
            ));
        }
        Self::from_files(
            paths
                .iter()
                .map(|p| SafetensorsFile::open(p))
                .collect::<Result<_, _>>()?,
        )
    }

    /// Opens one safetensors file as a model.
    pub fn open_file(path: &Path) -> Result<SafetensorsModel, FormatError> {
        Self::from_files(vec![SafetensorsFile::open(path)?])
    }

    fn open_sharded(index_path: &Path) -> Result<SafetensorsModel, FormatError> {
        let text = std::fs::read(index_path).map_err(|source| FormatError::Io {
            path: index_path.to_owned(),
            source,
        })?;
        let index: ShardIndex = serde_json::from_slice(&text)
            .map_err(|e| invalid(index_path, format!("bad shard index: {e}")))?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut shard_names: Vec<&String> = index.weight_map.values().collect();
        shard_names.sort();
        shard_names.dedup();
        for shard in &shard_names {
            let plain = Path::new(shard.as_str())
                .file_name()
                .is_some_and(|f| f == shard.as_str());
            if !plain {
                return Err(invalid(
                    index_path,
                    format!("shard {shard:?} is not a plain file name"),
                ));
            }
        }
        let files: Vec<SafetensorsFile> = shard_names
            .iter()
            .map(|s| SafetensorsFile::open(&dir.join(s)))
            .collect::<Result<_, _>>()?;
        let model = Self::from_files(files)?;
        for (name, shard) in &index.weight_map {
            let listed_in = model.owner_of.get(name).map(|&i| model.files[i].path());
            if listed_in != Some(dir.join(shard).as_path()) {
                return Err(invalid(
                    index_path,
                    format!("weight_map puts tensor {name:?} in {shard:?}, which does not hold it"),
                ));
            }
        }
        Ok(model)
    }

    fn from_files(files: Vec<SafetensorsFile>) -> Result<SafetensorsModel, FormatError> {
        let mut owner_of = HashMap::new();
        let mut names = Vec::new();
        for (i, file) in files.iter().enumerate() {
            for e in file.entries() {
                if let Some(prev) = owner_of.insert(e.name.clone(), i) {
                    return Err(invalid(
                        file.path(),
                        format!(
                            "tensor {:?} is also in {}",
                            e.name,
                            files[prev].path().display()
                        ),
                    ));
                }
                names.push(e.name.clone());
            }
        }
        Ok(SafetensorsModel {
            files,
            owner_of,
            names,
        })
    }

    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }
}

impl TensorStore for SafetensorsModel {
    fn tensor_names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn tensor(&self, name: &str) -> Option<Tensor> {
        self.files[*self.owner_of.get(name)?].tensor(name)
    }
}
