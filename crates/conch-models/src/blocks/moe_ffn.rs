//! A decoder layer's mixture-of-experts feed-forward: the file's tensors, owned, handed to the shared
//! MoE block ([`crate::moe`]) as views; and the observation of its routing.

use crate::config::{ModelConfig, MoeConfig};
use crate::moe::{
    moe_forward, ExpertActivation, ExpertScratch, ExpertSet, ExpertWeights, GateUp, MoeLayer,
    Projection, RouterConfig, Routing, SharedExpert,
};
use crate::weights::{vector_f32, Weights};
use crate::ModelError;
use conch_formats::{Bytes, Tensor};
use conch_kernels::quant::dequantize;
use conch_kernels::{DType, QMatrix};
use std::ops::Range;

/// Receives the experts every MoE layer chose for every token of a forward pass
/// (see [`crate::Model::forward_observed`]).
pub trait RoutingObserver {
    /// Layer `layer` routed the tokens at positions `first_position..first_position + routing.n_tokens()`.
    fn observe(&mut self, layer: usize, first_position: usize, routing: &Routing);
}

/// Tokens routed to each expert of each layer, summed over every observed forward pass
/// (what `conch run --stats` reports).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpertCounts {
    /// `counts[layer][expert]`; dense layers stay empty.
    pub counts: Vec<Vec<u64>>,
}

impl RoutingObserver for ExpertCounts {
    fn observe(&mut self, layer: usize, _first_position: usize, routing: &Routing) {
        if self.counts.len() <= layer {
            self.counts.resize_with(layer + 1, Vec::new);
        }
        let row = &mut self.counts[layer];
        for &id in &routing.ids {
            let id = id as usize;
            if row.len() <= id {
                row.resize(id + 1, 0);
            }
            row[id] += 1;
        }
    }
}

/// Hugging Face names of an architecture's MoE tensors, relative to `model.layers.{i}.{block}`.
#[derive(Clone, Copy, Debug)]
pub struct HfMoeNames {
    /// `mlp` or Mixtral's `block_sparse_moe`.
    pub block: &'static str,
    /// The router projection: `gate`, or GraniteMoE's `router.layer`.
    pub router: &'static str,
    pub experts: HfExperts,
    /// The shared expert FFN (`shared_expert` in Qwen2-MoE), when the configuration has one.
    pub shared: &'static str,
    /// The shared expert's `[1, hidden]` sigmoid gate, when the configuration has one.
    pub shared_gate: &'static str,
    /// The router's score correction bias, for architectures that have one (required then).
    pub correction_bias: Option<&'static str>,
}

/// How a Hugging Face checkpoint stores the routed experts.
#[derive(Clone, Copy, Debug)]
pub enum HfExperts {
    /// One matrix per expert: `experts.{e}.{gate}.weight` etc.
    PerExpert {
        gate: &'static str,
        up: &'static str,
        down: &'static str,
    },
    /// Stacked: `{gate_up}.weight` `[E, 2·inter, hidden]` (gate rows, then up rows) and
    /// `{down}.weight` `[E, hidden, inter]` (GraniteMoE's `input_linear` / `output_linear`).
    StackedConcatenated {
        gate_up: &'static str,
        down: &'static str,
    },
    /// Stacked input-major, no `.weight` suffix, biases in `{name}_bias`: `{gate_up}` `[E, hidden,
    /// 2·inter]` with gate and up columns alternating, `{down}` `[E, inter, hidden]` (gpt-oss).
    /// Transposed into f32 at load.
    StackedTransposedInterleaved {
        gate_up: &'static str,
        down: &'static str,
    },
}

/// A `[rows, cols]` matrix: a whole tensor, or one expert's `range` of a stacked tensor's bytes.
struct Matrix {
    dtype: DType,
    rows: usize,
    cols: usize,
    data: Bytes,
    range: Range<usize>,
    bias: Option<Vec<f32>>,
}

impl Matrix {
    fn view(&self) -> QMatrix<'_> {
        QMatrix {
            dtype: self.dtype,
            rows: self.rows,
            cols: self.cols,
            data: &self.data[self.range.clone()],
        }
    }

    fn projection(&self) -> Projection<'_> {
        Projection {
            weight: self.view(),
            bias: self.bias.as_deref(),
        }
    }

    /// A 2-D `[rows, cols]` tensor (a 1-D one of `cols` values when `rows` is 1).
    fn whole(t: Tensor, rows: usize, cols: usize) -> Result<Matrix, ModelError> {
        let shape_ok = t.shape == [rows, cols] || (rows == 1 && t.shape == [cols]);
        let bytes_ok = t
            .dtype
            .bytes_for(cols)
            .and_then(|b| b.checked_mul(rows))
            .is_some_and(|n| n == t.data.len());
        if !(shape_ok && bytes_ok) {
            return Err(bad_tensor(
                &t,
                format!(
                    "shape {:?} ({} bytes of {}), expected [{rows}, {cols}]",
                    t.shape,
                    t.data.len(),
                    t.dtype
                ),
            ));
        }
        Ok(Matrix {
            dtype: t.dtype,
            rows,
            cols,
            range: 0..t.data.len(),
            data: t.data,
            bias: None,
        })
    }

    /// The `n` matrices of a stacked `[n, rows, cols]` tensor.
    fn stacked(t: Tensor, n: usize, rows: usize, cols: usize) -> Result<Vec<Matrix>, ModelError> {
        let size = t.dtype.bytes_for(cols).and_then(|b| b.checked_mul(rows));
        match size {
            Some(size)
                if t.shape == [n, rows, cols] && size.checked_mul(n) == Some(t.data.len()) =>
            {
                Ok((0..n)
                    .map(|e| Matrix {
                        dtype: t.dtype,
                        rows,
                        cols,
                        data: t.data.clone(),
                        range: e * size..(e + 1) * size,
                        bias: None,
                    })
                    .collect())
            }
            _ => Err(bad_tensor(
                &t,
                format!(
                    "shape {:?} ({} bytes of {}), expected [{n}, {rows}, {cols}]",
                    t.shape,
                    t.data.len(),
                    t.dtype
                ),
            )),
        }
    }
}

impl Matrix {
    /// The `n` matrices of a stacked input-major `[n, cols, rows]` tensor, each transposed to
    /// `[rows, cols]` in f32, with the rows of `bias` (`[n, rows]`) when given.
    fn stacked_transposed(
        t: Tensor,
        bias: Option<Tensor>,
        n: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<Matrix>, ModelError> {
        if t.shape != [n, cols, rows] {
            return Err(bad_tensor(
                &t,
                format!("shape {:?}, expected [{n}, {cols}, {rows}]", t.shape),
            ));
        }
        let mut all = vec![0f32; n * cols * rows];
        dequantize(t.dtype, &t.data, &mut all).map_err(|e| bad_tensor(&t, e.to_string()))?;
        let biases = match bias {
            Some(b) if b.shape == [n, rows] => {
                let mut v = vec![0f32; n * rows];
                dequantize(b.dtype, &b.data, &mut v).map_err(|e| bad_tensor(&b, e.to_string()))?;
                Some(v)
            }
            Some(b) => {
                return Err(bad_tensor(
                    &b,
                    format!("shape {:?}, expected [{n}, {rows}]", b.shape),
                ))
            }
            None => None,
        };
        Ok(all
            .chunks_exact(cols * rows)
            .enumerate()
            .map(|(e, m)| {
                let mut bytes = Vec::with_capacity(rows * cols * 4);
                for r in 0..rows {
                    for c in 0..cols {
                        bytes.extend_from_slice(&m[c * rows + r].to_le_bytes());
                    }
                }
                Matrix {
                    dtype: DType::F32,
                    rows,
                    cols,
                    range: 0..bytes.len(),
                    data: Bytes::from_vec(bytes),
                    bias: biases
                        .as_ref()
                        .map(|b| b[e * rows..(e + 1) * rows].to_vec()),
                }
            })
            .collect())
    }
}

fn bad_tensor(t: &Tensor, msg: String) -> ModelError {
    ModelError::BadTensor {
        name: t.name.clone(),
        msg,
    }
}

enum ExpertGateUp {
    Separate { gate: Matrix, up: Matrix },
    Concatenated(Matrix),
    Interleaved(Matrix),
}

/// One expert FFN's matrices.
struct Expert {
    gate_up: ExpertGateUp,
    down: Matrix,
}

impl Expert {
    fn view(&self) -> ExpertWeights<'_> {
        ExpertWeights {
            gate_up: match &self.gate_up {
                ExpertGateUp::Separate { gate, up } => GateUp::Separate {
                    gate: gate.projection(),
                    up: up.projection(),
                },
                ExpertGateUp::Concatenated(m) => GateUp::Concatenated(m.projection()),
                ExpertGateUp::Interleaved(m) => GateUp::Interleaved(m.projection()),
            },
            down: self.down.projection(),
        }
    }
}

struct Experts(Vec<Expert>);

impl ExpertSet for Experts {
    fn n_expert(&self) -> usize {
        self.0.len()
    }

    fn expert(&self, id: usize) -> ExpertWeights<'_> {
        self.0[id].view()
    }
}

/// The MoE feed-forward of one layer.
pub struct MoeFfn {
    router_config: RouterConfig,
    /// `[n_expert, hidden]`.
    router: Matrix,
    correction_bias: Option<Vec<f32>>,
    experts: Experts,
    shared: Option<Expert>,
    /// `[1, hidden]`.
    shared_gate: Option<Matrix>,
    activation: ExpertActivation,
}

/// Where a layer's MoE tensors are named.
#[derive(Clone, Copy, Debug)]
pub enum MoeNaming {
    /// llama.cpp's names: `blk.{i}.ffn_gate_inp`, stacked `ffn_{gate,up,down}_exps`, `*_shexp`.
    Gguf,
    Hf(HfMoeNames),
}

impl MoeFfn {
    /// Loads layer `layer`'s router, experts and shared expert, checking every shape against `moe`.
    pub(crate) fn load(
        w: &Weights,
        naming: MoeNaming,
        layer: usize,
        config: &ModelConfig,
        moe: &MoeConfig,
    ) -> Result<MoeFfn, ModelError> {
        let (hidden, inter, n_expert) = (
            config.hidden_size,
            moe.expert_intermediate_size,
            moe.n_expert(),
        );
        let shared_inter = moe.shared_intermediate_size;
        // With its `.bias` when the file has one (ERNIE's shared expert).
        let matrix = |name: String, rows: usize, cols: usize| {
            let mut m = Matrix::whole(w.required(&format!("{name}.weight"))?, rows, cols)?;
            m.bias = w.optional_bias(&name, rows)?;
            Ok::<_, ModelError>(m)
        };
        let separate = |gate: String, up: String, down: String, inner: usize| {
            Ok::<_, ModelError>(Expert {
                gate_up: ExpertGateUp::Separate {
                    gate: matrix(gate, inner, hidden)?,
                    up: matrix(up, inner, hidden)?,
                },
                down: matrix(down, hidden, inner)?,
            })
        };
        let (router, experts, shared, shared_gate, correction_name) = match naming {
            MoeNaming::Gguf => {
                let p = format!("blk.{layer}");
                // With per-expert biases from `{part}.bias` `[E, rows]` when present (gpt-oss).
                let stacked = |part: &str, rows: usize, cols: usize| {
                    let mut matrices = Matrix::stacked(
                        w.required(&format!("{p}.{part}.weight"))?,
                        n_expert,
                        rows,
                        cols,
                    )?;
                    if let Some(mut b) = w.optional(&format!("{p}.{part}.bias")) {
                        let name = b.name.clone();
                        if b.shape == [n_expert, rows] {
                            b.shape = vec![n_expert * rows];
                        }
                        let all =
                            vector_f32(&b, n_expert * rows).map_err(|_| ModelError::BadTensor {
                                name,
                                msg: format!("expected [{n_expert}, {rows}] biases"),
                            })?;
                        for (m, bias) in matrices.iter_mut().zip(all.chunks_exact(rows)) {
                            m.bias = Some(bias.to_vec());
                        }
                    }
                    Ok::<_, ModelError>(matrices)
                };
                let gates = stacked("ffn_gate_exps", inter, hidden)?;
                let ups = stacked("ffn_up_exps", inter, hidden)?;
                let downs = stacked("ffn_down_exps", hidden, inter)?;
                let experts = gates
                    .into_iter()
                    .zip(ups)
                    .zip(downs)
                    .map(|((gate, up), down)| Expert {
                        gate_up: ExpertGateUp::Separate { gate, up },
                        down,
                    })
                    .collect();
                let shared = (shared_inter > 0)
                    .then(|| {
                        separate(
                            format!("{p}.ffn_gate_shexp"),
                            format!("{p}.ffn_up_shexp"),
                            format!("{p}.ffn_down_shexp"),
                            shared_inter,
                        )
                    })
                    .transpose()?;
                let shared_gate = moe
                    .shared_expert_gate
                    .then(|| matrix(format!("{p}.ffn_gate_inp_shexp"), 1, hidden))
                    .transpose()?;
                (
                    matrix(format!("{p}.ffn_gate_inp"), n_expert, hidden)?,
                    experts,
                    shared,
                    shared_gate,
                    Some(format!("{p}.exp_probs_b.bias")),
                )
            }
            MoeNaming::Hf(names) => {
                let p = format!("model.layers.{layer}.{}", names.block);
                let experts = match names.experts {
                    HfExperts::PerExpert { gate, up, down } => (0..n_expert)
                        .map(|e| {
                            let x = format!("{p}.experts.{e}");
                            separate(
                                format!("{x}.{gate}"),
                                format!("{x}.{up}"),
                                format!("{x}.{down}"),
                                inter,
                            )
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    HfExperts::StackedConcatenated { gate_up, down } => {
                        let stacked = |name: &str, rows: usize, cols: usize| {
                            Matrix::stacked(
                                w.required(&format!("{p}.{name}.weight"))?,
                                n_expert,
                                rows,
                                cols,
                            )
                        };
                        stacked(gate_up, 2 * inter, hidden)?
                            .into_iter()
                            .zip(stacked(down, hidden, inter)?)
                            .map(|(gate_up, down)| Expert {
                                gate_up: ExpertGateUp::Concatenated(gate_up),
                                down,
                            })
                            .collect()
                    }
                    HfExperts::StackedTransposedInterleaved { gate_up, down } => {
                        let stacked = |name: &str, rows: usize, cols: usize| {
                            Matrix::stacked_transposed(
                                w.required(&format!("{p}.{name}"))?,
                                w.optional(&format!("{p}.{name}_bias")),
                                n_expert,
                                rows,
                                cols,
                            )
                        };
                        stacked(gate_up, 2 * inter, hidden)?
                            .into_iter()
                            .zip(stacked(down, hidden, inter)?)
                            .map(|(gate_up, down)| Expert {
                                gate_up: ExpertGateUp::Interleaved(gate_up),
                                down,
                            })
                            .collect()
                    }
                };
                let shared = (shared_inter > 0)
                    .then(|| {
                        let s = format!("{p}.{}", names.shared);
                        separate(
                            format!("{s}.gate_proj"),
                            format!("{s}.up_proj"),
                            format!("{s}.down_proj"),
                            shared_inter,
                        )
                    })
                    .transpose()?;
                let shared_gate = moe
                    .shared_expert_gate
                    .then(|| matrix(format!("{p}.{}", names.shared_gate), 1, hidden))
                    .transpose()?;
                (
                    matrix(format!("{p}.{}", names.router), n_expert, hidden)?,
                    experts,
                    shared,
                    shared_gate,
                    names.correction_bias.map(|c| format!("{p}.{c}")),
                )
            }
        };
        // Used when present (DeepSeek-V2 has none where V3 has one, under the same names), as in
        // llama.cpp. Stored `[n_expert]` or `[1, n_expert]` (ERNIE).
        let correction_bias = correction_name
            .and_then(|name| w.optional(&name))
            .map(|mut t| {
                if t.numel() == n_expert {
                    t.shape = vec![n_expert];
                }
                vector_f32(&t, n_expert)
            })
            .transpose()?;
        Ok(MoeFfn {
            router_config: moe.router.clone(),
            router,
            correction_bias,
            experts: Experts(experts),
            shared,
            shared_gate,
            activation: moe.activation,
        })
    }

    /// Writes the block's output for `n` rows of `x` into `out` and returns the routing it used.
    pub fn forward(
        &self,
        x: &[f32],
        n: usize,
        hidden: usize,
        scratch: &mut ExpertScratch,
        out: &mut [f32],
    ) -> Result<Routing, ModelError> {
        let shared: Vec<SharedExpert<'_>> = self
            .shared
            .iter()
            .map(|s| SharedExpert {
                weights: s.view(),
                gate: self.shared_gate.as_ref().map(Matrix::projection),
            })
            .collect();
        let layer = MoeLayer {
            config: &self.router_config,
            router: self.router.projection(),
            correction_bias: self.correction_bias.as_deref(),
            experts: &self.experts,
            shared: &shared,
            activation: self.activation,
        };
        moe_forward(&layer, x, n, hidden, scratch, out)
    }
}
