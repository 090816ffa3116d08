//! Building blocks shared by the architectures.

pub mod attention;
pub mod decoder;
pub mod embedding;
pub mod ffn;
pub mod lightning;
pub mod linear;
pub mod mla;
pub mod moe_ffn;
pub mod norm;
pub mod rope;

pub use attention::Attention;
pub use decoder::{Decoder, DecoderLayer, DecoderSpec, FeedForward, LayerAttention, QkNorm};
pub use embedding::Embedding;
pub use ffn::GatedFfn;
pub use linear::Linear;
pub use norm::Norm;
pub use rope::Rope;
