//! Expert choice: from one token's router logits to its chosen experts and their weights.
//!
//! The architectures differ only in the steps below, each a field of [`RouterConfig`]:
//! 1. scores from logits ([`Scoring`]);
//! 2. optional group limit: rank groups of consecutive experts, keep the best `topk_group` groups
//!    ([`GroupLimit`]);
//! 3. choice of `top_k` experts by score plus an optional per-expert correction bias (the bias moves
//!    the choice only; weights use the unbiased scores);
//! 4. optional renormalisation of the chosen weights ([`Normalization`]);
//! 5. a constant scale (`routed_scaling_factor`).
//!
//! All of it runs in f32, as every reference does.

use crate::ModelError;

/// How a router turns logits into scores and weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scoring {
    /// Softmax over all experts; choice and weights on the probabilities (Mixtral, Qwen-MoE, OLMoE,
    /// DeepSeek-V2, ERNIE, MiniMax-Text-01).
    Softmax,
    /// Independent sigmoid per expert (DeepSeek-V3, GLM-4.5-MoE, MiniMax-M2).
    Sigmoid,
    /// Choice on the raw logits, weights a softmax over the chosen logits only (gpt-oss, GraniteMoE).
    SoftmaxOfTopK,
    /// PhiMoE's sparsemixer at inference: two rounds, each taking the best remaining expert and
    /// weighting it by a softmax over the experts whose logit is within `2·jitter_eps` (relative) of
    /// it. Always two experts; no group limit, bias, normalisation.
    SparseMixer { jitter_eps: f32 },
}

/// How a group of experts is ranked for group-limited routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupScore {
    /// The group's best score (DeepSeek-V2 `group_limited_greedy`).
    Max,
    /// The sum of the group's two best (bias-corrected) scores (DeepSeek-V3, GLM-4.5).
    SumOfTop2,
}

/// Experts form `n_group` equal groups of consecutive ids; only experts of the `topk_group` best
/// groups can be chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupLimit {
    pub n_group: usize,
    pub topk_group: usize,
    pub score: GroupScore,
}

/// Rescaling of the chosen weights so they sum to one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Normalization {
    None,
    /// `w / Σw` (DeepSeek-V3's `+1e-20` in the denominator is below f32 resolution of any real sum).
    Sum,
    /// `w / max(Σw, min)` (ERNIE-4.5's `moe_norm_min`).
    SumClamped {
        min: f32,
    },
}

/// One architecture's routing rule. Per-layer data (the correction bias) is passed to [`route`].
#[derive(Clone, Debug, PartialEq)]
pub struct RouterConfig {
    pub n_expert: usize,
    pub top_k: usize,
    pub scoring: Scoring,
    pub group_limit: Option<GroupLimit>,
    pub normalization: Normalization,
    /// Multiplies every final weight (`routed_scaling_factor`; 1 for most architectures).
    pub scaling: f32,
}

impl RouterConfig {
    /// Plain routing: `top_k` of `n_expert` by `scoring`, no group limit, unscaled.
    pub fn new(
        n_expert: usize,
        top_k: usize,
        scoring: Scoring,
        normalization: Normalization,
    ) -> RouterConfig {
        RouterConfig {
            n_expert,
            top_k,
            scoring,
            group_limit: None,
            normalization,
            scaling: 1.0,
        }
    }

    /// Checks the configuration can be routed: `0 < top_k <= n_expert`, groups divide the experts and
    /// keep at least `top_k` candidates.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |msg: String| Err(ModelError::Config(format!("MoE router: {msg}")));
        if self.n_expert == 0 || self.top_k == 0 || self.top_k > self.n_expert {
            return bad(format!(
                "cannot choose {} of {} experts",
                self.top_k, self.n_expert
            ));
        }
        if let Scoring::SparseMixer { jitter_eps } = self.scoring {
            if self.top_k != 2 || self.n_expert < 2 {
                return bad(format!(
                    "sparsemixer chooses exactly 2 experts, configured for {}",
                    self.top_k
                ));
            }
            if !jitter_eps.is_finite() || jitter_eps < 0.0 {
                return bad(format!("sparsemixer jitter eps {jitter_eps}"));
            }
            if self.group_limit.is_some() {
                return bad("sparsemixer has no group limit".into());
            }
        }
        if !self.scaling.is_finite() {
            return bad(format!("scaling factor {}", self.scaling));
        }
        if let Normalization::SumClamped { min } = self.normalization {
            if !(min.is_finite() && min >= 0.0) {
                return bad(format!("normalisation minimum {min}"));
            }
        }
        if let Some(g) = self.group_limit {
            if g.n_group == 0 || self.n_expert % g.n_group != 0 {
                return bad(format!(
                    "{} experts do not split into {} groups",
                    self.n_expert, g.n_group
                ));
            }
            let group_size = self.n_expert / g.n_group;
            if g.topk_group == 0 || g.topk_group > g.n_group {
                return bad(format!(
                    "cannot keep {} of {} groups",
                    g.topk_group, g.n_group
                ));
            }
            if g.topk_group * group_size < self.top_k {
                return bad(format!(
                    "{} kept groups of {group_size} experts cannot supply {} experts",
                    g.topk_group, self.top_k
                ));
            }
            if g.score == GroupScore::SumOfTop2 && group_size < 2 {
                return bad("group score of the top 2 needs groups of at least 2 experts".into());
            }
        }
        Ok(())
    }
}

/// The experts chosen for a run of tokens: `top_k` (id, weight) pairs per token, row-major.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Routing {
    pub top_k: usize,
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
}

impl Routing {
    pub fn n_tokens(&self) -> usize {
        self.ids.len().checked_div(self.top_k).unwrap_or(0)
    }

    /// Token `t`'s chosen expert ids (in choice order: best first).
    pub fn token_ids(&self, t: usize) -> &[u32] {
        &self.ids[t * self.top_k..(t + 1) * self.top_k]
    }

    pub fn token_weights(&self, t: usize) -> &[f32] {
        &self.weights[t * self.top_k..(t + 1) * self.top_k]
    }
}

/// Routes `n_tokens` tokens from their router logits (`n_tokens × n_expert`, row-major).
/// `correction_bias` (`n_expert` values) is added to the scores for the choice only.
pub fn route(
    logits: &[f32],
    n_tokens: usize,
    cfg: &RouterConfig,
    correction_bias: Option<&[f32]>,
) -> Result<Routing, ModelError> {
    cfg.validate()?;
    if logits.len() != n_tokens * cfg.n_expert {
        return Err(ModelError::Config(format!(
            "MoE router: {} logits for {n_tokens} tokens of {} experts",
            logits.len(),
            cfg.n_expert
        )));
    }
    if let Some(bias) = correction_bias {
        if bias.len() != cfg.n_expert {
            return Err(ModelError::Config(format!(
                "MoE router: correction bias of {} values for {} experts",
                bias.len(),
                cfg.n_expert
            )));
        }
    }
    let mut routing = Routing {
        top_k: cfg.top_k,
        ids: vec![0; n_tokens * cfg.top_k],
        weights: vec![0.0; n_tokens * cfg.top_k],
    };
    let mut scratch = Scratch::default();
    for (t, row) in logits.chunks_exact(cfg.n_expert).enumerate() {
        let span = t * cfg.top_k..(t + 1) * cfg.top_k;
        route_token(
            row,
            cfg,
            correction_bias,
            &mut scratch,
            &mut routing.ids[span.clone()],
            &mut routing.weights[span],
        );
    }
    Ok(routing)
}

#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    choice: Vec<f32>,
    group_rank: Vec<f32>,
}

/// One token's choice; `cfg` and the lengths are already validated.
fn route_token(
    logits: &[f32],
    cfg: &RouterConfig,
    correction_bias: Option<&[f32]>,
    s: &mut Scratch,
    ids: &mut [u32],
    weights: &mut [f32],
) {
    if let Scoring::SparseMixer { jitter_eps } = cfg.scoring {
        sparse_mixer(logits, jitter_eps, ids, weights);
        return;
    }
    s.scores.clear();
    s.scores.extend_from_slice(logits);
    match cfg.scoring {
        Scoring::Softmax => conch_kernels::ops::softmax(&mut s.scores),
        Scoring::Sigmoid => s
            .scores
            .iter_mut()
            .for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
        Scoring::SoftmaxOfTopK | Scoring::SparseMixer { .. } => {}
    }
    s.choice.clear();
    s.choice.extend_from_slice(&s.scores);
    if let Some(bias) = correction_bias {
        s.choice.iter_mut().zip(bias).for_each(|(c, b)| *c += b);
    }
    if let Some(g) = cfg.group_limit {
        mask_groups(&mut s.choice, g, &mut s.group_rank);
    }
    top_k_indices(&s.choice, ids);
    for (w, &id) in weights.iter_mut().zip(ids.iter()) {
        *w = s.scores[id as usize];
    }
    if cfg.scoring == Scoring::SoftmaxOfTopK {
        conch_kernels::ops::softmax(weights);
    }
    let sum: f32 = weights.iter().sum();
    let denominator = match cfg.normalization {
        Normalization::None => 1.0,
        Normalization::Sum => sum,
        Normalization::SumClamped { min } => sum.max(min),
    };
    for w in weights.iter_mut() {
        *w = *w / denominator * cfg.scaling;
    }
}

/// Sets the choice scores of experts outside the `topk_group` best groups to -inf.
fn mask_groups(choice: &mut [f32], g: GroupLimit, group_rank: &mut Vec<f32>) {
    let group_size = choice.len() / g.n_group;
    group_rank.clear();
    group_rank.extend(choice.chunks_exact(group_size).map(|group| match g.score {
        GroupScore::Max => group.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        GroupScore::SumOfTop2 => {
            let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
            for &v in group {
                if v > first {
                    second = first;
                    first = v;
                } else if v > second {
                    second = v;
                }
            }
            first + second
        }
    }));
    let mut kept = vec![0u32; g.topk_group];
    top_k_indices(group_rank, &mut kept);
    for (gi, group) in choice.chunks_exact_mut(group_size).enumerate() {
        if !kept.contains(&(gi as u32)) {
            group.fill(f32::NEG_INFINITY);
        }
    }
}

/// Fills `out` with the indices of the `out.len()` largest values, best first; ties go to the
/// lower index. NaN ranks below every number.
fn top_k_indices(values: &[f32], out: &mut [u32]) {
    let better = |a: usize, b: usize| -> bool {
        let (va, vb) = (values[a], values[b]);
        match (va.is_nan(), vb.is_nan()) {
            (false, true) => true,
            (true, _) => false,
            (false, false) => va > vb || (va == vb && a < b),
        }
    };
    let mut len = 0;
    for i in 0..values.len() {
        // Insertion into the sorted prefix; k is small (≤ 8 in real models).
        if len < out.len() {
            out[len] = i as u32;
            len += 1;
        } else if better(i, out[len - 1] as usize) {
            out[len - 1] = i as u32;
        } else {
            continue;
        }
        let mut j = len - 1;
        while j > 0 && better(out[j] as usize, out[j - 1] as usize) {
            out.swap(j, j - 1);
            j -= 1;
        }
    }
}

/// PhiMoE's sparsemixer (inference path of transformers' `sparsemixer`).
fn sparse_mixer(logits: &[f32], jitter_eps: f32, ids: &mut [u32], weights: &mut [f32]) {
    let mut excluded: Option<usize> = None;
    for round in 0..2 {
        let mut best = None;
        for (i, &v) in logits.iter().enumerate() {
            if Some(i) != excluded && best.is_none_or(|b: usize| v > logits[b]) {
                best = Some(i);
            }
        }
        let best = best.expect("validated: at least two experts");
        let threshold = logits[best];
        // Experts whose logit is within 2·eps of the best, relative to max(|logit|, best), stay in
        // the softmax; the others are masked out.
        let in_softmax = |i: usize| -> bool {
            let factor = logits[i].abs().max(threshold);
            let masked = (threshold - logits[i]) / factor > 2.0 * jitter_eps;
            Some(i) != excluded && !masked
        };
        let denominator: f32 = (0..logits.len())
            .filter(|&i| in_softmax(i))
            .map(|i| (logits[i] - threshold).exp())
            .sum();
        ids[round] = best as u32;
        weights[round] = 1.0 / denominator;
        excluded = Some(best);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_best_first_and_breaks_ties_low() {
        let mut out = [0u32; 3];
        top_k_indices(&[0.1, 0.5, f32::NAN, 0.5, 0.9, -1.0], &mut out);
        assert_eq!(out, [4, 1, 3]);
    }

    #[test]
    fn softmax_renormalised_weights_sum_to_one() {
        let cfg = RouterConfig::new(4, 2, Scoring::Softmax, Normalization::Sum);
        let r = route(&[1.0, 3.0, 2.0, -1.0], 1, &cfg, None).unwrap();
        assert_eq!(r.ids, [1, 2]);
        let e = [3f32.exp(), 2f32.exp()];
        assert!((r.weights[0] - e[0] / (e[0] + e[1])).abs() < 1e-6);
        assert!((r.weights[0] + r.weights[1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn correction_bias_moves_choice_not_weights() {
        let cfg = RouterConfig::new(3, 1, Scoring::Sigmoid, Normalization::None);
        let r = route(&[2.0, 1.0, 0.0], 1, &cfg, Some(&[0.0, 0.5, 0.0])).unwrap();
        assert_eq!(r.ids, [1]);
        assert!((r.weights[0] - 1.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn group_limit_excludes_weaker_groups() {
        // Groups {0,1} {2,3}: group max 0.9 vs 0.8, sum of top 2: 0.9+0.0 vs 0.8+0.7.
        let logits = [0.9, 0.0, 0.8, 0.7];
        let mut cfg = RouterConfig::new(4, 1, Scoring::SoftmaxOfTopK, Normalization::None);
        cfg.group_limit = Some(GroupLimit {
            n_group: 2,
            topk_group: 1,
            score: GroupScore::SumOfTop2,
        });
        assert_eq!(route(&logits, 1, &cfg, None).unwrap().ids, [2]);
        cfg.group_limit = Some(GroupLimit {
            n_group: 2,
            topk_group: 1,
            score: GroupScore::Max,
        });
        assert_eq!(route(&logits, 1, &cfg, None).unwrap().ids, [0]);
    }

    #[test]
    fn bad_configurations_are_errors() {
        let logits = [0.0; 4];
        let mut cfg = RouterConfig::new(4, 5, Scoring::Softmax, Normalization::Sum);
        assert!(route(&logits, 1, &cfg, None).is_err());
        cfg.top_k = 3;
        cfg.group_limit = Some(GroupLimit {
            n_group: 3,
            topk_group: 1,
            score: GroupScore::Max,
        });
        assert!(route(&logits, 1, &cfg, None).is_err());
        cfg.group_limit = Some(GroupLimit {
            n_group: 2,
            topk_group: 1,
            score: GroupScore::Max,
        });
        assert!(
            route(&logits, 1, &cfg, None).is_err(),
            "one group of 2 cannot supply 3 experts"
        );
        cfg.group_limit = None;
        assert!(route(&logits[..3], 1, &cfg, None).is_err());
        assert!(route(&logits, 1, &cfg, Some(&[0.0; 3])).is_err());
        cfg.scoring = Scoring::SparseMixer { jitter_eps: 0.01 };
        assert!(
            route(&logits, 1, &cfg, None).is_err(),
            "sparsemixer needs top_k 2"
        );
    }
}
