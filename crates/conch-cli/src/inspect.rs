//! `conch inspect`: what is inside a model file.

use anyhow::Result;
use conch_formats::{GgufFile, HfModelDir, MetaValue, TensorStore};
use conch_models::{ExpertCounts, ModelConfig};
use std::path::Path;

pub fn inspect(path: &Path, full: bool) -> Result<()> {
    if path.is_dir() {
        let dir = HfModelDir::open(path)?;
        println!("format: Hugging Face directory");
        println!(
            "config.json: {}",
            serde_json::to_string_pretty(&dir.config)?
        );
        print_tensors(&dir.weights);
        print_model(ModelConfig::from_hf_json(&dir.config));
    } else {
        let gguf = GgufFile::open(path)?;
        println!("format: GGUF v{}", gguf.version());
        println!("metadata:");
        for (key, value) in gguf.metadata() {
            println!("  {key} = {}", show(value, full));
        }
        print_tensors(&gguf);
        print_model(conch_models::load_gguf(&gguf).map(|m| m.config().clone()));
    }
    Ok(())
}

/// What the model costs: total and per-token parameters, and how its experts are routed.
fn print_model(config: Result<ModelConfig, conch_models::ModelError>) {
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            println!("model: not runnable by Conch: {e}");
            return;
        }
    };
    let p = config.parameter_counts();
    println!("architecture: {}", config.arch);
    println!(
        "parameters (matrices and embeddings): {} ({:.1} M) total, {} ({:.1} M) active per token",
        p.total,
        p.total as f64 / 1e6,
        p.active,
        p.active as f64 / 1e6
    );
    match &config.moe {
        Some(moe) => println!(
            "experts: {} per layer in {} of {} layers, {} chosen per token ({}); expert FFN {}, shared FFN {}",
            moe.n_expert(),
            moe.num_sparse_layers(),
            config.num_layers,
            moe.top_k(),
            moe.routing_description(),
            moe.expert_intermediate_size,
            moe.shared_intermediate_size
        ),
        None => println!("experts: none (dense)"),
    }
}

/// Tokens routed to each of the `n_expert` experts, one line per MoE layer.
pub fn print_expert_counts(counts: &ExpertCounts, n_expert: usize) {
    for (layer, row) in counts
        .counts
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
    {
        let cells: Vec<String> = (0..n_expert.max(row.len()))
            .map(|e| row.get(e).copied().unwrap_or(0).to_string())
            .collect();
        eprintln!("[layer {layer:>2} tokens per expert] {}", cells.join(" "));
    }
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
    println!(
        "parameters: {params} ({:.1} M), {:.1} MiB of weights",
        params as f64 / 1e6,
        bytes as f64 / (1 << 20) as f64
    );
}

fn show(v: &MetaValue, full: bool) -> String {
    match v {
        MetaValue::String(s) if !full && s.chars().count() > 120 => format!(
            "{:?}… ({} chars)",
            s.chars().take(120).collect::<String>(),
            s.chars().count()
        ),
        MetaValue::String(s) => format!("{s:?}"),
        MetaValue::Array(items) => {
            let shown = if full {
                items.len()
            } else {
                items.len().min(8)
            };
            let parts: Vec<String> = items[..shown].iter().map(|i| show(i, full)).collect();
            let more = if shown < items.len() {
                format!(", … ({} items)", items.len())
            } else {
                String::new()
            };
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
