//! The Hugging Face back end: `tokenizer.json` through the `tokenizers` crate, with the special
//! tokens named in `tokenizer_config.json`, `generation_config.json` and `config.json`.
//!
//! BOS/EOS are added by tokenizer.json's own post-processor when `add_special` is set; like
//! transformers 5, `add_bos_token`/`add_eos_token` in tokenizer_config.json do not change that.

use crate::unicode::char_to_byte;
use crate::{TokenizerBackend, TokenizerError};
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;

pub struct HfTokenizer {
    /// Parses special-token texts into their ids.
    tokenizer: tokenizers::Tokenizer,
    /// The same, but special-token texts are spelled out as ordinary text.
    literal: tokenizers::Tokenizer,
    /// Tokens are GPT-2 byte-level characters (else SentencePiece pieces with `▁` and `<0xNN>`).
    byte_level: bool,
    strips_leading_space: bool,
    special: HashSet<u32>,
    bos: Option<u32>,
    eos: Vec<u32>,
}

fn read_json(path: &Path) -> Result<Option<Value>, TokenizerError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| TokenizerError::Invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TokenizerError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A token named in tokenizer_config.json: a string or an AddedToken object with "content".
fn token_text(v: &Value) -> Option<&str> {
    v.as_str()
        .or_else(|| v.get("content").and_then(Value::as_str))
}

/// `eos_token_id` as an int or a list of ints.
fn ids_of(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .into_iter()
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect(),
        _ => Vec::new(),
    }
}

fn mentions(v: Option<&Value>, needle: &str) -> bool {
    v.is_some_and(|v| v.to_string().contains(needle))
}

impl HfTokenizer {
    /// Loads `dir/tokenizer.json` and the configs beside it.
    pub fn from_dir(dir: &Path) -> Result<HfTokenizer, TokenizerError> {
        let json_path = dir.join("tokenizer.json");
        let json = read_json(&json_path)?.ok_or_else(|| {
            TokenizerError::Invalid(format!("{} does not exist", json_path.display()))
        })?;
        let tokenizer = tokenizers::Tokenizer::from_file(&json_path)
            .map_err(|e| TokenizerError::Invalid(format!("{}: {e}", json_path.display())))?;
        let config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let generation = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);
        let model_config = read_json(&dir.join("config.json"))?.unwrap_or(Value::Null);

        let mut literal = tokenizer.clone();
        literal.set_encode_special_tokens(true);
        let decoder = json.get("decoder");
        let byte_level = mentions(decoder, "\"ByteLevel\"");
        let strips_leading_space = !byte_level
            && (mentions(decoder, "\"Strip\"")
                || decoder.is_some_and(|d| {
                    let s = d.to_string();
                    s.contains("\"Metaspace\"")
                        && !s.contains("\"never\"")
                        && !s.contains("\"add_prefix_space\":false")
                }));
        let special = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        let lookup = |key: &str| {
            config
                .get(key)
                .and_then(token_text)
                .and_then(|t| tokenizer.token_to_id(t))
        };
        let bos = lookup("bos_token");
        let mut eos: Vec<u32> = lookup("eos_token").into_iter().collect();
        eos.extend(ids_of(generation.get("eos_token_id")));
        eos.extend(ids_of(model_config.get("eos_token_id")));
        eos.sort_unstable();
        eos.dedup();
        Ok(HfTokenizer {
            tokenizer,
            literal,
            byte_level,
            strips_leading_space,
            special,
            bos,
            eos,
        })
    }
}

impl TokenizerBackend for HfTokenizer {
    fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let tokenizer = if parse_special {
            &self.tokenizer
        } else {
            &self.literal
        };
        tokenizer
            .encode(text, add_special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Invalid(format!("tokenizer.json failed to encode: {e}")))
    }

    fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let known: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| self.tokenizer.id_to_token(id).is_some())
            .collect();
        self.tokenizer
            .decode(&known, skip_special)
            .unwrap_or_else(|_| {
                // a decoder that refuses the ids: fall back to joining the raw pieces
                let bytes: Vec<u8> = known
                    .iter()
                    .filter_map(|&id| self.token_bytes(id))
                    .flatten()
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
    }

    fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let token = self.tokenizer.id_to_token(id)?;
        if self.special.contains(&id) {
            return Some(token.into_bytes());
        }
        if self.byte_level {
            let mut bytes = Vec::with_capacity(token.len());
            for c in token.chars() {
                match char_to_byte(c) {
                    Some(b) => bytes.push(b),
                    None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
            return Some(bytes);
        }
        if let Some(b) = token
            .strip_prefix("<0x")
            .and_then(|h| h.strip_suffix('>'))
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            return Some(vec![b]);
        }
        Some(token.replace('\u{2581}', " ").into_bytes())
    }

    fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }
    fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }
    fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }
    fn bos_id(&self) -> Option<u32> {
        self.bos
    }
    fn eos_ids(&self) -> Vec<u32> {
        self.eos.clone()
    }
    fn strips_leading_space(&self) -> bool {
        self.strips_leading_space
    }
}
