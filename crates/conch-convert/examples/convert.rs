//! Tries the library by hand until `conch quantize` / `conch synth` exist:
//!   cargo run --release -p conch-convert --example convert -- quantize IN OUT TYPE
//!   cargo run --release -p conch-convert --example convert -- synth ARCH PRESET OUT [gguf|safetensors] [SEED] [F16|F32|BF16]
//!   cargo run --release -p conch-convert --example convert -- presets
//!   cargo run --release -p conch-convert --example convert -- spread MODEL.gguf N_TOKENS

use conch_convert::{presets, quantize, synth, QuantizeOptions, SynthFormat, SynthOptions};
use conch_kernels::DType;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("quantize") if args.len() == 4 => {
            let target = DType::from_name(&args[3]).ok_or(format!("unknown type {}", args[3]))?;
            let r = quantize(Path::new(&args[1]), Path::new(&args[2]), target, &QuantizeOptions::default())?;
            for t in &r.tensors {
                println!("{:40} {:?} {} -> {}", t.name, t.shape, t.from, t.to);
            }
            println!("file_type {} bytes {} -> {}", r.file_type, r.bytes_in, r.bytes_out);
            r.notes.iter().for_each(|n| println!("note: {n}"));
        }
        Some("synth") if args.len() >= 4 => {
            let format = match args.get(4).map(String::as_str) {
                Some("safetensors") => SynthFormat::Safetensors,
                _ => SynthFormat::Gguf,
            };
            let seed = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(0);
            let dtype = args.get(6).and_then(|s| DType::from_name(s)).unwrap_or(DType::F16);
            let r = synth(&args[1], &args[2], Path::new(&args[3]), &SynthOptions { seed, format, dtype })?;
            println!("{:?}\n{:?} bytes {}", r.preset, r.params, r.bytes);
        }
        Some("spread") if args.len() == 3 => {
            // Per-expert token share of a GGUF MoE model over N synthetic tokens.
            let file = conch_formats::GgufFile::open(Path::new(&args[1]))?;
            let model = conch_models::load_gguf(&file)?;
            let n: usize = args[2].parse()?;
            let vocab = model.config().vocab_size;
            let tokens: Vec<u32> = (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect();
            let mut counts = conch_models::ExpertCounts::default();
            let mut cache = model.new_cache(n);
            let start = std::time::Instant::now();
            model.forward_observed(&tokens, &mut cache, false, &mut counts)?;
            println!("forward of {n} tokens: {:.1} s", start.elapsed().as_secs_f64());
            for (layer, row) in counts.counts.iter().enumerate() {
                let total: u64 = row.iter().sum();
                let fair = total as f64 / row.len() as f64;
                let (min, max) = (row.iter().min().copied().unwrap_or(0), row.iter().max().copied().unwrap_or(0));
                println!("layer {layer:2}: {} experts, share min {:.2}x max {:.2}x of fair {fair:.1}", row.len(), min as f64 / fair, max as f64 / fair);
            }
        }
        Some("presets") => {
            for p in presets() {
                let c = p.param_counts();
                println!("{:9} {:22} total {:>13} active {:>13} embedding {:>11}", p.arch.name(), p.name, c.total, c.active, c.embedding);
            }
        }
        _ => return Err("usage: convert quantize IN OUT TYPE | synth ARCH PRESET OUT [gguf|safetensors] [SEED] [DTYPE] | presets".into()),
    }
    Ok(())
}
