//! conch-models
