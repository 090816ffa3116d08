//! conch-tokenizer
