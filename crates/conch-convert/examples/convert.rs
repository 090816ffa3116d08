//! Tries the library by hand until `conch quantize` / `conch synth` exist:
//!   cargo run --release -p conch-convert --example convert -- quantize IN OUT TYPE
//!   cargo run --release -p conch-convert --example convert -- synth ARCH PRESET OUT [gguf|safetensors] [SEED] [F16|F32|BF16]
//!   cargo run --release -p conch-convert --example convert -- presets

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
