//! A synthetic byte-level BPE vocabulary (`gpt2` in GGUF terms, `BPE` + `ByteLevel` in tokenizer.json)
//! of any size ≥ 259: the 256 byte tokens, merges of byte pairs (letters and space first, so text
//! compresses somewhat as with a real vocabulary), and three ChatML control tokens. Text is split
//! by GPT-2's pattern (`gpt-2` in llama.cpp, a regex `ByteLevel` pre-tokenizer in tokenizer.json).

use conch_formats::MetaValue;

pub(crate) const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// The smallest vocabulary this module can build.
pub(crate) const MIN_VOCAB: usize = 256 + SPECIAL_TOKENS.len();

const CHAT_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

pub(crate) struct SynthVocab {
    pub tokens: Vec<String>,
    pub merges: Vec<String>,
    /// Id of `<|endoftext|>`; the ChatML tokens follow it.
    pub first_special: usize,
}

/// GPT-2's map from bytes to printable characters.
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut next = 256u32;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("latin-1 is valid")
            } else {
                let c = char::from_u32(next).expect("below the surrogates");
                next += 1;
                c
            }
        })
        .collect()
}

impl SynthVocab {
    pub(crate) fn new(size: usize) -> SynthVocab {
        let chars = byte_chars();
        let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        // Merge order: space, lowercase, uppercase, digits, then every other byte.
        let mut order: Vec<u8> = vec![b' '];
        order.extend(b'a'..=b'z');
        order.extend(b'A'..=b'Z');
        order.extend(b'0'..=b'9');
        let rest: Vec<u8> = (0u8..=255).filter(|b| !order.contains(b)).collect();
        order.extend(rest);
        let n_merges = size.saturating_sub(MIN_VOCAB);
        let mut merges = Vec::with_capacity(n_merges);
        'outer: for &a in &order {
            for &b in &order {
                if merges.len() == n_merges {
                    break 'outer;
                }
                let (ca, cb) = (chars[a as usize], chars[b as usize]);
                merges.push(format!("{ca} {cb}"));
                tokens.push(format!("{ca}{cb}"));
            }
        }
        let first_special = tokens.len();
        tokens.extend(SPECIAL_TOKENS.iter().map(|s| s.to_string()));
        SynthVocab {
            tokens,
            merges,
            first_special,
        }
    }

    /// The `tokenizer.ggml.*` and chat template metadata.
    pub(crate) fn gguf_metadata(&self) -> Vec<(String, MetaValue)> {
        let strings =
            |v: &[String]| MetaValue::Array(v.iter().cloned().map(MetaValue::String).collect());
        let token_type = (0..self.tokens.len())
            .map(|i| MetaValue::I32(if i >= self.first_special { 3 } else { 1 }))
            .collect();
        let eos = self.first_special as u32;
        vec![
            (
                "tokenizer.ggml.model".into(),
                MetaValue::String("gpt2".into()),
            ),
            (
                "tokenizer.ggml.pre".into(),
                MetaValue::String("gpt-2".into()),
            ),
            ("tokenizer.ggml.tokens".into(), strings(&self.tokens)),
            (
                "tokenizer.ggml.token_type".into(),
                MetaValue::Array(token_type),
            ),
            ("tokenizer.ggml.merges".into(), strings(&self.merges)),
            (
                "tokenizer.ggml.eos_token_id".into(),
                MetaValue::U32(eos + 2),
            ),
            (
                "tokenizer.ggml.padding_token_id".into(),
                MetaValue::U32(eos),
            ),
            ("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(eos)),
            (
                "tokenizer.ggml.add_bos_token".into(),
                MetaValue::Bool(false),
            ),
            (
                "tokenizer.chat_template".into(),
                MetaValue::String(CHAT_TEMPLATE.into()),
            ),
        ]
    }

    /// `tokenizer.json` and `tokenizer_config.json` for a Hugging Face directory.
    pub(crate) fn hf_files(&self) -> (serde_json::Value, serde_json::Value) {
        let vocab: serde_json::Map<String, serde_json::Value> = self.tokens[..self.first_special]
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i.into()))
            .collect();
        let added: Vec<serde_json::Value> = SPECIAL_TOKENS
            .iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::json!({"id": self.first_special + i, "content": t, "single_word": false,
                    "lstrip": false, "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let tokenizer = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": self.merges},
        });
        let config = serde_json::json!({
            "bos_token": null,
            "eos_token": SPECIAL_TOKENS[2],
            "pad_token": SPECIAL_TOKENS[0],
            "chat_template": CHAT_TEMPLATE,
            "tokenizer_class": "PreTrainedTokenizerFast",
        });
        (tokenizer, config)
    }
}
