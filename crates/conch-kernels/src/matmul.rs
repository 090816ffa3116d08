//! Matrix products of a weight matrix in any [`DType`] with f32 activations.

use crate::quant::{dequantize, DType, QuantError};

/// A row-major weight matrix: `rows` rows of `cols` values, each row stored as `dtype` blocks.
/// This is both ggml's and PyTorch's `[out_features, in_features]` layout.
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> QMatrix<'a> {
    pub fn new(dtype: DType, rows: usize, cols: usize, data: &'a [u8]) -> Result<Self, QuantError> {
        let row_bytes = dtype.bytes_for(cols).ok_or(QuantError::PartialBlock { dtype, len: cols, block: dtype.block_size() })?;
        let expected = row_bytes * rows;
        if data.len() != expected {
            return Err(QuantError::ByteLength { dtype, expected, got: data.len() });
        }
        Ok(QMatrix { dtype, rows, cols, data })
    }

    pub fn row_bytes(&self) -> usize {
        self.dtype.bytes_for(self.cols).expect("checked in QMatrix::new")
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

/// `y[t][r] = sum_c w[r][c] * x[t][c]` for `n` activation rows `x` (`n × cols`), writing `y` (`n × rows`).
pub fn matmul(w: QMatrix<'_>, x: &[f32], n: usize, y: &mut [f32]) {
    assert_eq!(x.len(), n * w.cols, "activation shape");
    assert_eq!(y.len(), n * w.rows, "output shape");
    let mut row = vec![0f32; w.cols];
    for r in 0..w.rows {
        dequantize(w.dtype, w.row(r), &mut row).expect("QMatrix rows are whole blocks");
        for t in 0..n {
            let xs = &x[t * w.cols..(t + 1) * w.cols];
            y[t * w.rows + r] = row.iter().zip(xs).map(|(a, b)| a * b).sum();
        }
    }
}
