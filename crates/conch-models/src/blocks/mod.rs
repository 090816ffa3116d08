//! Building blocks shared by the architectures.

pub mod attention;
pub mod decoder;
pub mod embedding;
pub mod ffn;
pub mod linear;
pub mod moe_ffn;
pub mod norm;
pub mod rope;

pub use attention::Attention;
pub use decoder::{Decoder, DecoderLayer, DecoderSpec, FeedForward, QkNorm};
pub use embedding::Embedding;
pub use ffn::GatedFfn;
pub use linear::Linear;
pub use norm::RmsNorm;
pub use rope::Rope;
