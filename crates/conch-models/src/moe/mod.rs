//! The Mixture-of-Experts feed-forward block shared by every MoE architecture.
//!
//! A layer is a router (a `[n_expert, hidden]` projection whose logits [`route`] turns into chosen
//! experts and weights under a [`RouterConfig`]), routed experts ([`run_experts`]) and optional shared
//! experts that every token passes through ([`run_shared_expert`]). [`moe_forward`] runs all three.
//! Nothing here knows an architecture: each `arch/` file states its routing rule and hands over its
//! weights as [`QMatrix`](conch_kernels::QMatrix) slices in the file's element type.

mod experts;
mod router;
#[cfg(test)]
mod tests;

pub use experts::{
    run_experts, run_shared_expert, stacked_matrix, ExpertActivation, ExpertScratch, ExpertSet,
    ExpertWeights, GateUp, Projection,
};
pub use router::{route, GroupLimit, GroupScore, Normalization, RouterConfig, Routing, Scoring};

use crate::ModelError;

/// A shared expert, optionally scaled per token by `sigmoid(gate · x)`.
#[derive(Clone, Copy, Debug)]
pub struct SharedExpert<'a> {
    pub weights: ExpertWeights<'a>,
    /// `[1, hidden]` (Qwen2-MoE's `shared_expert_gate`).
    pub gate: Option<Projection<'a>>,
}

/// One MoE layer's weights and rule.
pub struct MoeLayer<'a, E: ExpertSet + ?Sized> {
    pub config: &'a RouterConfig,
    /// `[n_expert, hidden]`, with a bias for gpt-oss.
    pub router: Projection<'a>,
    /// Added to the scores for the choice only (DeepSeek-V3, GLM-4.5, MiniMax-M2, ERNIE-4.5).
    pub correction_bias: Option<&'a [f32]>,
    pub experts: &'a E,
    pub shared: &'a [SharedExpert<'a>],
    /// The nonlinearity of the routed and the shared experts.
    pub activation: ExpertActivation,
}

/// Writes the MoE block's output for `n` tokens of `x` (`n × hidden`) into `out` (`n × hidden`) and
/// returns the routing it used (for inspection and tests).
pub fn moe_forward<E: ExpertSet + ?Sized>(
    layer: &MoeLayer<'_, E>,
    x: &[f32],
    n: usize,
    hidden: usize,
    scratch: &mut ExpertScratch,
    out: &mut [f32],
) -> Result<Routing, ModelError> {
    let cfg = layer.config;
    cfg.validate()?;
    if layer.experts.n_expert() != cfg.n_expert {
        return Err(ModelError::Config(format!(
            "MoE: {} experts in the weights, {} in the configuration",
            layer.experts.n_expert(),
            cfg.n_expert
        )));
    }
    if x.len() != n * hidden || out.len() != n * hidden {
        return Err(ModelError::Config(format!(
            "MoE: activations of {} values for {n} tokens of width {hidden}",
            x.len()
        )));
    }
    layer
        .router
        .check(cfg.n_expert, hidden)
        .map_err(|msg| ModelError::BadTensor {
            name: "MoE router".into(),
            msg,
        })?;
    let mut logits = vec![0.0f32; n * cfg.n_expert];
    layer.router.forward(x, n, &mut logits);
    let routing = route(&logits, n, cfg, layer.correction_bias)?;
    for shared in layer.shared {
        shared.weights.validate("MoE shared expert", hidden)?;
    }
    out.fill(0.0);
    run_experts(
        x,
        n,
        hidden,
        &routing,
        layer.experts,
        layer.activation,
        scratch,
        out,
    )?;
    for shared in layer.shared {
        run_shared_expert(
            x,
            n,
            hidden,
            &shared.weights,
            shared.gate,
            layer.activation,
            scratch,
            out,
        )?;
    }
    Ok(routing)
}
