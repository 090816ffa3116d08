//! `conch inspect`: what is inside a model file.

use anyhow::Result;
use conch_formats::{GgufFile, HfModelDir, MetaValue, TensorStore};
use std::path::Path;

pub fn inspect(path: &Path, full: bool) -> Result<()> {
    if path.is_dir() {
        let dir = HfModelDir::open(path)?;
        println!("format: Hugging Face directory");
        println!("config.json: {}", serde_json::to_string_pretty(&dir.config)?);
        print_tensors(&dir.weights);
    } else {
        let gguf = GgufFile::open(path)?;
        println!("format: GGUF v{}", gguf.version());
        println!("metadata:");
        for (key, value) in gguf.metadata() {
            println!("  {key} = {}", show(value, full));
        }
        print_tensors(&gguf);
    }
    Ok(())
}

fn print_tensors(store: &dyn TensorStore) {
    let mut names = store.tensor_names();
    names.sort();
    let mut params = 0usize;
    let mut bytes = 0usize;
    println!("tensors ({}):", names.len());
    for name in &names {
        if let Some(t) = store.tensor(name) {
            params += t.numel();
            bytes += t.data.len();
            println!("  {:<48} {:<6} {:?}", t.name, t.dtype.name(), t.shape);
        }
    }
    println!("parameters: {params} ({:.1} M), {:.1} MiB of weights", params as f64 / 1e6, bytes as f64 / (1 << 20) as f64);
}

fn show(v: &MetaValue, full: bool) -> String {
    match v {
        MetaValue::String(s) if !full && s.chars().count() > 120 => format!("{:?}… ({} chars)", s.chars().take(120).collect::<String>(), s.chars().count()),
        MetaValue::String(s) => format!("{s:?}"),
        MetaValue::Array(items) => {
            let shown = if full { items.len() } else { items.len().min(8) };
            let parts: Vec<String> = items[..shown].iter().map(|i| show(i, full)).collect();
            let more = if shown < items.len() { format!(", … ({} items)", items.len()) } else { String::new() };
            format!("[{}{more}]", parts.join(", "))
        }
        MetaValue::U8(x) => x.to_string(),
        MetaValue::I8(x) => x.to_string(),
        MetaValue::U16(x) => x.to_string(),
        MetaValue::I16(x) => x.to_string(),
        MetaValue::U32(x) => x.to_string(),
        MetaValue::I32(x) => x.to_string(),
        MetaValue::U64(x) => x.to_string(),
        MetaValue::I64(x) => x.to_string(),
        MetaValue::F32(x) => x.to_string(),
        MetaValue::F64(x) => x.to_string(),
        MetaValue::Bool(x) => x.to_string(),
    }
}
