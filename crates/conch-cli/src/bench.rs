//! `conch bench`: prompt processing and generation speed with llama-bench's definitions.
//! pp N: one forward pass over N prompt tokens into an empty cache; tg N: N single-token forward
//! passes from an empty cache. Random token ids, a warm-up run first, mean ± standard deviation.

use anyhow::{bail, Result};
use conch_engine::sampler::Rng;
use conch_engine::LoadedModel;
use std::time::Instant;

pub struct BenchResult {
    pub pp: Option<(f64, f64)>,
    pub tg: Option<(f64, f64)>,
}

pub fn bench(model: &LoadedModel, pp: usize, tg: usize, reps: usize) -> Result<BenchResult> {
    if reps == 0 {
        bail!("--reps must be at least 1");
    }
    let vocab = model.model.config().vocab_size as u64;
    let mut rng = Rng::new(42);
    let mut cache = model.model.new_cache((pp + tg).max(1));
    let mut run_pp = |cache: &mut conch_models::KvCache| -> Result<f64> {
        let tokens: Vec<u32> = (0..pp).map(|_| (rng.next_u64() % vocab) as u32).collect();
        cache.clear();
        let t = Instant::now();
        model.model.forward(&tokens, cache, false)?;
        Ok(pp as f64 / t.elapsed().as_secs_f64())
    };
    let pp_result = if pp > 0 {
        run_pp(&mut cache)?;
        let runs = (0..reps)
            .map(|_| run_pp(&mut cache))
            .collect::<Result<Vec<_>>>()?;
        Some(mean_sd(&runs))
    } else {
        None
    };
    let run_tg = |cache: &mut conch_models::KvCache| -> Result<f64> {
        cache.clear();
        let t = Instant::now();
        let mut token = 1u32;
        for _ in 0..tg {
            let logits = model.model.forward(&[token], cache, false)?;
            token = conch_engine::sampler::argmax(&logits);
        }
        Ok(tg as f64 / t.elapsed().as_secs_f64())
    };
    let tg_result = if tg > 0 {
        run_tg(&mut cache)?;
        let runs = (0..reps)
            .map(|_| run_tg(&mut cache))
            .collect::<Result<Vec<_>>>()?;
        Some(mean_sd(&runs))
    } else {
        None
    };
    Ok(BenchResult {
        pp: pp_result,
        tg: tg_result,
    })
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}
