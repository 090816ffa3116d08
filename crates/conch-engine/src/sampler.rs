//! Turning logits into the next token: penalties, temperature, top-k, top-p, min-p, seeded draws.
//!
//! The order follows Hugging Face's `generate`: logit bias and penalties first, then temperature,
//! then the truncations (top-k, top-p, min-p), then a draw from what is left. Temperature 0 is greedy.

use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 (or below) picks the most likely token.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables.
    pub min_p: f32,
    /// CTRL-style multiplicative penalty on tokens seen in the context; 1.0 disables.
    pub repetition_penalty: f32,
    /// OpenAI-style additive penalties on tokens already generated.
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Added to the logit of a token before anything else.
    pub logit_bias: HashMap<u32, f32>,
    /// Same seed, same prompt, same settings: same output.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: HashMap::new(),
            seed: None,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let finite = |name: &str, v: f32| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(format!("{name} must be a finite number"))
            }
        };
        finite("temperature", self.temperature)?;
        finite("top_p", self.top_p)?;
        finite("min_p", self.min_p)?;
        finite("repetition_penalty", self.repetition_penalty)?;
        finite("presence_penalty", self.presence_penalty)?;
        finite("frequency_penalty", self.frequency_penalty)?;
        if self.temperature < 0.0 {
            return Err("temperature must be >= 0".into());
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err("top_p must be in (0, 1]".into());
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err("min_p must be in [0, 1]".into());
        }
        if self.repetition_penalty <= 0.0 {
            return Err("repetition_penalty must be > 0".into());
        }
        Ok(())
    }
}

/// A small, fast, seedable generator (xoshiro256**), so runs are reproducible across platforms.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            // splitmix64 spreads any seed, 0 included, over the whole state.
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn from_entropy() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng::new(t ^ (std::process::id() as u64).rotate_left(32))
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Per-sequence sampling state: the settings, the generator and the counts of generated tokens.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    generated_counts: HashMap<u32, u32>,
    /// Scratch reused between calls (no allocation per token once warm).
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = params.seed.map(Rng::new).unwrap_or_else(Rng::from_entropy);
        Sampler {
            params,
            rng,
            generated_counts: HashMap::new(),
            candidates: Vec::new(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Tells the sampler a token was appended to the output (for presence/frequency penalties).
    pub fn accept(&mut self, token: u32) {
        *self.generated_counts.entry(token).or_insert(0) += 1;
    }

    /// Applies logit bias and penalties in place. `context` is every token the model has seen
    /// (prompt and output), used by the repetition penalty.
    pub fn apply_penalties(&self, logits: &mut [f32], context: &[u32]) {
        let p = &self.params;
        for (&tok, &bias) in &p.logit_bias {
            if let Some(l) = logits.get_mut(tok as usize) {
                *l += bias;
            }
        }
        if p.repetition_penalty != 1.0 {
            let mut seen = context.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for tok in seen {
                if let Some(l) = logits.get_mut(tok as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&tok, &count) in &self.generated_counts {
                if let Some(l) = logits.get_mut(tok as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * count as f32;
                }
            }
        }
    }

    /// Picks the next token from `logits` (modified in place by the penalties).
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> u32 {
        self.apply_penalties(logits, context);
        let p = &self.params;
        if p.temperature <= 0.0 {
            return argmax(logits);
        }
        let cands = &mut self.candidates;
        cands.clear();
        cands.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.is_nan())
                .map(|(i, &l)| (i as u32, l / p.temperature)),
        );
        if cands.is_empty() {
            return 0;
        }
        // Sorting by logit descending, ties broken by id, makes the truncations well defined.
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < cands.len() {
            cands.select_nth_unstable_by(p.top_k - 1, by_logit);
            cands.truncate(p.top_k);
        }
        cands.sort_unstable_by(by_logit);
        // Softmax over the survivors, in f64 for a stable cumulative sum.
        let max = cands[0].1 as f64;
        let mut probs: Vec<f64> = cands.iter().map(|c| (c.1 as f64 - max).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= total);
        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, &pr) in probs.iter().enumerate() {
                cum += pr;
                if cum >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p as f64;
            keep = keep.min(probs.iter().take_while(|&&pr| pr >= floor).count().max(1));
        }
        let kept = &probs[..keep];
        let mass: f64 = kept.iter().sum();
        let mut r = self.rng.next_f64() * mass;
        for (i, &pr) in kept.iter().enumerate() {
            if r < pr {
                return cands[i].0;
            }
            r -= pr;
        }
        cands[keep - 1].0
    }
}

/// Index of the largest logit (the first one on ties, as `torch.argmax` does).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams {
            seed: Some(7),
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            temperature: 1.0,
            ..Default::default()
        };
        f(&mut p);
        p
    }

    #[test]
    fn greedy_takes_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, 3.0, -1.0]), 1);
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&mut [0.1, 0.2, 5.0, 0.3], &[]), 2);
    }

    #[test]
    fn same_seed_same_draws_and_distribution_matches() {
        let logits = [1.0f32, 2.0, 0.5, 2.0, -1.0];
        let draw = |seed| {
            let mut s = Sampler::new(params(|p| p.seed = Some(seed)));
            (0..4000)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        let a = draw(1);
        assert_eq!(a, draw(1));
        assert_ne!(a, draw(2));
        // Empirical frequencies follow softmax(logits) within sampling error.
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        for (tok, &l) in logits.iter().enumerate() {
            let expected = (l as f64).exp() / z;
            let got = a.iter().filter(|&&t| t as usize == tok).count() as f64 / a.len() as f64;
            assert!(
                (got - expected).abs() < 0.03,
                "token {tok}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn truncations_restrict_the_support() {
        let logits = [0.0f32, 1.0, 2.0, 3.0, 4.0];
        let support = |p: SamplingParams| {
            let mut s = Sampler::new(p);
            let mut seen: Vec<u32> = (0..2000)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect();
            seen.sort();
            seen.dedup();
            seen
        };
        assert_eq!(support(params(|p| p.top_k = 2)), vec![3, 4]);
        // softmax: p4≈0.636, p3≈0.234, p2≈0.086: top_p 0.8 keeps {4, 3}.
        assert_eq!(support(params(|p| p.top_p = 0.8)), vec![3, 4]);
        // min_p 0.2 keeps tokens with p >= 0.2 * p4 ≈ 0.127: {4, 3}.
        assert_eq!(support(params(|p| p.min_p = 0.2)), vec![3, 4]);
        assert_eq!(support(params(|p| p.top_k = 1)), vec![4]);
    }

    #[test]
    fn penalties_and_bias() {
        let s = Sampler::new(params(|p| p.repetition_penalty = 2.0));
        let mut l = [2.0f32, -2.0, 1.0];
        s.apply_penalties(&mut l, &[0, 1, 1]);
        assert_eq!(l, [1.0, -4.0, 1.0]);

        let mut s = Sampler::new(params(|p| {
            p.presence_penalty = 0.5;
            p.frequency_penalty = 0.25;
            p.logit_bias.insert(2, 10.0);
        }));
        s.accept(0);
        s.accept(0);
        let mut l = [1.0f32, 1.0, 1.0];
        s.apply_penalties(&mut l, &[]);
        assert_eq!(l, [1.0 - 0.5 - 0.5, 1.0, 11.0]);
    }

    #[test]
    fn rejects_bad_settings() {
        assert!(params(|p| p.temperature = -1.0).validate().is_err());
        assert!(params(|p| p.top_p = 0.0).validate().is_err());
        assert!(params(|p| p.min_p = 1.5).validate().is_err());
        assert!(params(|p| p.temperature = f32::NAN).validate().is_err());
        assert!(params(|_| {}).validate().is_ok());
    }
}
