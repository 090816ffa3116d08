//! Token embedding lookup from a table in any element type.

use crate::weights::{check_matrix, row_bytes};
use crate::ModelError;
use conch_formats::Tensor;
use conch_kernels::quant::dequantize;

/// A `[vocab, dim]` table; rows are dequantized on lookup.
pub struct Embedding {
    table: Tensor,
}

impl Embedding {
    pub fn new(table: Tensor, vocab: usize, dim: usize) -> Result<Embedding, ModelError> {
        check_matrix(&table, vocab, dim)?;
        Ok(Embedding { table })
    }

    pub fn vocab_size(&self) -> usize {
        self.table.shape[0]
    }

    pub fn dim(&self) -> usize {
        self.table.shape[1]
    }

    /// The table itself (an output projection tied to the embedding uses it).
    pub fn table(&self) -> &Tensor {
        &self.table
    }

    /// Writes the row of `token` (checked `< vocab_size()` by the caller) into `out`.
    pub fn lookup(&self, token: usize, out: &mut [f32]) -> Result<(), ModelError> {
        let rb = row_bytes(self.table.dtype, self.dim());
        dequantize(
            self.table.dtype,
            &self.table.data[token * rb..(token + 1) * rb],
            out,
        )
        .map_err(|e| ModelError::BadTensor {
            name: self.table.name.clone(),
            msg: e.to_string(),
        })
    }
}
