use conch_convert::*;
use conch_formats::{DType, GgufFile};
use conch_models::load_gguf;
#[test]
fn probe() {
    let dir = std::env::temp_dir().join("conch-probe"); std::fs::create_dir_all(&dir).unwrap();
    let toks: Vec<u32> = (0..16).map(|i| ((i * 7919 + 13) % 320) as u32).collect();
    let run = |p: &std::path::Path| { let f = GgufFile::open(p).unwrap(); let m = load_gguf(&f).unwrap(); let mut c = m.new_cache(16); m.forward(&toks, &mut c, true).unwrap() };
    let rel = |a: &[f32], b: &[f32]| { let d: f32 = a.iter().zip(b).map(|(x,y)| (x-y).powi(2)).sum(); let n: f32 = b.iter().map(|y| y*y).sum(); (d/n).sqrt() };
    for arch in ["qwen3"] {
        let a = dir.join("a.gguf"); let b = dir.join("b.gguf");
        synth(arch, "tiny", &a, &SynthOptions { seed: 5, format: SynthFormat::Gguf, dtype: DType::F32 }).unwrap();
        synth(arch, "tiny", &b, &SynthOptions { seed: 5, format: SynthFormat::Gguf, dtype: DType::F16 }).unwrap();
        let r = run(&a);
        println!("F16 err {}", rel(&run(&b), &r));
        println!("logit rms {}", (r.iter().map(|x| x*x).sum::<f32>() / r.len() as f32).sqrt());
        for t in [DType::Q8_0, DType::Q6_K, DType::Q4_K, DType::Q4_0] {
            let o = dir.join("q.gguf"); quantize(&a, &o, t, &QuantizeOptions::default()).unwrap();
            println!("{t} err {}", rel(&run(&o), &r));
            let o2 = dir.join("q2.gguf"); quantize(&a, &o2, t, &QuantizeOptions{pure: true}).unwrap();
        }
    }
}
