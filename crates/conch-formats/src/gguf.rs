//! GGUF v2/v3 reader over a memory map, and a v3 writer.
//!
//! Layout (little-endian): magic `GGUF`, u32 version, u64 tensor count, u64 metadata count,
//! the metadata key/value pairs, the tensor infos (name, u32 n_dims, u64 ne[n_dims], u32 type,
//! u64 offset), then padding up to `general.alignment` (default 32) and the tensor data.
//! Tensor offsets are relative to the start of the data and aligned.

use crate::{Bytes, DType, FormatError, Tensor, TensorStore};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;
/// Array nesting deeper than this is refused (no real file nests more than twice).
const MAX_ARRAY_DEPTH: usize = 8;

/// A metadata value. Strings must be valid UTF-8.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
}

/// GGUF's value type ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        [
            U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64,
        ]
        .into_iter()
        .find(|t| *t as u32 == id)
    }

    /// The fewest bytes one value of this type takes in the file (to reject absurd counts early).
    fn min_encoded_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

impl MetaValue {
    fn value_type(&self) -> ValueType {
        match self {
            MetaValue::U8(_) => ValueType::U8,
            MetaValue::I8(_) => ValueType::I8,
            MetaValue::U16(_) => ValueType::U16,
            MetaValue::I16(_) => ValueType::I16,
            MetaValue::U32(_) => ValueType::U32,
            MetaValue::I32(_) => ValueType::I32,
            MetaValue::U64(_) => ValueType::U64,
            MetaValue::I64(_) => ValueType::I64,
            MetaValue::F32(_) => ValueType::F32,
            MetaValue::F64(_) => ValueType::F64,
            MetaValue::Bool(_) => ValueType::Bool,
            MetaValue::String(_) => ValueType::String,
            MetaValue::Array(_) => ValueType::Array,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// Any integer type holding a value that fits in a u64.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type holding a value that fits in an i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            MetaValue::U64(v) => i64::try_from(v).ok(),
            _ => self.as_u64().map(|v| v as i64),
        }
    }

    /// Any numeric type, converted to f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            MetaValue::U64(v) => Some(v as f64),
            MetaValue::I64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where a tensor lies and what it holds, as listed in the file header.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    /// Outermost first (the reverse of GGUF's `ne`).
    pub shape: Vec<usize>,
    /// Offset from the start of the tensor data section.
    pub offset: u64,
    /// Bytes the tensor takes.
    pub size: usize,
}

/// An open GGUF file: metadata in file order and tensors as views into the memory map.
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    alignment: u64,
    metadata: Vec<(String, MetaValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    data_start: usize,
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
}

impl GgufFile {
    /// Opens and validates `path`; tensor data stays in the memory map until used.
    pub fn open(path: &Path) -> Result<GgufFile, FormatError> {
        let io = |source| FormatError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            return Err(invalid(path, "empty file (not GGUF)".into()));
        }
        // SAFETY: the map is read-only; like every mmap-based model loader we assume the file is not
        // truncated or rewritten while open (that would be outside this process's control anyway).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(path.to_owned(), Arc::new(map))
    }

    /// Parses a GGUF image held in memory (tests, fuzzing); the same checks as [`GgufFile::open`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, FormatError> {
        Self::parse(PathBuf::from("<memory>"), Arc::new(bytes))
    }

    fn parse(
        path: PathBuf,
        owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    ) -> Result<GgufFile, FormatError> {
        let header = Header::parse((*owner).as_ref()).map_err(|msg| invalid(&path, msg))?;
        Ok(GgufFile {
            path,
            version: header.version,
            alignment: header.alignment,
            metadata_index: header
                .metadata
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect(),
            metadata: header.metadata,
            tensor_index: header
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect(),
            tensors: header.tensors,
            data_start: header.data_start,
            owner,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data alignment (`general.alignment`, 32 when absent).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &MetaValue)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// An integer of any type that fits in a u64.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// Any numeric value, as f32.
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.get_f64(key).map(|v| v as f32)
    }

    /// Any numeric value, as f64.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key)?.as_f64()
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    /// An array of strings; `None` if absent or any element is not a string.
    pub fn get_str_array(&self, key: &str) -> Option<Vec<&str>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(MetaValue::as_str)
            .collect()
    }

    /// An array of numbers of any type, as f32.
    pub fn get_f32_array(&self, key: &str) -> Option<Vec<f32>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(|v| v.as_f64().map(|f| f as f32))
            .collect()
    }

    /// An array of integers that all fit in an i32.
    pub fn get_i32_array(&self, key: &str) -> Option<Vec<i32>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(|v| v.as_i64().and_then(|i| i32::try_from(i).ok()))
            .collect()
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Absolute file offset where tensor data begins.
    pub fn data_start(&self) -> usize {
        self.data_start
    }
}

impl TensorStore for GgufFile {
    fn tensor_names(&self) -> Vec<String> {
        self.tensors.iter().map(|t| t.name.clone()).collect()
    }

    fn tensor(&self, name: &str) -> Option<Tensor> {
        let info = self.tensor_info(name)?;
        // Ranges were checked against the file when it was opened.
        let start = self.data_start + info.offset as usize;
        let data = Bytes::slice_of(self.owner.clone(), start..start + info.size)?;
        Some(Tensor {
            name: info.name.clone(),
            dtype: info.dtype,
            shape: info.shape.clone(),
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

/// A bounds-checked little-endian reader; `what` names the field for error messages.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn std::fmt::Display) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "truncated: {what} needs {n} bytes at offset {} but the file has {} left",
                self.pos,
                self.remaining()
            ));
        }
        let bytes = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &dyn std::fmt::Display) -> Result<[u8; N], String> {
        Ok(self.take(N as u64, what)?.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &dyn std::fmt::Display) -> Result<u32, String> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn std::fmt::Display) -> Result<u64, String> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A u64 length then that many UTF-8 bytes.
    fn string(&mut self, what: &dyn std::fmt::Display) -> Result<String, String> {
        let len = self.u64(&format_args!("length of {what}"))?;
        if len > self.remaining() {
            return Err(format!(
                "{what}: string length {len} exceeds the {} bytes left in the file",
                self.remaining()
            ));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            format!(
                "{what}: invalid UTF-8 in {:?}",
                String::from_utf8_lossy(bytes)
            )
        })
    }

    /// A count of items each taking at least `min_size` bytes, refused if the file cannot hold them.
    fn count(&mut self, what: &str, min_size: u64) -> Result<usize, String> {
        let n = self.u64(&what)?;
        if n.checked_mul(min_size)
            .is_none_or(|bytes| bytes > self.remaining())
        {
            return Err(format!(
                "{what} {n} is more than the {} bytes left in the file can hold",
                self.remaining()
            ));
        }
        Ok(n as usize)
    }

    fn value(&mut self, vtype: ValueType, key: &str, depth: usize) -> Result<MetaValue, String> {
        let what = format_args!("value of {key:?}");
        Ok(match vtype {
            ValueType::U8 => MetaValue::U8(self.array::<1>(&what)?[0]),
            ValueType::I8 => MetaValue::I8(self.array::<1>(&what)?[0] as i8),
            ValueType::U16 => MetaValue::U16(u16::from_le_bytes(self.array(&what)?)),
            ValueType::I16 => MetaValue::I16(i16::from_le_bytes(self.array(&what)?)),
            ValueType::U32 => MetaValue::U32(u32::from_le_bytes(self.array(&what)?)),
            ValueType::I32 => MetaValue::I32(i32::from_le_bytes(self.array(&what)?)),
            ValueType::U64 => MetaValue::U64(u64::from_le_bytes(self.array(&what)?)),
            ValueType::I64 => MetaValue::I64(i64::from_le_bytes(self.array(&what)?)),
            ValueType::F32 => MetaValue::F32(f32::from_le_bytes(self.array(&what)?)),
            ValueType::F64 => MetaValue::F64(f64::from_le_bytes(self.array(&what)?)),
            ValueType::Bool => match self.array::<1>(&what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(format!("metadata {key:?}: bool byte is {b}, not 0 or 1")),
            },
            ValueType::String => MetaValue::String(self.string(&format_args!("metadata {key:?}"))?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!(
                        "metadata {key:?}: arrays nested more than {MAX_ARRAY_DEPTH} deep"
                    ));
                }
                let type_id = self.u32(&format_args!("array type of {key:?}"))?;
                let elem = ValueType::from_id(type_id).ok_or_else(|| {
                    format!("metadata {key:?}: unknown array element type {type_id}")
                })?;
                let n = self.count(
                    &format!("element count of array {key:?}"),
                    elem.min_encoded_size(),
                )?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
        })
    }
}

struct Header {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<TensorInfo>,
    data_start: usize,
}

impl Header {
    fn parse(buf: &[u8]) -> Result<Header, String> {
        let mut c = Cursor { buf, pos: 0 };
        let magic = c.array::<4>(&"magic")?;
        if &magic != MAGIC {
            return Err(format!(
                "not a GGUF file: magic is {magic:02x?}, expected \"GGUF\""
            ));
        }
        let version = c.u32(&"version")?;
        match version {
            2 | 3 => {}
            1 => return Err("unsupported GGUF version 1 (only 2 and 3 are read)".into()),
            v if v.swap_bytes() <= 3 => {
                return Err(format!(
                    "unsupported GGUF version {v}: this looks like a big-endian file"
                ))
            }
            v => {
                return Err(format!(
                    "unsupported GGUF version {v} (only 2 and 3 are read)"
                ))
            }
        }
        // A tensor info takes at least 24 bytes (empty name, no dims); a key/value pair at least 13.
        let n_tensors = c.count("tensor count", 24)?;
        let n_kv = c.count("metadata count", 13)?;

        let mut metadata = Vec::with_capacity(n_kv);
        let mut seen = HashMap::with_capacity(n_kv);
        for i in 0..n_kv {
            let key = c.string(&format_args!("metadata key #{i}"))?;
            let type_id = c.u32(&format_args!("type of metadata {key:?}"))?;
            let vtype = ValueType::from_id(type_id)
                .ok_or_else(|| format!("metadata {key:?}: unknown value type {type_id}"))?;
            let value = c.value(vtype, &key, 0)?;
            if seen.insert(key.clone(), i).is_some() {
                return Err(format!("duplicate metadata key {key:?}"));
            }
            metadata.push((key, value));
        }

        let alignment = match seen.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => {
                    return Err(format!(
                        "general.alignment must be a power of two, got {v:?}"
                    ))
                }
            },
        };

        let mut tensors = Vec::with_capacity(n_tensors);
        let mut names = HashMap::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let info = parse_tensor_info(&mut c, i, alignment)?;
            if names.insert(info.name.clone(), i).is_some() {
                return Err(format!("duplicate tensor name {:?}", info.name));
            }
            tensors.push(info);
        }

        let data_start = align_up(c.pos as u64, alignment)
            .filter(|&s| s <= buf.len() as u64 || n_tensors == 0)
            .ok_or_else(|| "truncated: the file ends before its tensor data section".to_string())?;
        let data_len = (buf.len() as u64).saturating_sub(data_start);
        check_tensor_ranges(&tensors, data_len)?;
        Ok(Header {
            version,
            alignment,
            metadata,
            tensors,
            data_start: data_start.min(buf.len() as u64) as usize,
        })
    }
}

fn align_up(x: u64, alignment: u64) -> Option<u64> {
    x.checked_add(alignment - 1).map(|v| v & !(alignment - 1))
}

fn parse_tensor_info(
    c: &mut Cursor<'_>,
    index: usize,
    alignment: u64,
) -> Result<TensorInfo, String> {
    let name = c.string(&format_args!("name of tensor #{index}"))?;
    let n_dims = c.u32(&format_args!("dimension count of tensor {name:?}"))?;
    if n_dims > MAX_DIMS {
        return Err(format!(
            "tensor {name:?} has {n_dims} dimensions (at most {MAX_DIMS} allowed)"
        ));
    }
    let mut ne = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        ne.push(c.u64(&format_args!("dimensions of tensor {name:?}"))?);
    }
    let type_id = c.u32(&format_args!("type of tensor {name:?}"))?;
    let dtype = DType::from_ggml_id(type_id)
        .ok_or_else(|| format!("tensor {name:?} has unknown or unsupported type id {type_id}"))?;
    let offset = c.u64(&format_args!("offset of tensor {name:?}"))?;
    if offset % alignment != 0 {
        return Err(format!(
            "tensor {name:?} offset {offset} is not a multiple of the alignment {alignment}"
        ));
    }
    let size = tensor_size(&name, dtype, &ne)?;
    let shape = ne.iter().rev().map(|&d| d as usize).collect();
    Ok(TensorInfo {
        name,
        dtype,
        shape,
        offset,
        size,
    })
}

/// Bytes a `dtype` tensor with dimensions `ne` (innermost first) takes, refusing overflow and partial blocks.
fn tensor_size(name: &str, dtype: DType, ne: &[u64]) -> Result<usize, String> {
    let too_big = || format!("tensor {name:?} dimensions {ne:?} are too large");
    let row = ne.first().copied().unwrap_or(1);
    if row % dtype.block_size() as u64 != 0 {
        return Err(format!(
            "tensor {name:?}: row length {row} is not a multiple of the {dtype} block size {}",
            dtype.block_size()
        ));
    }
    let row_bytes = (row / dtype.block_size() as u64)
        .checked_mul(dtype.type_size() as u64)
        .ok_or_else(too_big)?;
    let bytes = ne
        .iter()
        .skip(1)
        .try_fold(row_bytes, |acc, &d| acc.checked_mul(d))
        .ok_or_else(too_big)?;
    // The element count must fit too (consumers compute it as a usize).
    ne.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as u64)
        .ok_or_else(too_big)?;
    usize::try_from(bytes).map_err(|_| too_big())
}

/// Every tensor must lie inside the data section, and no two may overlap.
fn check_tensor_ranges(tensors: &[TensorInfo], data_len: u64) -> Result<(), String> {
    let mut ranges: Vec<(u64, u64, &str)> = Vec::with_capacity(tensors.len());
    for t in tensors {
        let end = t.offset.checked_add(t.size as u64).filter(|&e| e <= data_len).ok_or_else(|| {
            format!(
                "tensor {:?} (offset {}, {} bytes) extends past the end of the file's {data_len} data bytes",
                t.name, t.offset, t.size
            )
        })?;
        ranges.push((t.offset, end, &t.name));
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        let ((_, end_a, a), (start_b, _, b)) = (pair[0], pair[1]);
        if start_b < end_a {
            return Err(format!("tensors {a:?} and {b:?} overlap"));
        }
    }
    Ok(())
}

/// Builds a GGUF v3 file: metadata in insertion order, then tensors, each aligned.
pub struct GgufWriter {
    alignment: u64,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<(String, DType, Vec<usize>, Vec<u8>)>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }
}

/// A mistake in what was given to [`GgufWriter`].
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    #[error("metadata {0:?}: array elements must all have the same type")]
    MixedArray(String),
    #[error("alignment {0} is not a power of two")]
    Alignment(u64),
    #[error("tensor {name:?}: {msg}")]
    Tensor { name: String, msg: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Sets the data alignment and records it as `general.alignment` (u32) when not the default.
    pub fn set_alignment(&mut self, alignment: u32) -> Result<(), WriteError> {
        if !alignment.is_power_of_two() {
            return Err(WriteError::Alignment(alignment.into()));
        }
        self.alignment = alignment.into();
        self.metadata.retain(|(k, _)| k != "general.alignment");
        if self.alignment != DEFAULT_ALIGNMENT {
            self.metadata
                .push(("general.alignment".into(), MetaValue::U32(alignment)));
        }
        Ok(())
    }

    pub fn add_metadata(&mut self, key: &str, value: MetaValue) -> Result<(), WriteError> {
        if self.metadata.iter().any(|(k, _)| k == key) {
            return Err(WriteError::DuplicateKey(key.into()));
        }
        if key == "general.alignment" {
            let a = value
                .as_u64()
                .and_then(|a| u32::try_from(a).ok())
                .ok_or(WriteError::Alignment(0))?;
            return self.set_alignment(a);
        }
        check_uniform(key, &value)?;
        self.metadata.push((key.into(), value));
        Ok(())
    }

    /// Adds a tensor with `shape` outermost first and `data` in `dtype`'s layout.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        data: Vec<u8>,
    ) -> Result<(), WriteError> {
        let err = |msg: String| WriteError::Tensor {
            name: name.into(),
            msg,
        };
        if self.tensors.iter().any(|t| t.0 == name) {
            return Err(WriteError::DuplicateTensor(name.into()));
        }
        if shape.len() > MAX_DIMS as usize {
            return Err(err(format!(
                "{} dimensions (at most {MAX_DIMS})",
                shape.len()
            )));
        }
        let ne: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let size = tensor_size(name, dtype, &ne).map_err(err)?;
        if size != data.len() {
            return Err(err(format!(
                "shape {shape:?} of {dtype} needs {size} bytes, got {}",
                data.len()
            )));
        }
        self.tensors
            .push((name.into(), dtype, shape.to_vec(), data));
        Ok(())
    }

    /// The complete file image.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_string(&mut out, key);
            out.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            write_value(&mut out, value);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for (name, dtype, shape, data) in &self.tensors {
            write_string(&mut out, name);
            out.extend_from_slice(&(shape.len() as u32).to_le_bytes());
            for &d in shape.iter().rev() {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            out.extend_from_slice(&dtype.ggml_id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = align_up(offset + data.len() as u64, self.alignment)
                .expect("in-memory sizes fit in u64");
        }
        let data_start =
            out.len() + self.tensors.len().min(1) * pad_len(out.len() as u64, self.alignment);
        out.resize(data_start, 0);
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize(data_start + off as usize, 0);
            out.extend_from_slice(data);
        }
        out
    }

    pub fn write(&self, path: &Path) -> Result<(), WriteError> {
        std::fs::write(path, self.to_bytes())?;
        Ok(())
    }
}

fn pad_len(pos: u64, alignment: u64) -> usize {
    (align_up(pos, alignment).expect("in-memory sizes fit in u64") - pos) as usize
}

fn check_uniform(key: &str, value: &MetaValue) -> Result<(), WriteError> {
    if let MetaValue::Array(items) = value {
        if let Some(first) = items.first() {
            if items.iter().any(|v| v.value_type() != first.value_type()) {
                return Err(WriteError::MixedArray(key.into()));
            }
        }
        items.iter().try_for_each(|v| check_uniform(key, v))?;
    }
    Ok(())
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, value: &MetaValue) {
    match value {
        MetaValue::U8(v) => out.push(*v),
        MetaValue::I8(v) => out.push(*v as u8),
        MetaValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::Bool(v) => out.push(*v as u8),
        MetaValue::String(s) => write_string(out, s),
        MetaValue::Array(items) => {
            // An empty array has no element to take a type from; u8 reads back as the same empty array.
            let elem = items.first().map_or(ValueType::U8, MetaValue::value_type);
            out.extend_from_slice(&(elem as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|v| write_value(out, v));
        }
    }
}
