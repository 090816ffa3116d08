//! A Hugging Face model directory: config.json, weights, tokenizer and generation settings.
