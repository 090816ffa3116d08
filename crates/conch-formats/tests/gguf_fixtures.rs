//! The GGUF reader against files written by gguf-py's GGUFWriter (tools/gen_format_fixtures.py),
//! the writer by round trip, and the real models in ~/.cache/conch/models when present.

use conch_formats::gguf::GgufWriter;
use conch_formats::{DType, GgufFile, MetaValue, TensorStore};
use conch_kernels::quant::dequantize;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Checks `value` against gguf-py's type name and the JSON value it was given.
fn assert_meta_eq(key: &str, gguf_type: &str, want: &Value, got: &MetaValue) {
    let ok = match (gguf_type, got) {
        ("UINT8", MetaValue::U8(v)) => want.as_u64() == Some(*v as u64),
        ("INT8", MetaValue::I8(v)) => want.as_i64() == Some(*v as i64),
        ("UINT16", MetaValue::U16(v)) => want.as_u64() == Some(*v as u64),
        ("INT16", MetaValue::I16(v)) => want.as_i64() == Some(*v as i64),
        ("UINT32", MetaValue::U32(v)) => want.as_u64() == Some(*v as u64),
        ("INT32", MetaValue::I32(v)) => want.as_i64() == Some(*v as i64),
        ("UINT64", MetaValue::U64(v)) => want.as_u64() == Some(*v),
        ("INT64", MetaValue::I64(v)) => want.as_i64() == Some(*v),
        ("FLOAT32", MetaValue::F32(v)) => want.as_f64() == Some(*v as f64),
        ("FLOAT64", MetaValue::F64(v)) => want.as_f64() == Some(*v),
        ("BOOL", MetaValue::Bool(v)) => want.as_bool() == Some(*v),
        ("STRING", MetaValue::String(v)) => want.as_str() == Some(v.as_str()),
        ("ARRAY", MetaValue::Array(items)) => {
            let want_items = want.as_array().unwrap();
            assert_eq!(items.len(), want_items.len(), "{key}: array length");
            for (w, g) in want_items.iter().zip(items) {
                // gguf-py picks the element type from the Python value: str, float (f32), bool, int (i32), list.
                let t = match w {
                    Value::String(_) => "STRING",
                    Value::Bool(_) => "BOOL",
                    Value::Array(_) => "ARRAY",
                    Value::Number(n) if n.is_f64() => "FLOAT32",
                    _ => "INT32",
                };
                assert_meta_eq(key, t, w, g);
            }
            true
        }
        _ => false,
    };
    assert!(ok, "{key}: gguf-py wrote {gguf_type} {want}, read {got:?}");
}

fn check_against_description(file: &GgufFile, description: &Value) {
    let want_meta = description["metadata"].as_array().unwrap();
    let got_meta: Vec<(&str, &MetaValue)> = file.metadata().collect();
    let want_keys: Vec<&str> = want_meta.iter().map(|m| m[0].as_str().unwrap()).collect();
    let got_keys: Vec<&str> = got_meta.iter().map(|(k, _)| *k).collect();
    assert_eq!(got_keys, want_keys, "metadata keys in file order");
    for (m, (key, value)) in want_meta.iter().zip(&got_meta) {
        assert_meta_eq(key, m[1].as_str().unwrap(), &m[2], value);
    }

    let want_tensors = description["tensors"].as_array().unwrap();
    assert_eq!(file.tensors().len(), want_tensors.len());
    for (w, info) in want_tensors.iter().zip(file.tensors()) {
        let name = w[0].as_str().unwrap();
        assert_eq!(info.name, name);
        assert_eq!(
            info.dtype,
            DType::from_name(w[1].as_str().unwrap()).unwrap(),
            "{name}: dtype"
        );
        let shape: Vec<usize> = w[2]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(info.shape, shape, "{name}: shape (outermost first)");
        assert_eq!(info.offset % file.alignment(), 0, "{name}: aligned offset");

        let tensor = file.tensor(name).unwrap();
        assert_eq!(tensor.shape, shape);
        let blocks_file = w[3].as_str().unwrap();
        let blocks = std::fs::read(fixtures().join("quant").join(blocks_file)).unwrap();
        assert_eq!(
            &tensor.data[..],
            &blocks[..tensor.data.len()],
            "{name}: tensor bytes"
        );
        assert_eq!(info.size, tensor.data.len());
        assert_eq!(
            tensor.dtype.bytes_for(tensor.numel()),
            Some(tensor.data.len()),
            "{name}: size"
        );
    }
}

#[test]
fn reads_every_value_and_tensor_type_written_by_gguf_py() {
    let dir = fixtures().join("formats");
    let file = GgufFile::open(&dir.join("all_types.gguf")).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 64);
    assert_eq!(file.architecture(), Some("conchtest"));
    check_against_description(&file, &read_json(&dir.join("all_types.json")));
}

#[test]
fn tensors_dequantize_to_gguf_py_values() {
    let file = GgufFile::open(&fixtures().join("formats/all_types.gguf")).unwrap();
    for info in file.tensors() {
        let tensor = file.tensor(&info.name).unwrap();
        let expected =
            std::fs::read(fixtures().join(format!("quant/{}.dequant.f32.bin", info.dtype)))
                .unwrap();
        let mut got = vec![0f32; tensor.numel()];
        dequantize(tensor.dtype, &tensor.data, &mut got).unwrap();
        for (i, (g, w)) in got.iter().zip(expected.chunks_exact(4)).enumerate() {
            let w = f32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{}: value {i}: {g} vs {w}",
                info.name
            );
        }
    }
}

#[test]
fn typed_getters() {
    let file = GgufFile::open(&fixtures().join("formats/all_types.gguf")).unwrap();
    assert_eq!(file.get_u64("test.u8"), Some(250));
    assert_eq!(file.get_u64("test.u64"), Some((1 << 63) + 5));
    assert_eq!(
        file.get_u64("test.i8"),
        None,
        "negative integers are not u64"
    );
    assert_eq!(file.get_u64("test.f32"), None, "floats are not integers");
    assert_eq!(file.get_f64("test.i32"), Some(-2_000_000_000.0));
    assert_eq!(file.get_f32("test.f64"), Some(0.1f64 as f32));
    assert_eq!(file.get_f32("test.f32"), Some(1e-5f32));
    assert_eq!(file.get_bool("test.bool_true"), Some(true));
    assert_eq!(file.get_bool("test.u8"), None);
    assert_eq!(file.get_str("test.empty_string"), Some(""));
    assert_eq!(
        file.get_str_array("test.str_array").unwrap(),
        ["<s>", "</s>", "ĠHello", "日本語", ""]
    );
    assert_eq!(
        file.get_i32_array("test.i32_array").unwrap(),
        [1, -2, 300000, -400000]
    );
    assert_eq!(
        file.get_f32_array("test.f32_array").unwrap(),
        [0.5, -1.25, 0.3]
    );
    assert_eq!(
        file.get_f32_array("test.i32_array").unwrap(),
        [1.0, -2.0, 300000.0, -400000.0]
    );
    assert_eq!(file.get_str_array("test.i32_array"), None);
    assert_eq!(file.get("no.such.key"), None);
    let nested = file.get("test.nested_array").unwrap().as_array().unwrap();
    assert_eq!(
        nested[2],
        MetaValue::Array(vec![
            MetaValue::I32(4),
            MetaValue::I32(5),
            MetaValue::I32(6)
        ])
    );
}

#[test]
fn reads_version_2() {
    let dir = fixtures().join("formats");
    let file = GgufFile::open(&dir.join("small_v2.gguf")).unwrap();
    assert_eq!(file.version(), 2);
    assert_eq!(file.alignment(), 32);
    check_against_description(&file, &read_json(&dir.join("small_v2.json")));
}

#[test]
fn writer_round_trips_a_gguf_py_file() {
    let original = GgufFile::open(&fixtures().join("formats/all_types.gguf")).unwrap();
    let mut w = GgufWriter::new();
    for (key, value) in original.metadata() {
        w.add_metadata(key, value.clone()).unwrap();
    }
    for info in original.tensors() {
        let t = original.tensor(&info.name).unwrap();
        w.add_tensor(&t.name, t.dtype, &t.shape, t.data.to_vec())
            .unwrap();
    }
    let copy = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(copy.version(), 3);
    assert_eq!(copy.alignment(), 64);
    assert_eq!(
        copy.metadata().collect::<Vec<_>>(),
        original.metadata().collect::<Vec<_>>()
    );
    assert_eq!(
        copy.tensors(),
        original.tensors(),
        "same infos, offsets included (both pack in order)"
    );
    for info in original.tensors() {
        assert_eq!(
            &copy.tensor(&info.name).unwrap().data[..],
            &original.tensor(&info.name).unwrap().data[..]
        );
    }
}

#[test]
fn writer_refuses_inconsistent_input() {
    let mut w = GgufWriter::new();
    w.add_metadata("a", MetaValue::U32(1)).unwrap();
    assert!(w
        .add_metadata("a", MetaValue::U32(2))
        .unwrap_err()
        .to_string()
        .contains("duplicate metadata key"));
    let mixed = MetaValue::Array(vec![MetaValue::U32(1), MetaValue::F32(1.0)]);
    assert!(w
        .add_metadata("m", mixed)
        .unwrap_err()
        .to_string()
        .contains("same type"));
    assert!(w
        .set_alignment(48)
        .unwrap_err()
        .to_string()
        .contains("power of two"));
    let err = w
        .add_tensor("t", DType::Q8_0, &[2, 32], vec![0; 10])
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs 68 bytes"), "{err}");
    let err = w
        .add_tensor("t", DType::Q8_0, &[2, 16], vec![0; 34])
        .unwrap_err()
        .to_string();
    assert!(err.contains("block size"), "{err}");
    w.add_tensor("t", DType::F32, &[1], vec![0; 4]).unwrap();
    assert!(w
        .add_tensor("t", DType::F32, &[1], vec![0; 4])
        .unwrap_err()
        .to_string()
        .contains("duplicate tensor"));
}

/// The real models are not in CI; when present they must open and every tensor must dequantize.
#[test]
fn opens_real_models_if_present() {
    let Some(home) = std::env::var_os("HOME") else {
        return;
    };
    let dir = PathBuf::from(home).join(".cache/conch/models");
    let models: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
                .collect()
        })
        .unwrap_or_default();
    if models.is_empty() {
        assert!(
            std::env::var_os("CONCH_REQUIRE_REAL_MODELS").is_none(),
            "no GGUF models in {}",
            dir.display()
        );
        println!("note: no GGUF models in {}, skipping", dir.display());
    }
    for path in models {
        let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            file.architecture().is_some(),
            "{}: general.architecture",
            path.display()
        );
        assert!(file
            .get_str_array("tokenizer.ggml.tokens")
            .is_some_and(|t| !t.is_empty()));
        assert!(!file.tensors().is_empty());
        for info in file.tensors() {
            let t = file.tensor(&info.name).unwrap();
            let mut out = vec![0f32; t.numel()];
            dequantize(t.dtype, &t.data, &mut out).unwrap_or_else(|e| panic!("{}: {e}", info.name));
            assert!(
                out.iter().all(|v| v.is_finite()),
                "{}: {} has non-finite values",
                path.display(),
                info.name
            );
        }
        println!(
            "{}: {} tensors, {} metadata keys",
            path.display(),
            file.tensors().len(),
            file.metadata().count()
        );
    }
}

/// llama.cpp's vocabulary-only files (bench/work, not in CI): every one must open, with its tokens
/// as strings and, where present, one score and one type per token.
#[test]
fn opens_llama_cpp_vocab_files_if_present() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/work/llama.cpp/models");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
                .collect()
        })
        .unwrap_or_default();
    if files.is_empty() {
        println!(
            "note: no llama.cpp vocab files in {}, skipping",
            dir.display()
        );
    }
    for path in files {
        let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let tokens = file.get_str_array("tokenizer.ggml.tokens").expect("tokens");
        assert!(!tokens.is_empty(), "{}", path.display());
        if let Some(scores) = file.get_f32_array("tokenizer.ggml.scores") {
            assert_eq!(scores.len(), tokens.len(), "{}: scores", path.display());
        }
        if let Some(types) = file.get_i32_array("tokenizer.ggml.token_type") {
            assert_eq!(types.len(), tokens.len(), "{}: token types", path.display());
        }
    }
}
