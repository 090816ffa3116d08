//! Numeric kernels for Conch: quantization formats, matrix products and the small
//! vector operations transformer layers are made of.
//!
//! Invariant: this crate knows nothing of models, files or tokens. It sees numbers,
//! byte blocks in a [`DType`] layout, and shapes.

pub mod cpu;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod quant;

pub use cpu::Isa;
pub use matmul::{matmul, matmul_with_isa, QMatrix};
pub use quant::{DType, QuantError};
