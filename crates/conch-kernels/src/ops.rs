//! Element-wise and row-wise f32 operations used by transformer layers.
