//! safetensors and Hugging Face directories: files written by the `safetensors` package
//! (tools/gen_format_fixtures.py), and damaged headers.

use conch_formats::safetensors::SafetensorsFile;
use conch_formats::{DType, HfModelDir, SafetensorsModel, TensorStore};
use conch_kernels::quant::dequantize;
use serde_json::Value;
use std::path::PathBuf;

fn formats_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/formats")
}

fn expected(set: &str) -> serde_json::Map<String, Value> {
    let all: Value =
        serde_json::from_slice(&std::fs::read(formats_dir().join("safetensors.json")).unwrap())
            .unwrap();
    all[set].as_object().unwrap().clone()
}

fn json_f32(v: &Value) -> f32 {
    match v {
        Value::String(s) if s == "inf" => f32::INFINITY,
        Value::String(s) if s == "-inf" => f32::NEG_INFINITY,
        v => v.as_f64().unwrap() as f32,
    }
}

fn check_store(store: &dyn TensorStore, want: &serde_json::Map<String, Value>) {
    let mut names = store.tensor_names();
    names.sort();
    let mut want_names: Vec<&String> = want.keys().collect();
    want_names.sort();
    assert_eq!(names.iter().collect::<Vec<_>>(), want_names);
    for (name, w) in want {
        let t = store.tensor(name).unwrap();
        assert_eq!(
            t.dtype,
            DType::from_name(w["dtype"].as_str().unwrap()).unwrap(),
            "{name}"
        );
        let shape: Vec<usize> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{name}");
        let mut got = vec![0f32; t.numel()];
        dequantize(t.dtype, &t.data, &mut got).unwrap();
        let want_values: Vec<f32> = w["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(json_f32)
            .collect();
        assert_eq!(got.len(), want_values.len(), "{name}");
        for (i, (g, v)) in got.iter().zip(&want_values).enumerate() {
            assert_eq!(g.to_bits(), v.to_bits(), "{name}[{i}]: {g} vs {v}");
        }
    }
}

#[test]
fn sharded_model_directory() {
    let model = SafetensorsModel::open_dir(&formats_dir().join("sharded")).unwrap();
    assert_eq!(model.files().len(), 2);
    check_store(&model, &expected("sharded"));
    assert_eq!(
        model.files()[0]
            .metadata()
            .get("format")
            .map(String::as_str),
        Some("pt")
    );
    assert!(model.tensor("no.such.tensor").is_none());
}

#[test]
fn single_file_directory() {
    let model = SafetensorsModel::open_dir(&formats_dir().join("single")).unwrap();
    check_store(&model, &expected("single"));
    assert_eq!(
        model.tensor("scalar").unwrap().shape,
        Vec::<usize>::new(),
        "0-d tensor"
    );
}

#[test]
fn hf_directory() {
    let dir = HfModelDir::open(&formats_dir().join("sharded")).unwrap();
    assert_eq!(dir.config["hidden_size"], 4);
    assert_eq!(dir.generation_config.as_ref().unwrap()["temperature"], 0.6);
    assert_eq!(dir.tokenizer_config.as_ref().unwrap()["eos_token"], "</s>");
    assert!(dir
        .tokenizer_json
        .as_ref()
        .unwrap()
        .ends_with("tokenizer.json"));
    assert_eq!(dir.weights.tensor_names().len(), 5);

    let single = HfModelDir::open(&formats_dir().join("single")).unwrap();
    assert!(
        single.generation_config.is_none()
            && single.tokenizer_config.is_none()
            && single.tokenizer_json.is_none()
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("conch-st-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn hf_directory_without_config() {
    let d = temp_dir("no-config");
    std::fs::copy(
        formats_dir().join("single/model.safetensors"),
        d.join("model.safetensors"),
    )
    .unwrap();
    let msg = HfModelDir::open(&d).err().unwrap().to_string();
    assert!(msg.contains("config.json"), "{msg}");
    std::fs::write(d.join("config.json"), "[1, 2]").unwrap();
    let msg = HfModelDir::open(&d).err().unwrap().to_string();
    assert!(
        msg.contains("config.json") && msg.contains("JSON object"),
        "{msg}"
    );
    std::fs::write(d.join("config.json"), "{\"a\": ").unwrap();
    let msg = HfModelDir::open(&d).err().unwrap().to_string();
    assert!(msg.contains("invalid JSON"), "{msg}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn directory_without_weights() {
    let d = temp_dir("no-weights");
    let msg = SafetensorsModel::open_dir(&d).err().unwrap().to_string();
    assert!(msg.contains("no model.safetensors"), "{msg}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn shard_index_problems() {
    let d = temp_dir("bad-index");
    for f in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        std::fs::copy(formats_dir().join("sharded").join(f), d.join(f)).unwrap();
    }
    let write_index = |map: &str| {
        std::fs::write(
            d.join("model.safetensors.index.json"),
            format!("{{\"weight_map\": {map}}}"),
        )
        .unwrap()
    };
    let err = |d: &PathBuf| SafetensorsModel::open_dir(d).err().unwrap().to_string();

    write_index(r#"{"model.norm.weight": "model-00001-of-00002.safetensors"}"#);
    let msg = err(&d);
    assert!(
        msg.contains("model.norm.weight") && msg.contains("does not hold it"),
        "{msg}"
    );
    write_index(r#"{"x": "../../etc/passwd"}"#);
    assert!(err(&d).contains("not a plain file name"));
    write_index(r#"{"x": "model-00003-of-00002.safetensors"}"#);
    assert!(err(&d).contains("model-00003-of-00002.safetensors"));
    std::fs::write(d.join("model.safetensors.index.json"), "{}").unwrap();
    assert!(err(&d).contains("weight_map"));
    std::fs::remove_dir_all(&d).unwrap();
}

/// A safetensors image with the given JSON header and `data_len` data bytes.
fn image(header: &str, data_len: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.resize(b.len() + data_len, 0);
    b
}

fn assert_error(bytes: Vec<u8>, wanted: &[&str]) {
    let msg = match SafetensorsFile::from_bytes(bytes) {
        Ok(_) => panic!("parsed without error"),
        Err(e) => e.to_string(),
    };
    for w in wanted {
        assert!(msg.contains(w), "error {msg:?} does not mention {w:?}");
    }
}

#[test]
fn valid_image_parses() {
    let header = r#"{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#;
    let f = SafetensorsFile::from_bytes(image(header, 4)).unwrap();
    let data_start = 8 + header.len();
    assert_eq!(f.entries()[0].range, data_start..data_start + 4);
}

#[test]
fn missing_and_empty_files() {
    let d = temp_dir("empty");
    let msg = SafetensorsFile::open(&d.join("missing.safetensors"))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("missing.safetensors"), "{msg}");
    std::fs::write(d.join("empty.safetensors"), b"").unwrap();
    let msg = SafetensorsFile::open(&d.join("empty.safetensors"))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("empty file"), "{msg}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn too_short_for_header_length() {
    assert_error(vec![1, 2, 3], &["too short", "header length"]);
}

#[test]
fn header_length_past_the_end() {
    let mut b = image("{}", 0);
    b[..8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert_error(b, &["header length 4611686018427387904"]);
}

#[test]
fn bad_json() {
    assert_error(image("{\"a\": ", 0), &["not a JSON object"]);
    assert_error(image("[1, 2]", 0), &["not a JSON object"]);
    assert_error(image("{\"a\": 5}", 0), &["\"a\"", "bad header entry"]);
    assert_error(
        image(r#"{"a":{"dtype":"F32","shape":[1]}}"#, 4),
        &["\"a\"", "data_offsets"],
    );
    assert_error(image(r#"{"__metadata__": {"k": 1}}"#, 0), &["__metadata__"]);
}

#[test]
fn unsupported_and_unknown_dtypes() {
    assert_error(
        image(
            r#"{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
            8,
        ),
        &["unsupported dtype I64", "\"ids\""],
    );
    assert_error(
        image(
            r#"{"w":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}}"#,
            1,
        ),
        &["unsupported dtype Q9", "\"w\""],
    );
}

#[test]
fn data_offsets_out_of_range() {
    assert_error(
        image(
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            7,
        ),
        &["\"w\"", "out of range"],
    );
    assert_error(
        image(
            r#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#,
            8,
        ),
        &["\"w\"", "out of range"],
    );
    let huge = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551615]}}"#;
    assert_error(image(huge, 8), &["\"w\"", "out of range"]);
}

#[test]
fn data_offsets_disagree_with_shape() {
    assert_error(
        image(
            r#"{"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}}"#,
            8,
        ),
        &["\"w\"", "needs 6"],
    );
    let huge = r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#;
    assert_error(image(huge, 8), &["\"w\"", "too large"]);
}

#[test]
fn overlapping_tensors() {
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    assert_error(image(h, 12), &["\"a\"", "\"b\"", "overlap"]);
}

#[test]
fn random_mutations_never_panic() {
    let base =
        std::fs::read(formats_dir().join("sharded/model-00001-of-00002.safetensors")).unwrap();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..5_000 {
        let mut bytes = base.clone();
        let i = (next() % bytes.len() as u64) as usize;
        match next() % 3 {
            0 => bytes[i] = next() as u8,
            1 => bytes[i] = b"0123456789[]{},:\"-"[(next() % 18) as usize],
            _ => bytes.truncate(i),
        }
        if let Ok(f) = SafetensorsFile::from_bytes(bytes) {
            for name in f.tensor_names() {
                let t = f.tensor(&name).unwrap();
                assert_eq!(t.dtype.bytes_for(t.numel()), Some(t.data.len()));
            }
        }
    }
}
