//! Damaged or hostile GGUF files: each gives an error naming the problem, never a panic.

use conch_formats::gguf::GgufWriter;
use conch_formats::{DType, GgufFile, MetaValue};

/// Hand-assembled GGUF bytes, so that every field can be made wrong.
struct Raw(Vec<u8>);

impl Raw {
    fn new(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Raw {
        self.0.extend_from_slice(b);
        self
    }
    fn string(&mut self, s: &[u8]) -> &mut Raw {
        self.u64(s.len() as u64).bytes(s)
    }
    /// A u32 metadata pair (type id 4).
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Raw {
        self.string(key.as_bytes()).u32(4).u32(v)
    }
    fn tensor(&mut self, name: &str, ne: &[u64], type_id: u32, offset: u64) -> &mut Raw {
        self.string(name.as_bytes()).u32(ne.len() as u32);
        ne.iter().for_each(|&d| {
            self.u64(d);
        });
        self.u32(type_id).u64(offset)
    }
    /// Pads to the default 32-byte alignment and appends `n` data bytes.
    fn data(&mut self, n: usize) -> Vec<u8> {
        let start = self.0.len().div_ceil(32) * 32;
        self.0.resize(start + n, 0);
        self.0.clone()
    }
}

fn error_of(bytes: Vec<u8>) -> String {
    match GgufFile::from_bytes(bytes) {
        Ok(_) => panic!("parsed without error"),
        Err(e) => e.to_string(),
    }
}

fn assert_error(bytes: Vec<u8>, wanted: &[&str]) {
    let msg = error_of(bytes);
    for w in wanted {
        assert!(msg.contains(w), "error {msg:?} does not mention {w:?}");
    }
}

/// A valid file with strings, an array, two tensors: the base for truncation and mutation.
fn valid_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", MetaValue::String("llama".into()))
        .unwrap();
    let tokens = ["a", "bc", "déf"]
        .map(|s| MetaValue::String(s.into()))
        .to_vec();
    w.add_metadata("tokenizer.ggml.tokens", MetaValue::Array(tokens))
        .unwrap();
    w.add_metadata(
        "x.nested",
        MetaValue::Array(vec![MetaValue::Array(vec![MetaValue::F32(1.0)])]),
    )
    .unwrap();
    w.add_tensor("a", DType::Q8_0, &[2, 32], vec![1; 68])
        .unwrap();
    w.add_tensor("b", DType::F16, &[3], vec![2; 6]).unwrap();
    w.to_bytes()
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("conch-formats-test-{}-{name}", std::process::id()))
}

#[test]
fn valid_base_file_parses() {
    let f = GgufFile::from_bytes(valid_file()).unwrap();
    assert_eq!(f.tensors().len(), 2);
}

#[test]
fn missing_file() {
    let path = temp_path("does-not-exist.gguf");
    let msg = GgufFile::open(&path).err().unwrap().to_string();
    assert!(msg.contains("does-not-exist.gguf"), "{msg}");
}

#[test]
fn empty_file() {
    let path = temp_path("empty.gguf");
    std::fs::write(&path, b"").unwrap();
    let msg = GgufFile::open(&path).err().unwrap().to_string();
    std::fs::remove_file(&path).unwrap();
    assert!(msg.contains("empty file"), "{msg}");
}

#[test]
fn truncated_at_every_byte() {
    let full = valid_file();
    for len in 0..full.len() {
        let msg = error_of(full[..len].to_vec());
        // Cut in a field: "truncated"; cut before counted items: "... bytes left in the file can hold";
        // cut in the data: a tensor "extends past the end".
        let named = ["truncated", "left in the file", "past the end"]
            .iter()
            .any(|w| msg.contains(w));
        assert!(named, "cut at {len}: {msg:?}");
    }
}

#[test]
fn wrong_magic() {
    let mut bytes = valid_file();
    bytes[..4].copy_from_slice(b"GGML");
    assert_error(bytes, &["magic", "GGUF"]);
}

#[test]
fn unsupported_versions() {
    assert_error(Raw::new(1, 0, 0).data(0), &["unsupported GGUF version 1"]);
    assert_error(Raw::new(4, 0, 0).data(0), &["unsupported GGUF version 4"]);
    assert_error(Raw::new(3u32.swap_bytes(), 0, 0).data(0), &["big-endian"]);
}

#[test]
fn absurd_tensor_and_metadata_counts() {
    assert_error(
        Raw::new(3, 1 << 60, 0).data(0),
        &["tensor count 1152921504606846976"],
    );
    assert_error(Raw::new(3, 0, u64::MAX).data(0), &["metadata count"]);
}

#[test]
fn absurd_string_length() {
    let mut r = Raw::new(3, 0, 1);
    r.u64(1 << 60).bytes(b"key");
    assert_error(r.data(0), &["string length 1152921504606846976"]);
    let mut r = Raw::new(3, 0, 1);
    r.string(b"general.name").u32(8).u64(u64::MAX);
    assert_error(r.data(0), &["general.name", "string length"]);
}

#[test]
fn absurd_array_count() {
    let mut r = Raw::new(3, 0, 1);
    r.string(b"tokenizer.ggml.scores")
        .u32(9)
        .u32(6)
        .u64(1 << 62);
    assert_error(r.data(0), &["tokenizer.ggml.scores", "element count"]);
}

#[test]
fn deeply_nested_arrays() {
    let mut r = Raw::new(3, 0, 1);
    r.string(b"deep").u32(9);
    for _ in 0..20 {
        r.u32(9).u64(1);
    }
    r.u32(4).u64(0);
    assert_error(r.data(0), &["deep", "nested"]);
}

#[test]
fn unknown_value_type() {
    let mut r = Raw::new(3, 0, 1);
    r.string(b"odd.key").u32(13).u32(0);
    assert_error(r.data(0), &["odd.key", "unknown value type 13"]);
    let mut r = Raw::new(3, 0, 1);
    r.string(b"odd.array").u32(9).u32(77).u64(0);
    assert_error(r.data(0), &["odd.array", "unknown array element type 77"]);
}

#[test]
fn bad_bool() {
    let mut r = Raw::new(3, 0, 1);
    r.string(b"flag").u32(7).bytes(&[2]);
    assert_error(r.data(0), &["flag", "bool"]);
}

#[test]
fn invalid_utf8_in_key_and_value() {
    let mut r = Raw::new(3, 0, 1);
    r.string(b"bad\xffkey").u32(4).u32(0);
    assert_error(
        r.data(0),
        &["metadata key #0", "invalid UTF-8", "bad\u{fffd}key"],
    );
    let mut r = Raw::new(3, 0, 1);
    r.string(b"general.name").u32(8).string(b"\xc3\x28");
    assert_error(r.data(0), &["general.name", "invalid UTF-8"]);
    let mut r = Raw::new(3, 1, 0);
    r.string(b"w\xfe").u32(1).u64(4).u32(0).u64(0);
    assert_error(r.data(16), &["tensor #0", "invalid UTF-8"]);
}

#[test]
fn duplicate_metadata_key() {
    let mut r = Raw::new(3, 0, 2);
    r.kv_u32("llama.block_count", 1)
        .kv_u32("llama.block_count", 2);
    assert_error(r.data(0), &["duplicate metadata key", "llama.block_count"]);
}

#[test]
fn duplicate_tensor_names() {
    let mut r = Raw::new(3, 2, 0);
    r.tensor("w", &[4], 0, 0).tensor("w", &[4], 0, 32);
    assert_error(r.data(64), &["duplicate tensor name", "\"w\""]);
}

#[test]
fn unknown_tensor_type() {
    let mut r = Raw::new(3, 1, 0);
    r.tensor("blk.0.attn_q.weight", &[32], 99, 0);
    assert_error(r.data(64), &["blk.0.attn_q.weight", "type id 99"]);
}

#[test]
fn too_many_dimensions() {
    let mut r = Raw::new(3, 1, 0);
    r.tensor("t", &[1, 1, 1, 1, 1], 0, 0);
    assert_error(r.data(4), &["\"t\"", "5 dimensions"]);
}

#[test]
fn dimensions_that_overflow() {
    let mut r = Raw::new(3, 1, 0);
    r.tensor("huge", &[1 << 40, 1 << 40], 0, 0);
    assert_error(r.data(4), &["huge", "too large"]);
    let mut r = Raw::new(3, 1, 0);
    r.tensor("huge", &[u64::MAX], 0, 0);
    assert_error(r.data(4), &["huge", "too large"]);
}

#[test]
fn partial_block_row() {
    let mut r = Raw::new(3, 1, 0);
    r.tensor("q", &[33], DType::Q8_0.ggml_id(), 0);
    assert_error(r.data(64), &["\"q\"", "row length 33", "block size 32"]);
}

#[test]
fn tensor_past_the_end() {
    let mut r = Raw::new(3, 1, 0);
    r.tensor("w", &[8], 0, 0);
    assert_error(r.data(31), &["\"w\"", "past the end"]);
    let mut r = Raw::new(3, 1, 0);
    r.tensor("w", &[8], 0, u64::MAX - 31);
    assert_error(r.data(64), &["\"w\"", "past the end"]);
}

#[test]
fn misaligned_offset() {
    let mut r = Raw::new(3, 1, 0);
    r.tensor("w", &[4], 0, 4);
    assert_error(r.data(64), &["\"w\"", "offset 4", "alignment 32"]);
}

#[test]
fn bad_alignment_value() {
    for a in [0, 48] {
        let mut r = Raw::new(3, 0, 1);
        r.kv_u32("general.alignment", a);
        assert_error(r.data(0), &["general.alignment", "power of two"]);
    }
}

#[test]
fn overlapping_tensors() {
    let mut r = Raw::new(3, 2, 0);
    r.tensor("a", &[16], 0, 0).tensor("b", &[16], 0, 32);
    assert_error(r.data(128), &["\"a\"", "\"b\"", "overlap"]);
}

#[test]
fn custom_alignment_is_honoured() {
    let mut r = Raw::new(3, 1, 1);
    r.kv_u32("general.alignment", 8).tensor("w", &[2], 0, 8);
    let mut bytes = r.0.clone();
    bytes.resize(bytes.len().div_ceil(8) * 8 + 16, 7);
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.alignment(), 8);
    assert_eq!(f.data_start() % 8, 0);
    let mut r = Raw::new(3, 1, 1);
    r.kv_u32("general.alignment", 8).tensor("w", &[2], 0, 4);
    assert_error(r.data(64), &["offset 4", "alignment 8"]);
}

/// Thousands of random corruptions of a valid file: each parses or fails cleanly, never panics.
#[test]
fn random_mutations_never_panic() {
    let base = valid_file();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let mut bytes = base.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[i] = rng.next() as u8,
                1 => bytes[i] ^= 1 << rng.below(8),
                2 => bytes[i] = [0x00, 0xff, 0x7f, 0x80][rng.below(4)],
                _ => bytes.truncate(i),
            }
            if bytes.is_empty() {
                break;
            }
        }
        if let Ok(f) = GgufFile::from_bytes(bytes) {
            use conch_formats::TensorStore;
            for name in f.tensor_names() {
                let t = f.tensor(&name).expect("listed tensors exist");
                assert_eq!(t.dtype.bytes_for(t.numel()), Some(t.data.len()));
            }
        }
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
