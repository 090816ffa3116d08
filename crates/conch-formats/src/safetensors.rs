//! safetensors reader: one file, or shards listed by `model.safetensors.index.json`.
