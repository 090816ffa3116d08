//! Text ↔ token ids, and chat templates.
//!
//! [`Tokenizer`] has two back ends behind one [`TokenizerBackend`] trait:
//! - a Hugging Face `tokenizer.json` (through the `tokenizers` crate) with `tokenizer_config.json`
//!   and `generation_config.json` beside it ([`Tokenizer::from_hf_dir`]);
//! - a vocabulary stored in GGUF metadata ([`Tokenizer::from_gguf`]): `gpt2` byte-level BPE with the
//!   pre-tokenizer of each `tokenizer.ggml.pre` family, and `llama` SentencePiece, both giving the
//!   same ids as llama.cpp.
//!
//! [`StreamDecoder`] turns ids into text one at a time without ever splitting a character;
//! [`ChatTemplate`] renders a model's Jinja chat template like transformers does.

mod gguf_vocab;
mod hf;
mod pretokenize;
mod stream;
pub mod template;
mod unicode;
mod unicode_data;

pub use gguf_vocab::GgufVocab;
pub use hf::HfTokenizer;
pub use stream::StreamDecoder;
pub use template::{ChatTemplate, TemplateError};

use conch_formats::{FormatError, GgufFile};
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TokenizerError {
    /// The tokenizer description is damaged or inconsistent; the message names the problem.
    #[error("invalid tokenizer: {0}")]
    Invalid(String),
    /// A tokenizer kind or pre-tokenizer we do not implement.
    #[error("unsupported tokenizer: {0}")]
    Unsupported(String),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// What each tokenizer back end provides; [`Tokenizer`] adds the shared logic on top.
pub trait TokenizerBackend: Send + Sync {
    /// Text to ids. `add_special` adds BOS/EOS as the model's own settings say; `parse_special`
    /// turns special-token texts (`<|im_start|>`) in `text` into their ids instead of spelling them.
    fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError>;
    /// Ids to text, the back end's own way; unknown ids are skipped.
    fn decode(&self, ids: &[u32], skip_special: bool) -> String;
    /// The raw bytes a token stands for in running text (special tokens give their text).
    fn token_bytes(&self, id: u32) -> Option<Vec<u8>>;
    fn vocab_size(&self) -> usize;
    fn token_to_id(&self, token: &str) -> Option<u32>;
    fn id_to_token(&self, id: u32) -> Option<String>;
    /// Control/special tokens: left out of decoded text when `skip_special` is set.
    fn is_special(&self, id: u32) -> bool;
    fn bos_id(&self) -> Option<u32>;
    /// All ids that end generation.
    fn eos_ids(&self) -> Vec<u32>;
    /// Whether decoding drops the space the tokenizer put in front of the text (SentencePiece's
    /// `add_space_prefix`): the first piece of a decoded text loses one leading space.
    fn strips_leading_space(&self) -> bool;
}

/// A tokenizer with either back end.
pub struct Tokenizer {
    backend: Box<dyn TokenizerBackend>,
}

impl Tokenizer {
    pub fn new(backend: Box<dyn TokenizerBackend>) -> Tokenizer {
        Tokenizer { backend }
    }

    /// A Hugging Face model directory: `tokenizer.json`, plus `tokenizer_config.json` and
    /// `generation_config.json` when present.
    pub fn from_hf_dir(dir: &Path) -> Result<Tokenizer, TokenizerError> {
        Ok(Tokenizer::new(Box::new(HfTokenizer::from_dir(dir)?)))
    }

    /// The vocabulary in a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        Ok(Tokenizer::new(Box::new(GgufVocab::from_metadata(
            &|key| gguf.get(key),
        )?)))
    }

    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        self.backend.encode(text, add_special, parse_special)
    }

    /// Ids to text (invalid UTF-8 replaced by U+FFFD; ids outside the vocabulary skipped).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        self.backend.decode(ids, skip_special)
    }

    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        self.backend.token_bytes(id)
    }
    pub fn vocab_size(&self) -> usize {
        self.backend.vocab_size()
    }
    pub fn bos_id(&self) -> Option<u32> {
        self.backend.bos_id()
    }
    pub fn eos_ids(&self) -> Vec<u32> {
        self.backend.eos_ids()
    }
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.backend.token_to_id(token)
    }
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.backend.id_to_token(id)
    }
    pub fn is_special(&self, id: u32) -> bool {
        self.backend.is_special(id)
    }
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids().contains(&id)
    }
    /// A decoder for a stream of generated ids.
    pub fn stream_decoder(&self, skip_special: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, skip_special)
    }
    pub fn backend(&self) -> &dyn TokenizerBackend {
        self.backend.as_ref()
    }
}
