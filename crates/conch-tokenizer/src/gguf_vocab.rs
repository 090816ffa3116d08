//! Vocabularies stored in GGUF metadata (`tokenizer.ggml.*`), tokenized exactly as llama.cpp does.
//!
//! - `gpt2`: byte-level BPE. Text is split by the pre-tokenizer of `tokenizer.ggml.pre`, each word
//!   is mapped to GPT-2's printable byte characters and merged by `tokenizer.ggml.merges` rank.
//! - `llama`: SentencePiece BPE. Spaces become `▁` (with one in front of the text when
//!   `add_space_prefix`), pieces are merged best score first, and characters with no token fall
//!   back to `<0xNN>` byte tokens.
//!
//! Special tokens (control, user-defined and unknown types) are cut out of the text first, longest
//! first; control and unknown ones only when `parse_special` is set, as in llama.cpp.
//!
//! Where we knowingly differ from llama.cpp: decoding does not apply its `clean_spaces` pass
//! (" ." → "."), strips the SentencePiece prefix space from the first text piece even after a
//! skipped BOS (as Hugging Face decoders do), and the per-model LSTRIP/RSTRIP token attributes
//! llama.cpp sets by model name (phi-3, jina) are not applied. A character with no byte token
//! becomes the unknown token where llama.cpp would abort.

use crate::pretokenize::{PreConfig, PreTokenizer};
use crate::unicode::{byte_to_char, char_to_byte};
use crate::{TokenizerBackend, TokenizerError};
use conch_formats::MetaValue;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

/// Token attributes (from `tokenizer.ggml.token_type`, adjusted as llama.cpp does).
mod attr {
    pub const UNDEFINED: u8 = 0;
    pub const NORMAL: u8 = 1 << 0;
    pub const UNKNOWN: u8 = 1 << 1;
    pub const CONTROL: u8 = 1 << 2;
    pub const USER_DEFINED: u8 = 1 << 3;
    pub const UNUSED: u8 = 1 << 4;
    pub const BYTE: u8 = 1 << 5;

    /// From GGUF's token type numbers (llama.cpp's `llama_token_type`).
    pub fn from_type(t: i64) -> u8 {
        match t {
            1 => NORMAL,
            2 => UNKNOWN,
            3 => CONTROL,
            4 => USER_DEFINED,
            5 => UNUSED,
            6 => BYTE,
            _ => UNDEFINED,
        }
    }
}

/// Token texts llama.cpp treats as end-of-turn markers when the file names no EOT id.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
/// Fill-in-the-middle markers llama.cpp makes control tokens; pad/repo/file-separator ones also end generation.
const FIM_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_EOG_TEXTS: &[&str] = &[
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
];
/// Token texts that end generation whatever the file says.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
/// gpt-oss (harmony) structural tokens that llama.cpp makes user-defined so they print.
const HARMONY_TEXTS: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

enum Model {
    /// Byte-level BPE: merge ranks keyed by `left \0 right`.
    Bpe {
        ranks: HashMap<String, u32>,
        pre: PreTokenizer,
        ignore_merges: bool,
    },
    /// SentencePiece with scores.
    Spm,
}

/// A vocabulary from GGUF metadata.
pub struct GgufVocab {
    model: Model,
    tokens: Vec<String>,
    scores: Vec<f32>,
    attrs: Vec<u8>,
    token_to_id: HashMap<String, u32>,
    /// Ids cut out of text before tokenizing, longest text first.
    special_cache: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

/// Typed access to metadata values with errors that name the key.
struct Meta<'a> {
    get: &'a dyn Fn(&str) -> Option<&'a MetaValue>,
}

impl<'a> Meta<'a> {
    fn value(&self, key: &str) -> Option<&'a MetaValue> {
        (self.get)(key)
    }
    fn string(&self, key: &str) -> Result<Option<&'a str>, TokenizerError> {
        match self.value(key) {
            None => Ok(None),
            Some(MetaValue::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(key, "a string", other)),
        }
    }
    fn int(&self, key: &str) -> Result<Option<i64>, TokenizerError> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => as_int(v)
                .map(Some)
                .ok_or_else(|| wrong_type(key, "an integer", v)),
        }
    }
    fn bool(&self, key: &str) -> Result<Option<bool>, TokenizerError> {
        match self.value(key) {
            None => Ok(None),
            Some(MetaValue::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(key, "a bool", other)),
        }
    }
    fn array(&self, key: &str) -> Result<Option<&'a [MetaValue]>, TokenizerError> {
        match self.value(key) {
            None => Ok(None),
            Some(MetaValue::Array(items)) => Ok(Some(items)),
            Some(other) => Err(wrong_type(key, "an array", other)),
        }
    }
    fn strings(&self, key: &str) -> Result<Option<Vec<String>>, TokenizerError> {
        let Some(items) = self.array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| match v {
                MetaValue::String(s) => Ok(s.clone()),
                other => Err(wrong_type(key, "an array of strings", other)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

fn as_int(v: &MetaValue) -> Option<i64> {
    Some(match *v {
        MetaValue::U8(x) => x.into(),
        MetaValue::I8(x) => x.into(),
        MetaValue::U16(x) => x.into(),
        MetaValue::I16(x) => x.into(),
        MetaValue::U32(x) => x.into(),
        MetaValue::I32(x) => x.into(),
        MetaValue::U64(x) => i64::try_from(x).ok()?,
        MetaValue::I64(x) => x,
        _ => return None,
    })
}

fn wrong_type(key: &str, wanted: &str, got: &MetaValue) -> TokenizerError {
    let got = format!("{got:?}");
    let got: String = got.chars().take(60).collect();
    TokenizerError::Invalid(format!("metadata {key} should be {wanted}, found {got}"))
}

impl GgufVocab {
    /// Reads the `tokenizer.ggml.*` keys through `get` (a GGUF file's metadata lookup).
    pub fn from_metadata<'a>(
        get: &'a dyn Fn(&str) -> Option<&'a MetaValue>,
    ) -> Result<GgufVocab, TokenizerError> {
        let meta = Meta { get };
        let model_name = meta.string("tokenizer.ggml.model")?.ok_or_else(|| {
            TokenizerError::Invalid("metadata tokenizer.ggml.model is missing".into())
        })?;
        let pre_name = meta.string("tokenizer.ggml.pre")?.unwrap_or("");
        let tokens = meta.strings("tokenizer.ggml.tokens")?.ok_or_else(|| {
            TokenizerError::Invalid("metadata tokenizer.ggml.tokens is missing".into())
        })?;
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize {
            return Err(TokenizerError::Invalid(format!(
                "vocabulary has {n} tokens"
            )));
        }
        // tokens are stored with their text; empty ones get a placeholder as in llama.cpp
        let tokens: Vec<String> = tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_empty() {
                    format!("[EMPTY_{i}]")
                } else {
                    t
                }
            })
            .collect();

        let scores = match meta.array("tokenizer.ggml.scores")? {
            None => vec![0.0; n],
            Some(items) if items.len() < n => {
                return Err(TokenizerError::Invalid(format!(
                    "{} scores for {n} tokens",
                    items.len()
                )));
            }
            Some(items) => items[..n]
                .iter()
                .map(|v| match *v {
                    MetaValue::F32(x) => Ok(x),
                    MetaValue::I32(x) => Ok(x as f32),
                    ref other => Err(wrong_type(
                        "tokenizer.ggml.scores",
                        "an array of f32",
                        other,
                    )),
                })
                .collect::<Result<_, _>>()?,
        };
        let mut attrs = match meta.array("tokenizer.ggml.token_type")? {
            None => vec![attr::NORMAL; n],
            Some(items) if items.len() < n => {
                return Err(TokenizerError::Invalid(format!(
                    "{} token types for {n} tokens",
                    items.len()
                )));
            }
            Some(items) => items[..n]
                .iter()
                .map(|v| {
                    as_int(v).map(attr::from_type).ok_or_else(|| {
                        wrong_type("tokenizer.ggml.token_type", "an array of integers", v)
                    })
                })
                .collect::<Result<_, _>>()?,
        };

        let mut token_to_id = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            token_to_id.insert(t.clone(), i as u32);
        }

        // model kind and its defaults (llama.cpp's loader)
        let (model, mut bos, mut eos, mut unk, mut add_bos, mut add_space_prefix) = match model_name
        {
            "llama" => (Model::Spm, Some(1), Some(2), Some(0), true, true),
            "gpt2" => {
                let cfg = PreConfig::for_pre(pre_name).ok_or_else(|| {
                    TokenizerError::Unsupported(format!(
                        "pre-tokenizer type '{pre_name}' (tokenizer.ggml.pre)"
                    ))
                })?;
                let merges = meta.strings("tokenizer.ggml.merges")?.ok_or_else(|| {
                    TokenizerError::Invalid("gpt2 vocabulary has no tokenizer.ggml.merges".into())
                })?;
                let mut ranks = HashMap::with_capacity(merges.len());
                for (rank, merge) in merges.iter().enumerate() {
                    // the separator is the first space after the first character
                    let split = merge
                        .char_indices()
                        .skip(1)
                        .find(|&(_, c)| c == ' ')
                        .map(|(i, _)| i);
                    let key = match split {
                        Some(i) => merge_key(&merge[..i], &merge[i + 1..]),
                        None => merge_key("", ""),
                    };
                    ranks.entry(key).or_insert(rank as u32);
                }
                let pre = PreTokenizer::new(cfg.patterns)?;
                let bos = if cfg.no_bos { None } else { Some(11) };
                (
                    Model::Bpe {
                        ranks,
                        pre,
                        ignore_merges: cfg.ignore_merges,
                    },
                    bos,
                    Some(11),
                    None,
                    cfg.add_bos,
                    false,
                )
            }
            other => {
                return Err(TokenizerError::Unsupported(format!(
                    "tokenizer model '{other}' (tokenizer.ggml.model; supported: gpt2, llama)"
                )))
            }
        };
        if let Some(v) = meta.bool("tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }

        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        let read_id = |key: &str, default: Option<u32>| -> Result<Option<u32>, TokenizerError> {
            Ok(match meta.int(key)? {
                Some(v) if v >= 0 && (v as usize) < n => Some(v as u32),
                // llama.cpp keeps the default when the file's id is out of range
                _ => in_range(default),
            })
        };
        bos = read_id("tokenizer.ggml.bos_token_id", bos)?;
        eos = read_id("tokenizer.ggml.eos_token_id", eos)?;
        unk = read_id("tokenizer.ggml.unknown_token_id", unk)?;
        let mut eot = read_id("tokenizer.ggml.eot_token_id", None)?;
        let eom = read_id("tokenizer.ggml.eom_token_id", None)?;
        let mut add_eos = false;
        if let Some(v) = meta.bool("tokenizer.ggml.add_bos_token")? {
            add_bos = v;
        }
        if let Some(v) = meta.bool("tokenizer.ggml.add_eos_token")? {
            add_eos = v;
        }

        // control-looking tokens become control tokens, and the end-of-generation set (llama.cpp)
        let eot_given = eot.is_some();
        let mut eog: Vec<u32> = Vec::new();
        for (i, text) in tokens.iter().enumerate() {
            let id = i as u32;
            if token_to_id.get(text) != Some(&id) {
                continue; // a duplicate text: llama.cpp only sees the last id
            }
            let t = text.as_str();
            if !eot_given && EOT_TEXTS.contains(&t) {
                eot.get_or_insert(id);
                attrs[i] |= attr::CONTROL;
            }
            if (eom.is_none() && t == "<|eom_id|>") || FIM_TEXTS.contains(&t) {
                attrs[i] |= attr::CONTROL;
            }
            if FIM_EOG_TEXTS.contains(&t) {
                attrs[i] |= attr::CONTROL;
                eog.push(id);
            }
            if EOG_TEXTS.contains(&t) {
                attrs[i] |= attr::CONTROL;
                eog.push(id);
            }
            if HARMONY_TEXTS.contains(&t) {
                attrs[i] = attr::USER_DEFINED;
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();
        // gpt-oss: <|end|> ends a message, not the generation, when <|return|> and <|call|> exist
        let has = |t: &str| eog.iter().any(|&id| tokens[id as usize] == t);
        if has("<|return|>") && has("<|call|>") && has("<|end|>") {
            if let Some(pos) = eog.iter().position(|&id| tokens[id as usize] == "<|end|>") {
                attrs[eog[pos] as usize] = attr::USER_DEFINED;
                eog.remove(pos);
            }
        }

        let mut special_cache: Vec<u32> = (0..n as u32)
            .filter(|&id| {
                attrs[id as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        special_cache.sort_by_key(|&id| Reverse(tokens[id as usize].len()));

        Ok(GgufVocab {
            model,
            tokens,
            scores,
            attrs,
            token_to_id,
            special_cache,
            bos,
            eos,
            unk,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
        })
    }

    fn attr(&self, id: u32) -> u8 {
        self.attrs
            .get(id as usize)
            .copied()
            .unwrap_or(attr::UNDEFINED)
    }

    /// Cuts special tokens out of `text`: the result alternates text slices and token ids.
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut fragments = vec![Fragment::Text(text)];
        for &id in &self.special_cache {
            if !parse_special && self.attr(id) & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let needle = self.tokens[id as usize].as_str();
            if !fragments
                .iter()
                .any(|f| matches!(f, Fragment::Text(t) if t.contains(needle)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(mut rest) = fragment else {
                    next.push(fragment);
                    continue;
                };
                while let Some(at) = rest.find(needle) {
                    if at > 0 {
                        next.push(Fragment::Text(&rest[..at]));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[at + needle.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            fragments = next;
        }
        fragments
    }

    fn bpe_word(
        &self,
        word: &str,
        ranks: &HashMap<String, u32>,
        ignore_merges: bool,
        out: &mut Vec<u32>,
    ) {
        let encoded: String = word.bytes().map(|b| byte_to_char()[b as usize]).collect();
        if ignore_merges {
            if let Some(&id) = self.token_to_id.get(&encoded) {
                out.push(id);
                return;
            }
        }
        let mut symbols = Symbols::new(&encoded);
        let mut queue = BinaryHeap::new();
        let push = |queue: &mut BinaryHeap<Reverse<(u32, usize, usize, String)>>,
                    symbols: &Symbols,
                    left: usize| {
            let Some(right) = symbols.next[left] else {
                return;
            };
            let (l, r) = (symbols.text(left), symbols.text(right));
            if let Some(&rank) = ranks.get(&merge_key(l, r)) {
                queue.push(Reverse((rank, left, right, format!("{l}{r}"))));
            }
        };
        for i in 0..symbols.len() {
            push(&mut queue, &symbols, i);
        }
        while let Some(Reverse((_, left, right, text))) = queue.pop() {
            if symbols.len_of(left) == 0 || symbols.len_of(right) == 0 {
                continue;
            }
            if symbols.text(left).len() + symbols.text(right).len() != text.len()
                || !text.starts_with(symbols.text(left))
                || !text.ends_with(symbols.text(right))
            {
                continue; // stale: a neighbour merged since this pair was queued
            }
            symbols.merge(left);
            if let Some(prev) = symbols.prev[left] {
                push(&mut queue, &symbols, prev);
            }
            push(&mut queue, &symbols, left);
        }
        for piece in symbols.pieces() {
            match self.token_to_id.get(piece) {
                Some(&id) => out.push(id),
                // no token: llama.cpp tries each single byte of the text as a token
                None => out.extend(piece.bytes().filter(|b| b.is_ascii()).filter_map(|b| {
                    self.token_to_id
                        .get(std::str::from_utf8(&[b]).unwrap_or_default())
                })),
            }
        }
    }

    fn spm_fragment(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        let mut symbols = Symbols::new(text);
        let mut queue = BinaryHeap::new();
        // best score first, then leftmost
        let push = |queue: &mut BinaryHeap<(Score, Reverse<usize>, usize, usize)>,
                    symbols: &Symbols,
                    left: usize| {
            let Some(right) = symbols.next[left] else {
                return;
            };
            let joined = symbols.joined(left, right);
            if let Some(&id) = self.token_to_id.get(joined) {
                queue.push((
                    Score(self.scores[id as usize]),
                    Reverse(left),
                    right,
                    joined.len(),
                ));
            }
        };
        for i in 0..symbols.len() {
            push(&mut queue, &symbols, i);
        }
        while let Some((_, Reverse(left), right, size)) = queue.pop() {
            if symbols.len_of(left) == 0
                || symbols.len_of(right) == 0
                || symbols.len_of(left) + symbols.len_of(right) != size
            {
                continue;
            }
            symbols.merge(left);
            if let Some(prev) = symbols.prev[left] {
                push(&mut queue, &symbols, prev);
            }
            push(&mut queue, &symbols, left);
        }
        for piece in symbols.pieces() {
            if let Some(&id) = self.token_to_id.get(piece) {
                out.push(id);
                continue;
            }
            for b in piece.bytes() {
                out.push(self.spm_byte_token(b)?);
            }
        }
        Ok(())
    }

    fn spm_byte_token(&self, b: u8) -> Result<u32, TokenizerError> {
        let hex = format!("<0x{b:02X}>");
        let single = std::str::from_utf8(std::slice::from_ref(&b)).ok();
        self.token_to_id
            .get(&hex)
            .or_else(|| single.and_then(|s| self.token_to_id.get(s)))
            .copied()
            .or(self.unk)
            .ok_or_else(|| {
                TokenizerError::Invalid(format!(
                    "vocabulary has no byte token {hex} and no unknown token"
                ))
            })
    }

    /// The bytes of a token; `special` says whether control/unknown tokens give their text.
    fn piece(&self, id: u32, special: bool) -> Option<Vec<u8>> {
        let text = self.tokens.get(id as usize)?;
        let a = self.attr(id);
        if a & (attr::CONTROL | attr::UNKNOWN) != 0 && !special {
            return Some(Vec::new());
        }
        Some(
            if a & (attr::CONTROL | attr::UNKNOWN | attr::USER_DEFINED) != 0 {
                text.as_bytes().to_vec()
            } else if a & attr::NORMAL != 0 {
                match self.model {
                    Model::Spm => text.replace('\u{2581}', " ").into_bytes(),
                    Model::Bpe { .. } => {
                        let mut bytes = Vec::with_capacity(text.len());
                        for c in text.chars() {
                            match char_to_byte(c) {
                                Some(b) => bytes.push(b),
                                // not a byte-level character: keep it as it is
                                None => {
                                    bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes())
                                }
                            }
                        }
                        bytes
                    }
                }
            } else if a & attr::BYTE != 0 {
                vec![parse_byte_token(text)?]
            } else {
                Vec::new()
            },
        )
    }
}

/// `<0xNN>` → the byte.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

fn merge_key(left: &str, right: &str) -> String {
    let mut key = String::with_capacity(left.len() + right.len() + 1);
    key.push_str(left);
    key.push('\0');
    key.push_str(right);
    key
}

/// f32 ordered for the score queue.
#[derive(PartialEq)]
struct Score(f32);
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

/// A word as a linked list of adjacent pieces (one character each at the start).
struct Symbols<'t> {
    text: &'t str,
    start: Vec<usize>,
    len: Vec<usize>,
    prev: Vec<Option<usize>>,
    next: Vec<Option<usize>>,
}

impl<'t> Symbols<'t> {
    fn new(text: &'t str) -> Symbols<'t> {
        let start: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        let count = start.len();
        let len = (0..count)
            .map(|i| start.get(i + 1).copied().unwrap_or(text.len()) - start[i])
            .collect();
        let prev = (0..count).map(|i| i.checked_sub(1)).collect();
        let next = (0..count)
            .map(|i| (i + 1 < count).then_some(i + 1))
            .collect();
        Symbols {
            text,
            start,
            len,
            prev,
            next,
        }
    }
    fn len(&self) -> usize {
        self.start.len()
    }
    fn len_of(&self, i: usize) -> usize {
        self.len[i]
    }
    fn text(&self, i: usize) -> &'t str {
        &self.text[self.start[i]..self.start[i] + self.len[i]]
    }
    /// The text of two adjacent symbols together.
    fn joined(&self, left: usize, right: usize) -> &'t str {
        &self.text[self.start[left]..self.start[right] + self.len[right]]
    }
    /// Absorbs the right neighbour of `left` into it.
    fn merge(&mut self, left: usize) {
        let Some(right) = self.next[left] else { return };
        self.len[left] += self.len[right];
        self.len[right] = 0;
        self.next[left] = self.next[right];
        if let Some(after) = self.next[right] {
            self.prev[after] = Some(left);
        }
    }
    fn pieces(&self) -> impl Iterator<Item = &'t str> + '_ {
        (0..self.len())
            .filter(|&i| self.len[i] > 0)
            .map(|i| self.text(i))
    }
}

impl TokenizerBackend for GgufVocab {
    fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::new();
        let fragments = self.partition(text, parse_special);
        if add_special && self.add_bos {
            out.push(self.bos.ok_or_else(|| {
                TokenizerError::Invalid("the model adds BOS but has no BOS token".into())
            })?);
        }
        match &self.model {
            Model::Spm => {
                let mut prev_special = true;
                for fragment in fragments {
                    match fragment {
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                        Fragment::Text(t) => {
                            let mut piece = String::with_capacity(t.len() + 3);
                            if self.add_space_prefix && prev_special {
                                piece.push(' ');
                            }
                            piece.push_str(t);
                            self.spm_fragment(&piece.replace(' ', "\u{2581}"), &mut out)?;
                            prev_special = false;
                        }
                    }
                }
            }
            Model::Bpe {
                ranks,
                pre,
                ignore_merges,
            } => {
                for fragment in fragments {
                    match fragment {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(t) => {
                            for word in pre.split(t)? {
                                self.bpe_word(word, ranks, *ignore_merges, &mut out);
                            }
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.push(self.eos.ok_or_else(|| {
                TokenizerError::Invalid("the model adds EOS but has no EOS token".into())
            })?);
        }
        Ok(out)
    }

    fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut bytes = Vec::new();
        let mut strip_space = self.add_space_prefix;
        for &id in ids {
            let Some(piece) = self.piece(id, !skip_special) else {
                continue;
            };
            let piece = if strip_space && !self.is_special(id) && piece.first() == Some(&b' ') {
                &piece[1..]
            } else {
                &piece[..]
            };
            if !piece.is_empty() || !self.is_special(id) {
                strip_space = false;
            }
            bytes.extend_from_slice(piece);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        self.piece(id, true)
    }
    fn vocab_size(&self) -> usize {
        self.tokens.len()
    }
    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.token_to_id.get(token).copied()
    }
    fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokens.get(id as usize).cloned()
    }
    fn is_special(&self, id: u32) -> bool {
        self.attr(id) & (attr::CONTROL | attr::UNKNOWN) != 0
    }
    fn bos_id(&self) -> Option<u32> {
        self.bos
    }
    fn eos_ids(&self) -> Vec<u32> {
        self.eog.clone()
    }
    fn strips_leading_space(&self) -> bool {
        self.add_space_prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> MetaValue {
        MetaValue::Array(
            items
                .iter()
                .map(|s| MetaValue::String(s.to_string()))
                .collect(),
        )
    }

    fn build(entries: Vec<(&str, MetaValue)>) -> Result<GgufVocab, TokenizerError> {
        let map: HashMap<String, MetaValue> = entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        GgufVocab::from_metadata(&|k| map.get(k))
    }

    /// A small SentencePiece vocabulary: specials, byte tokens for 'a' and two UTF-8 bytes, pieces.
    fn tiny_spm() -> GgufVocab {
        let tokens = [
            "<unk>",
            "<s>",
            "</s>",
            "<0x61>",
            "<0xC3>",
            "<0xA9>",
            "\u{2581}",
            "b",
            "c",
            "bc",
            "\u{2581}b",
            "\u{2581}bc",
        ];
        let scores = [
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -2.0, -3.0, -5.0, -1.5,
        ];
        let types = [2, 3, 3, 6, 6, 6, 1, 1, 1, 1, 1, 1];
        build(vec![
            ("tokenizer.ggml.model", MetaValue::String("llama".into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            (
                "tokenizer.ggml.scores",
                MetaValue::Array(scores.iter().map(|&s| MetaValue::F32(s)).collect()),
            ),
            (
                "tokenizer.ggml.token_type",
                MetaValue::Array(types.iter().map(|&t| MetaValue::I32(t)).collect()),
            ),
        ])
        .unwrap()
    }

    #[test]
    fn spm_merges_best_score_first_and_falls_back_to_bytes() {
        let v = tiny_spm();
        // "▁bc": "bc" (-3) outranks "▁b" (-5), then "▁"+"bc" → "▁bc" (-1.5)
        assert_eq!(v.encode("bc", false, false).unwrap(), vec![11]);
        // 'a' has no piece: its byte token; 'é' (C3 A9) likewise; BOS from the defaults
        assert_eq!(
            v.encode("a é", true, false).unwrap(),
            vec![1, 6, 3, 6, 4, 5]
        );
        assert_eq!(v.decode(&[1, 6, 3, 6, 4, 5], true), "a é");
        assert_eq!(v.decode(&[4], false), "\u{FFFD}");
    }

    #[test]
    fn spm_special_tokens_only_parsed_when_asked() {
        let v = tiny_spm();
        assert_eq!(v.encode("</s>b", false, true).unwrap(), vec![2, 10]);
        assert_ne!(v.encode("</s>b", false, false).unwrap()[0], 2);
    }

    #[test]
    fn bpe_applies_merges_by_rank() {
        // byte-level: 'Ġ' is the space
        let tokens = ["a", "b", "Ġ", "ab", "Ġa", "Ġab", "<|endoftext|>"];
        let v = build(vec![
            ("tokenizer.ggml.model", MetaValue::String("gpt2".into())),
            ("tokenizer.ggml.pre", MetaValue::String("gpt-2".into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            ("tokenizer.ggml.merges", strings(&["a b", "Ġ a", "Ġa b"])),
            (
                "tokenizer.ggml.token_type",
                MetaValue::Array([1, 1, 1, 1, 1, 1, 3].map(MetaValue::I32).to_vec()),
            ),
            ("tokenizer.ggml.eos_token_id", MetaValue::U32(6)),
        ])
        .unwrap();
        // " ab": "a b" ranks first → Ġ + ab; "Ġ ab" is no merge, so it stays two tokens
        assert_eq!(v.encode(" ab", false, false).unwrap(), vec![2, 3]);
        assert_eq!(
            v.encode("ab<|endoftext|>", false, true).unwrap(),
            vec![3, 6]
        );
        assert_eq!(v.decode(&[2, 3, 6], true), " ab");
        assert_eq!(v.decode(&[2, 3, 6], false), " ab<|endoftext|>");
        assert_eq!(v.eos_ids(), vec![6]);
    }

    #[test]
    fn out_of_range_ids_are_skipped() {
        let v = tiny_spm();
        assert_eq!(v.decode(&[7, 99_999, u32::MAX, 8], false), "bc");
        assert_eq!(v.token_bytes(99_999), None);
        assert_eq!(v.id_to_token(u32::MAX), None);
    }

    fn error_of(entries: Vec<(&str, MetaValue)>) -> String {
        match build(entries) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted bad metadata"),
        }
    }

    #[test]
    fn bad_metadata_gives_clear_errors() {
        let model = |m: &str| ("tokenizer.ggml.model", MetaValue::String(m.into()));
        let tokens = || ("tokenizer.ggml.tokens", strings(&["a", "b"]));
        assert!(error_of(vec![tokens()]).contains("tokenizer.ggml.model is missing"));
        assert!(error_of(vec![model("t5"), tokens()]).contains("'t5'"));
        assert!(error_of(vec![
            model("gpt2"),
            tokens(),
            ("tokenizer.ggml.pre", MetaValue::String("gpt-2".into()))
        ])
        .contains("merges"));
        let e = error_of(vec![
            model("gpt2"),
            tokens(),
            ("tokenizer.ggml.pre", MetaValue::String("martian".into())),
            ("tokenizer.ggml.merges", strings(&["a b"])),
        ]);
        assert!(e.contains("'martian'"), "{e}");
        assert!(error_of(vec![model("llama")]).contains("tokenizer.ggml.tokens is missing"));
        let e = error_of(vec![
            model("llama"),
            (
                "tokenizer.ggml.tokens",
                MetaValue::Array(vec![MetaValue::U8(1)]),
            ),
        ]);
        assert!(
            e.contains("tokenizer.ggml.tokens should be an array of strings"),
            "{e}"
        );
        let e = error_of(vec![
            model("llama"),
            tokens(),
            (
                "tokenizer.ggml.scores",
                MetaValue::Array(vec![MetaValue::F32(0.0)]),
            ),
        ]);
        assert!(e.contains("1 scores for 2 tokens"), "{e}");
        let e = error_of(vec![
            model("llama"),
            ("tokenizer.ggml.tokens", MetaValue::Array(vec![])),
        ]);
        assert!(e.contains("0 tokens"), "{e}");
    }
}
