//! conch-engine
