//! Expert feed-forward networks and their grouped execution.
//!
//! Every expert is a gated FFN `down(act(gate(x), up(x)))`, each product a [`QMatrix`] in the file's
//! element type. [`run_experts`] groups the tokens of a step by expert so each chosen expert's weights
//! are read once per step for all tokens routed to it; experts no token chose are never touched.

use super::Routing;
use crate::ModelError;
use conch_kernels::{matmul, ops, DType, QMatrix};

/// A weight matrix `[out, in]` and an optional bias of `out` values.
#[derive(Clone, Copy, Debug)]
pub struct Projection<'a> {
    pub weight: QMatrix<'a>,
    pub bias: Option<&'a [f32]>,
}

impl<'a> Projection<'a> {
    pub fn new(weight: QMatrix<'a>) -> Projection<'a> {
        Projection { weight, bias: None }
    }

    /// `y` (`n × out`) from `x` (`n × in`); shapes are checked by the caller.
    pub(super) fn forward(&self, x: &[f32], n: usize, y: &mut [f32]) {
        matmul(self.weight, x, n, y);
        if let Some(b) = self.bias {
            ops::add_bias(y, b);
        }
    }

    /// Checks the matrix is `[out_features, in_features]`, whole in its bytes, and the bias fits;
    /// the error says what is wrong.
    pub(super) fn check(&self, out_features: usize, in_features: usize) -> Result<(), String> {
        let w = &self.weight;
        let bad = |msg: String| Err(msg);
        if w.rows != out_features || w.cols != in_features {
            return bad(format!(
                "{}×{} where {out_features}×{in_features} is needed",
                w.rows, w.cols
            ));
        }
        match w
            .dtype
            .bytes_for(w.cols)
            .and_then(|b| b.checked_mul(w.rows))
        {
            Some(len) if len == w.data.len() => {}
            _ => {
                return bad(format!(
                    "{} bytes do not hold {}×{} {} values",
                    w.data.len(),
                    w.rows,
                    w.cols,
                    w.dtype
                ))
            }
        }
        if let Some(b) = self.bias {
            if b.len() != out_features {
                return bad(format!(
                    "bias of {} values for {out_features} outputs",
                    b.len()
                ));
            }
        }
        Ok(())
    }
}

/// Where an expert's gate and up projections are.
#[derive(Clone, Copy, Debug)]
pub enum GateUp<'a> {
    /// Two `[intermediate, hidden]` matrices (GGUF `ffn_gate_exps` / `ffn_up_exps`, HF per-expert
    /// `gate_proj` / `up_proj`).
    Separate {
        gate: Projection<'a>,
        up: Projection<'a>,
    },
    /// One `[2·intermediate, hidden]` matrix, the gate's rows then the up's (transformers' fused
    /// `gate_up_proj`, GGUF `ffn_gate_up_exps`).
    Concatenated(Projection<'a>),
    /// One `[2·intermediate, hidden]` matrix whose rows alternate gate, up (gpt-oss).
    Interleaved(Projection<'a>),
}

/// One expert (or a shared expert, which is the same FFN).
#[derive(Clone, Copy, Debug)]
pub struct ExpertWeights<'a> {
    pub gate_up: GateUp<'a>,
    /// `[hidden, intermediate]`.
    pub down: Projection<'a>,
}

impl ExpertWeights<'_> {
    /// The FFN's inner width.
    pub fn intermediate(&self) -> usize {
        self.down.weight.cols
    }

    pub fn hidden(&self) -> usize {
        self.down.weight.rows
    }

    /// Checks every matrix against `hidden` and the down projection's inner width.
    pub fn validate(&self, name: &str, hidden: usize) -> Result<(), ModelError> {
        self.shape_error(hidden).map_or(Ok(()), |msg| {
            Err(ModelError::BadTensor {
                name: name.to_string(),
                msg,
            })
        })
    }

    /// What is wrong with the shapes, if anything (no allocation when they are right).
    fn shape_error(&self, hidden: usize) -> Option<String> {
        let inter = self.intermediate();
        let checks = match &self.gate_up {
            GateUp::Separate { gate, up } => [
                ("down", &self.down, hidden, inter),
                ("gate", gate, inter, hidden),
                ("up", up, inter, hidden),
            ],
            GateUp::Concatenated(p) | GateUp::Interleaved(p) => [
                ("down", &self.down, hidden, inter),
                ("gate_up", p, 2 * inter, hidden),
                ("gate_up", p, 2 * inter, hidden),
            ],
        };
        checks.into_iter().find_map(|(what, p, rows, cols)| {
            p.check(rows, cols).err().map(|m| format!("{what}: {m}"))
        })
    }
}

/// The gating nonlinearity of the expert FFN.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ExpertActivation {
    /// `silu(gate) · up`.
    Swiglu,
    /// gpt-oss: `gate' = min(gate, limit)`, `up' = clamp(up, ±limit)`, `(up' + 1) · gate' · σ(alpha·gate')`.
    ClampedSwiglu { alpha: f32, limit: f32 },
}

impl ExpertActivation {
    /// The gpt-oss activation with its released constants (alpha 1.702, limit 7).
    pub const GPT_OSS: ExpertActivation = ExpertActivation::ClampedSwiglu {
        alpha: 1.702,
        limit: 7.0,
    };

    fn apply(self, gate: f32, up: f32) -> f32 {
        match self {
            ExpertActivation::Swiglu => ops::silu(gate) * up,
            ExpertActivation::ClampedSwiglu { alpha, limit } => {
                let g = gate.min(limit);
                let u = up.clamp(-limit, limit);
                (u + 1.0) * g / (1.0 + (-alpha * g).exp())
            }
        }
    }
}

/// The experts of one MoE layer, looked up by id.
pub trait ExpertSet {
    fn n_expert(&self) -> usize;
    fn expert(&self, id: usize) -> ExpertWeights<'_>;
}

impl ExpertSet for [ExpertWeights<'_>] {
    fn n_expert(&self) -> usize {
        self.len()
    }

    fn expert(&self, id: usize) -> ExpertWeights<'_> {
        self[id]
    }
}

/// Expert `id`'s `[rows, cols]` matrix inside a stacked `[n_expert, rows, cols]` tensor's bytes
/// (GGUF `*_exps` tensors; ggml shape `[cols, rows, n_expert]`).
pub fn stacked_matrix(
    dtype: DType,
    n_expert: usize,
    rows: usize,
    cols: usize,
    data: &[u8],
    id: usize,
) -> Result<QMatrix<'_>, ModelError> {
    let bad = |msg: String| ModelError::BadTensor {
        name: "stacked experts".into(),
        msg,
    };
    let matrix_bytes = dtype
        .bytes_for(cols)
        .and_then(|b| b.checked_mul(rows))
        .ok_or_else(|| {
            bad(format!(
                "rows of {cols} {dtype} values are not whole blocks"
            ))
        })?;
    if matrix_bytes.checked_mul(n_expert) != Some(data.len()) {
        return Err(bad(format!(
            "{} bytes for {n_expert} experts of {rows}×{cols} {dtype}",
            data.len()
        )));
    }
    if id >= n_expert {
        return Err(bad(format!("expert {id} of {n_expert}")));
    }
    Ok(QMatrix {
        dtype,
        rows,
        cols,
        data: &data[id * matrix_bytes..(id + 1) * matrix_bytes],
    })
}

/// Reusable buffers for [`run_experts`] and [`run_shared_expert`].
#[derive(Default)]
pub struct ExpertScratch {
    /// Per expert, the (token, weight) pairs routed to it.
    assignments: Vec<Vec<(u32, f32)>>,
    x: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    y: Vec<f32>,
}

/// Adds `Σ weight · expert(x)` over each token's chosen experts to `out` (`n × hidden`), for the
/// `n` tokens of `x` (`n × hidden`) routed by `routing`.
#[allow(clippy::too_many_arguments)]
pub fn run_experts<E: ExpertSet + ?Sized>(
    x: &[f32],
    n: usize,
    hidden: usize,
    routing: &Routing,
    experts: &E,
    activation: ExpertActivation,
    scratch: &mut ExpertScratch,
    out: &mut [f32],
) -> Result<(), ModelError> {
    check_activations(x, n, hidden, out)?;
    if routing.n_tokens() != n || routing.ids.len() != routing.weights.len() {
        return Err(ModelError::Config(format!(
            "MoE: routing for {} tokens applied to {n}",
            routing.n_tokens()
        )));
    }
    let n_expert = experts.n_expert();
    scratch.assignments.iter_mut().for_each(Vec::clear);
    scratch
        .assignments
        .resize_with(n_expert.max(scratch.assignments.len()), Vec::new);
    for t in 0..n {
        for (&id, &w) in routing.token_ids(t).iter().zip(routing.token_weights(t)) {
            let id = id as usize;
            if id >= n_expert {
                return Err(ModelError::Config(format!(
                    "MoE: expert {id} chosen of {n_expert}"
                )));
            }
            scratch.assignments[id].push((t as u32, w));
        }
    }
    // Every chosen expert is checked before any output is written, so an error leaves `out` as it was.
    let mut chosen = Vec::new();
    for (id, tokens) in scratch.assignments[..n_expert].iter().enumerate() {
        if tokens.is_empty() {
            continue;
        }
        let expert = experts.expert(id);
        if let Some(msg) = expert.shape_error(hidden) {
            return Err(ModelError::BadTensor {
                name: format!("MoE expert {id}"),
                msg,
            });
        }
        chosen.push((id, expert));
    }
    for (id, expert) in chosen {
        let ExpertScratch {
            assignments,
            x: xs,
            gate,
            up,
            y,
        } = scratch;
        let tokens = &assignments[id];
        let m = tokens.len();
        xs.clear();
        for &(t, _) in tokens.iter() {
            xs.extend_from_slice(&x[t as usize * hidden..(t as usize + 1) * hidden]);
        }
        ffn(&expert, activation, xs, m, gate, up, y);
        for (j, &(t, w)) in tokens.iter().enumerate() {
            ops::axpy(
                w,
                &y[j * hidden..(j + 1) * hidden],
                &mut out[t as usize * hidden..(t as usize + 1) * hidden],
            );
        }
    }
    Ok(())
}

/// Adds a shared expert's output to `out`, scaled per token by `sigmoid(gate · x)` when it has a
/// gate (Qwen2-MoE's `shared_expert_gate`, a `[1, hidden]` matrix).
#[allow(clippy::too_many_arguments)]
pub fn run_shared_expert(
    x: &[f32],
    n: usize,
    hidden: usize,
    expert: &ExpertWeights<'_>,
    gate: Option<Projection<'_>>,
    activation: ExpertActivation,
    scratch: &mut ExpertScratch,
    out: &mut [f32],
) -> Result<(), ModelError> {
    check_activations(x, n, hidden, out)?;
    expert.validate("shared expert", hidden)?;
    let mut factors = vec![1.0f32; n];
    if let Some(g) = gate {
        g.check(1, hidden).map_err(|msg| ModelError::BadTensor {
            name: "shared expert gate".into(),
            msg,
        })?;
        g.forward(x, n, &mut factors);
        factors
            .iter_mut()
            .for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
    }
    let ExpertScratch { gate: g, up, y, .. } = scratch;
    ffn(expert, activation, x, n, g, up, y);
    for (t, &f) in factors.iter().enumerate() {
        ops::axpy(
            f,
            &y[t * hidden..(t + 1) * hidden],
            &mut out[t * hidden..(t + 1) * hidden],
        );
    }
    Ok(())
}

fn check_activations(x: &[f32], n: usize, hidden: usize, out: &[f32]) -> Result<(), ModelError> {
    if x.len() != n * hidden || out.len() != n * hidden {
        return Err(ModelError::Config(format!(
            "MoE: activations of {} and {} values for {n} tokens of width {hidden}",
            x.len(),
            out.len()
        )));
    }
    Ok(())
}

/// `y = down(act(gate(x), up(x)))` for `m` rows of `x`; the expert is validated.
fn ffn(
    expert: &ExpertWeights<'_>,
    activation: ExpertActivation,
    x: &[f32],
    m: usize,
    gate: &mut Vec<f32>,
    up: &mut Vec<f32>,
    y: &mut Vec<f32>,
) {
    let inter = expert.intermediate();
    gate.resize(m * inter, 0.0);
    match &expert.gate_up {
        GateUp::Separate { gate: g, up: u } => {
            up.resize(m * inter, 0.0);
            g.forward(x, m, gate);
            u.forward(x, m, up);
            for (gv, &uv) in gate.iter_mut().zip(up.iter()) {
                *gv = activation.apply(*gv, uv);
            }
        }
        GateUp::Concatenated(p) | GateUp::Interleaved(p) => {
            let interleaved = matches!(expert.gate_up, GateUp::Interleaved(_));
            up.resize(m * 2 * inter, 0.0);
            p.forward(x, m, up);
            for (row, fused) in gate.chunks_exact_mut(inter).zip(up.chunks_exact(2 * inter)) {
                for (i, h) in row.iter_mut().enumerate() {
                    let (g, u) = if interleaved {
                        (fused[2 * i], fused[2 * i + 1])
                    } else {
                        (fused[i], fused[inter + i])
                    };
                    *h = activation.apply(g, u);
                }
            }
        }
    }
    y.resize(m * expert.hidden(), 0.0);
    expert.down.forward(gate, m, y);
}
