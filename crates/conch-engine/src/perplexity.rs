//! Perplexity with llama.cpp's method (`llama-perplexity`): the text is tokenized once (with BOS),
//! cut into non-overlapping chunks of `ctx` tokens, the first token of each chunk replaced by BOS,
//! and only the second half of each chunk scored, so every scored token sees at least ctx/2 tokens.

use crate::{EngineError, LoadedModel};

#[derive(Clone, Debug)]
pub struct Perplexity {
    pub perplexity: f64,
    pub chunks: usize,
    pub scored_tokens: usize,
    pub text_tokens: usize,
}

/// `on_chunk(done, total, perplexity so far)` is called after each chunk.
pub fn perplexity(
    model: &LoadedModel,
    text: &str,
    ctx: usize,
    on_chunk: &mut dyn FnMut(usize, usize, f64),
) -> Result<Perplexity, EngineError> {
    if ctx < 4 {
        return Err(EngineError::BadRequest(format!(
            "context of {ctx} tokens is too small for perplexity"
        )));
    }
    let tokens = model.tokenizer.encode(text, true, false)?;
    if tokens.len() < 2 * ctx {
        return Err(EngineError::BadRequest(format!(
            "the text has {} tokens; perplexity with a context of {ctx} needs at least {}",
            tokens.len(),
            2 * ctx
        )));
    }
    let bos = if model.adds_bos() {
        model.tokenizer.bos_id()
    } else {
        None
    };
    let chunks = tokens.len() / ctx;
    let first = ctx / 2;
    let vocab = model.model.config().vocab_size;
    let mut cache = model.model.new_cache(ctx);
    let (mut nll, mut count) = (0f64, 0usize);
    for c in 0..chunks {
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        if let Some(bos) = bos {
            chunk[0] = bos;
        }
        cache.clear();
        let logits = model.model.forward(&chunk, &mut cache, true)?;
        for j in first..ctx - 1 {
            let row = &logits[j * vocab..(j + 1) * vocab];
            nll -= log_softmax_at(row, tokens[c * ctx + j + 1] as usize);
            count += 1;
        }
        on_chunk(c + 1, chunks, (nll / count as f64).exp());
    }
    Ok(Perplexity {
        perplexity: (nll / count as f64).exp(),
        chunks,
        scored_tokens: count,
        text_tokens: tokens.len(),
    })
}

fn log_softmax_at(row: &[f32], target: usize) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    row[target] as f64 - max - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::log_softmax_at;

    #[test]
    fn log_softmax_matches_definition() {
        let row = [1.0f32, 2.0, 3.0];
        let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
        assert!((log_softmax_at(&row, 1) - (2f64.exp() / z).ln()).abs() < 1e-12);
    }
}
