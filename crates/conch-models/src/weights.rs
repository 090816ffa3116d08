//! Named, shape-checked access to a file's tensors.

use crate::ModelError;
use conch_formats::{Tensor, TensorStore};
use conch_kernels::quant::dequantize;
use conch_kernels::{DType, QMatrix};

/// How a file names the tensors of the dense decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Naming {
    Gguf,
    /// Hugging Face names; `ffn_norm` is the per-architecture name of the norm before the
    /// feed-forward (`post_attention_layernorm` in Llama, `pre_feedforward_layernorm` in Gemma).
    Hf {
        ffn_norm: &'static str,
    },
}

/// The tensors of one decoder layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    AttnNorm,
    Q,
    K,
    V,
    Out,
    QNorm,
    KNorm,
    PostAttnNorm,
    FfnNorm,
    Gate,
    Up,
    Down,
    PostFfnNorm,
}

/// Tensors outside the layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Global {
    Embedding,
    OutputNorm,
    Output,
}

impl Naming {
    /// Name of `part`'s tensor in layer `layer`, without the `.weight`/`.bias` suffix.
    pub(crate) fn layer(self, layer: usize, part: Part) -> String {
        match self {
            Naming::Gguf => {
                let p = match part {
                    Part::AttnNorm => "attn_norm",
                    Part::Q => "attn_q",
                    Part::K => "attn_k",
                    Part::V => "attn_v",
                    Part::Out => "attn_output",
                    Part::QNorm => "attn_q_norm",
                    Part::KNorm => "attn_k_norm",
                    Part::PostAttnNorm => "post_attention_norm",
                    Part::FfnNorm => "ffn_norm",
                    Part::Gate => "ffn_gate",
                    Part::Up => "ffn_up",
                    Part::Down => "ffn_down",
                    Part::PostFfnNorm => "post_ffw_norm",
                };
                format!("blk.{layer}.{p}")
            }
            Naming::Hf { ffn_norm } => {
                let p = match part {
                    Part::AttnNorm => "input_layernorm",
                    Part::Q => "self_attn.q_proj",
                    Part::K => "self_attn.k_proj",
                    Part::V => "self_attn.v_proj",
                    Part::Out => "self_attn.o_proj",
                    Part::QNorm => "self_attn.q_norm",
                    Part::KNorm => "self_attn.k_norm",
                    Part::PostAttnNorm => "post_attention_layernorm",
                    Part::FfnNorm => ffn_norm,
                    Part::Gate => "mlp.gate_proj",
                    Part::Up => "mlp.up_proj",
                    Part::Down => "mlp.down_proj",
                    Part::PostFfnNorm => "post_feedforward_layernorm",
                };
                format!("model.layers.{layer}.{p}")
            }
        }
    }

    pub(crate) fn global(self, g: Global) -> &'static str {
        match (self, g) {
            (Naming::Gguf, Global::Embedding) => "token_embd",
            (Naming::Gguf, Global::OutputNorm) => "output_norm",
            (Naming::Gguf, Global::Output) => "output",
            (Naming::Hf { .. }, Global::Embedding) => "model.embed_tokens",
            (Naming::Hf { .. }, Global::OutputNorm) => "model.norm",
            (Naming::Hf { .. }, Global::Output) => "lm_head",
        }
    }
}

/// Tensor lookups that turn absence and bad shapes into errors naming the tensor.
pub(crate) struct Weights<'a> {
    pub store: &'a dyn TensorStore,
}

impl Weights<'_> {
    pub(crate) fn optional(&self, name: &str) -> Option<Tensor> {
        self.store.tensor(name)
    }

    pub(crate) fn required(&self, name: &str) -> Result<Tensor, ModelError> {
        self.optional(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }

    /// A `[rows, cols]` matrix named `base.weight` in any element type.
    pub(crate) fn matrix(
        &self,
        base: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Tensor, ModelError> {
        let name = format!("{base}.weight");
        let t = self.required(&name)?;
        check_matrix(&t, rows, cols)?;
        Ok(t)
    }

    /// `base.bias` as f32 when present (length `len`).
    pub(crate) fn optional_bias(
        &self,
        base: &str,
        len: usize,
    ) -> Result<Option<Vec<f32>>, ModelError> {
        self.optional(&format!("{base}.bias"))
            .map(|t| vector_f32(&t, len))
            .transpose()
    }

    /// The vector `base.weight` (length `len`) as f32.
    pub(crate) fn vector(&self, base: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        vector_f32(&self.required(&format!("{base}.weight"))?, len)
    }
}

fn bad(t: &Tensor, msg: String) -> ModelError {
    ModelError::BadTensor {
        name: t.name.clone(),
        msg,
    }
}

/// Checks `t` is a `[rows, cols]` matrix whose bytes are whole rows of its element type.
pub(crate) fn check_matrix(t: &Tensor, rows: usize, cols: usize) -> Result<(), ModelError> {
    if t.shape != [rows, cols] {
        return Err(bad(
            t,
            format!("shape {:?}, expected [{rows}, {cols}]", t.shape),
        ));
    }
    QMatrix::new(t.dtype, rows, cols, &t.data).map_err(|e| bad(t, e.to_string()))?;
    Ok(())
}

/// A 1-D tensor of `len` values as f32.
pub(crate) fn vector_f32(t: &Tensor, len: usize) -> Result<Vec<f32>, ModelError> {
    if t.shape != [len] {
        return Err(bad(t, format!("shape {:?}, expected [{len}]", t.shape)));
    }
    let mut out = vec![0f32; len];
    dequantize(t.dtype, &t.data, &mut out).map_err(|e| bad(t, e.to_string()))?;
    Ok(out)
}

/// The matrix view of a tensor checked by [`check_matrix`].
pub(crate) fn qmatrix(t: &Tensor) -> QMatrix<'_> {
    QMatrix {
        dtype: t.dtype,
        rows: t.shape[0],
        cols: t.shape[1],
        data: &t.data,
    }
}

/// Bytes of one row of a checked matrix.
pub(crate) fn row_bytes(dtype: DType, cols: usize) -> usize {
    dtype.bytes_for(cols).expect("checked by check_matrix")
}
