//! Splitting text into words before BPE, the way llama.cpp does it for each `tokenizer.ggml.pre`.
//!
//! llama.cpp applies a list of regexes in turn, each one refining the pieces of the previous one
//! (both the matches and the text between them become pieces). Three regexes have hand-written
//! splitters in llama.cpp whose behaviour differs slightly from the regex (unassigned codepoints,
//! for one); we mirror those. All other regexes run on onig with ECMAScript-like semantics: when a
//! regex uses `\p{..}` classes, llama.cpp first collapses every non-ASCII codepoint to one byte
//! naming its class and rewrites the classes to match those bytes, so we do the same.

use crate::unicode::CptFlags;
use crate::TokenizerError;
use onig::{EncodedBytes, MatchParam, Regex, RegexOptions, Region, SearchOptions, Syntax};

const GPT2_PATTERN: &str =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const LLAMA3_PATTERN: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_PATTERN: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const NEWLINES_PATTERN: &str = "[^\\n]+|[\\n]+";
const DEEPSEEK3_MAIN: &str = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";
const GPT4O_PATTERN: &str = "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const TEKKEN_PATTERN: &str = "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const BLOOM_PATTERN: &str = " ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{964}\u{6D4}\u{60C})]+";

/// How one `tokenizer.ggml.pre` value tokenizes (from llama.cpp's vocabulary loader).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PreConfig {
    pub patterns: &'static [&'static str],
    /// Words whose whole text is a token skip the merges.
    pub ignore_merges: bool,
    /// Default for adding BOS when the GGUF has no `add_bos_token`.
    pub add_bos: bool,
    /// The family has no BOS token at all.
    pub no_bos: bool,
}

impl PreConfig {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value; `None` for one we do not know
    /// (llama.cpp refuses those too).
    pub(crate) fn for_pre(pre: &str) -> Option<PreConfig> {
        let cfg = |patterns, ignore_merges, add_bos| PreConfig {
            patterns,
            ignore_merges,
            add_bos,
            no_bos: false,
        };
        const DEFAULT: &[&str] = &[
            "[\\p{P}\\$\\+<=>\\^~\\|]+",
            GPT2_PATTERN,
            "\\p{N}+",
            "[0-9][0-9][0-9]",
        ];
        Some(match pre {
            "" | "default" => cfg(DEFAULT, false, false),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
            | "jina-v5-nano" => cfg(&[LLAMA3_PATTERN], true, true),
            "dbrx" | "smaug-bpe" => cfg(&[LLAMA3_PATTERN], false, false),
            "deepseek-llm" => cfg(
                &[
                    "[\r\n]",
                    "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+",
                    "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
                    "\\s+$",
                    "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
                    "\\p{N}+",
                ],
                false,
                false,
            ),
            "deepseek-coder" => cfg(&["[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+", "\\p{N}"], false, false),
            "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => {
                cfg(&["\\p{N}{1,3}", "[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+", DEEPSEEK3_MAIN], false, false)
            }
            "falcon" => cfg(&["[\\p{P}\\$\\+<=>\\^~\\|`]+", GPT2_PATTERN, "[0-9][0-9][0-9]"], false, false),
            "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
                cfg(&["\\p{N}", GPT2_PATTERN], false, false)
            }
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de" | "a.x-4.0"
            | "mellum" | "modern-bert" | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling" | "exaone4"
            | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" => cfg(&[GPT2_PATTERN], false, false),
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2" | "hunyuan" | "solar-open"
            | "grok-2" => cfg(&[QWEN2_PATTERN], false, false),
            "poro-chat" | "bloom" | "gpt3-finnish" => cfg(&[BLOOM_PATTERN], false, false),
            "viking" => cfg(&[BLOOM_PATTERN, "\\p{N}"], false, false),
            "chatglm-bpe" => PreConfig { no_bos: true, ..cfg(&[LLAMA3_PATTERN], false, false) },
            "glm4" | "glm5" => PreConfig { no_bos: true, ..cfg(&[LLAMA3_PATTERN], true, false) },
            "tekken" => cfg(&[TEKKEN_PATTERN], true, true),
            "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => cfg(&[GPT4O_PATTERN], false, false),
            "laguna" => cfg(&[NEWLINES_PATTERN, QWEN2_PATTERN], false, false),
            _ => return None,
        })
    }
}

/// One splitting step.
enum Splitter {
    /// llama.cpp's hand-written GPT-2 splitter.
    Gpt2,
    /// llama.cpp's hand-written Llama 3 splitter.
    Llama3,
    /// Runs of newlines and runs of other characters.
    Newlines,
    /// A regex over the collapsed text (one byte per codepoint, see module docs).
    Collapsed(Regex),
    /// A regex over the text itself (non-ASCII whitespace replaced by `\v`, as llama.cpp does).
    Wide(Regex),
}

/// The pre-tokenizer of one vocabulary: its splitting steps in order.
pub(crate) struct PreTokenizer {
    splitters: Vec<Splitter>,
    needs_collapsed: bool,
}

const CLASSES: [(&str, u8, &str); 10] = [
    ("\\p{N}", 0xD1, "0-9"),
    ("\\p{L}", 0xD2, "A-Za-z"),
    ("\\p{P}", 0xD3, "!-#%-*,-/:-;?-@\\[-\\]_\\{\\}"),
    ("\\p{M}", 0xD4, ""),
    ("\\p{S}", 0xD5, "\\$\\+<->\\^`\\|~"),
    ("\\p{Lu}", 0xD2, "A-Za-z"),
    ("\\p{Ll}", 0xD2, "A-Za-z"),
    ("\\p{Lt}", 0xD2, "A-Za-z"),
    ("\\p{Lm}", 0xD2, "A-Za-z"),
    ("\\p{Lo}", 0xD2, "A-Za-z"),
];

fn uses_classes(pattern: &str) -> bool {
    CLASSES.iter().any(|(name, _, _)| pattern.contains(name))
}

/// Rewrites `\p{..}` classes to the collapsed bytes plus their ASCII members.
fn collapse_pattern(pattern: &str) -> Result<Vec<u8>, TokenizerError> {
    if !pattern.is_ascii() {
        return Err(TokenizerError::Invalid(format!(
            "pre-tokenizer regex mixes unicode classes with non-ASCII characters: {pattern}"
        )));
    }
    let bytes = pattern.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 2);
    let mut inside_class = false;
    let mut i = 0;
    while i < bytes.len() {
        let escaped = i > 0 && bytes[i - 1] == b'\\';
        if bytes[i] == b'[' && !escaped {
            inside_class = true;
        } else if bytes[i] == b']' && inside_class && !escaped {
            inside_class = false;
        } else if let Some((name, byte, ascii)) = CLASSES
            .iter()
            .find(|(name, _, _)| pattern[i..].starts_with(name))
        {
            if !inside_class {
                out.push(b'[');
            }
            out.push(*byte);
            out.extend_from_slice(ascii.as_bytes());
            if !inside_class {
                out.push(b']');
            }
            i += name.len();
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    Ok(out)
}

fn regex_error(pattern: &str, e: onig::Error) -> TokenizerError {
    TokenizerError::Invalid(format!(
        "pre-tokenizer regex {pattern:?} does not compile: {e}"
    ))
}

impl PreTokenizer {
    pub(crate) fn new(patterns: &[&str]) -> Result<PreTokenizer, TokenizerError> {
        let mut splitters = Vec::new();
        let mut needs_collapsed = false;
        for &pattern in patterns {
            let splitter = if pattern == GPT2_PATTERN {
                Splitter::Gpt2
            } else if pattern == LLAMA3_PATTERN {
                Splitter::Llama3
            } else if pattern == NEWLINES_PATTERN {
                Splitter::Newlines
            } else if uses_classes(pattern) {
                needs_collapsed = true;
                let collapsed = collapse_pattern(pattern)?;
                let regex = Regex::with_options_and_encoding(
                    EncodedBytes::ascii(&collapsed),
                    RegexOptions::REGEX_OPTION_NONE,
                    Syntax::perl(),
                )
                .map_err(|e| regex_error(pattern, e))?;
                Splitter::Collapsed(regex)
            } else {
                Splitter::Wide(
                    Regex::with_options(pattern, RegexOptions::REGEX_OPTION_NONE, Syntax::perl())
                        .map_err(|e| regex_error(pattern, e))?,
                )
            };
            splitters.push(splitter);
        }
        Ok(PreTokenizer {
            splitters,
            needs_collapsed,
        })
    }

    /// Splits `text` into words (as strings of the original text).
    pub(crate) fn split<'t>(&self, text: &'t str) -> Result<Vec<&'t str>, TokenizerError> {
        let cpts: Vec<u32> = text.chars().map(|c| c as u32).collect();
        let collapsed: Vec<u8> = if self.needs_collapsed {
            cpts.iter()
                .map(|&c| {
                    if c < 128 {
                        c as u8
                    } else {
                        CptFlags::of(c).collapsed_byte()
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut lengths = vec![cpts.len()];
        for splitter in &self.splitters {
            lengths = match splitter {
                Splitter::Gpt2 => split_custom(&cpts, &lengths, gpt2_piece),
                Splitter::Llama3 => split_custom(&cpts, &lengths, llama3_piece),
                Splitter::Newlines => split_custom(&cpts, &lengths, newline_piece),
                Splitter::Collapsed(regex) => split_regex(&lengths, regex, |start, end| {
                    Subject::Collapsed(collapsed[start..end].to_vec())
                })?,
                Splitter::Wide(regex) => {
                    split_regex(&lengths, regex, |start, end| wide_chunk(&cpts[start..end]))?
                }
            };
        }
        // codepoint lengths → slices of the text
        let mut words = Vec::with_capacity(lengths.len());
        let mut chars = text
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(text.len()));
        let mut begin = chars.next().unwrap_or(0);
        for len in lengths.into_iter().filter(|&l| l > 0) {
            let end = chars.nth(len - 1).unwrap_or(text.len());
            words.push(&text[begin..end]);
            begin = end;
        }
        Ok(words)
    }
}

/// The text one regex runs over.
enum Subject {
    /// One byte per codepoint (ASCII encoding for onig): offsets are codepoint counts.
    Collapsed(Vec<u8>),
    /// UTF-8 text and the byte offset of every codepoint boundary.
    Wide {
        text: String,
        boundaries: Vec<usize>,
    },
}

impl Subject {
    fn len(&self) -> usize {
        match self {
            Subject::Collapsed(bytes) => bytes.len(),
            Subject::Wide { text, .. } => text.len(),
        }
    }

    fn to_cpt(&self, offset: usize) -> usize {
        match self {
            Subject::Collapsed(_) => offset,
            Subject::Wide { boundaries, .. } => boundaries.partition_point(|&o| o < offset),
        }
    }

    fn search(
        &self,
        regex: &Regex,
        from: usize,
        region: &mut Region,
    ) -> Result<Option<(usize, usize)>, TokenizerError> {
        let (end, options) = (self.len(), SearchOptions::SEARCH_OPTION_NONE);
        let found = match self {
            Subject::Collapsed(bytes) => regex.search_with_param(
                EncodedBytes::ascii(bytes),
                from,
                end,
                options,
                Some(region),
                MatchParam::default(),
            ),
            Subject::Wide { text, .. } => regex.search_with_param(
                text.as_str(),
                from,
                end,
                options,
                Some(region),
                MatchParam::default(),
            ),
        }
        .map_err(|e| TokenizerError::Invalid(format!("pre-tokenizer regex failed: {e}")))?;
        Ok(found.and_then(|_| region.pos(0)))
    }
}

/// The UTF-8 text of a chunk with non-ASCII whitespace turned into `\v` (as llama.cpp does before
/// running a regex without classes).
fn wide_chunk(cpts: &[u32]) -> Subject {
    let mut text = String::with_capacity(cpts.len());
    let mut boundaries = Vec::with_capacity(cpts.len() + 1);
    for &c in cpts {
        boundaries.push(text.len());
        let ch = char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER);
        text.push(if c > 0x7F && CptFlags::of(c).is_whitespace() {
            '\u{0B}'
        } else {
            ch
        });
    }
    boundaries.push(text.len());
    Subject::Wide { text, boundaries }
}

/// Runs `regex` over each piece; matches and the gaps between them become pieces.
fn split_regex<F>(
    lengths: &[usize],
    regex: &Regex,
    subject: F,
) -> Result<Vec<usize>, TokenizerError>
where
    F: Fn(usize, usize) -> Subject,
{
    let mut out = Vec::with_capacity(lengths.len());
    let mut start = 0;
    for &len in lengths {
        let subject = subject(start, start + len);
        let end = subject.len();
        let mut from = 0;
        let mut last = 0;
        let mut region = Region::new();
        while from <= end {
            let Some((m_start, m_end)) = subject.search(regex, from, &mut region)? else {
                break;
            };
            if m_end == m_start {
                // llama.cpp's regexes never match empty; step over it rather than loop
                from = m_end + 1;
                continue;
            }
            let (s, e) = (subject.to_cpt(m_start), subject.to_cpt(m_end));
            if s > last {
                out.push(s - last);
            }
            out.push(e - s);
            last = e;
            from = m_end;
        }
        if last < len {
            out.push(len - last);
        }
        start += len;
    }
    Ok(out)
}

/// One piece of text under a hand-written splitter: positions outside it have no class.
struct Window<'a> {
    cpts: &'a [u32],
    begin: usize,
    end: usize,
}

impl Window<'_> {
    fn cpt(&self, pos: usize) -> Option<u32> {
        (self.begin <= pos && pos < self.end).then(|| self.cpts[pos])
    }
    fn flags(&self, pos: usize) -> CptFlags {
        self.cpt(pos).map_or(CptFlags::NONE, CptFlags::of)
    }
    fn is(&self, pos: usize, c: char) -> bool {
        self.cpt(pos) == Some(c as u32)
    }
}

/// Applies a hand-written splitter: `piece(window, pos)` returns where the word starting at `pos`
/// ends (always past `pos`).
fn split_custom(cpts: &[u32], lengths: &[usize], piece: fn(&Window, usize) -> usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(lengths.len());
    let mut begin = 0;
    for &len in lengths {
        let window = Window {
            cpts,
            begin,
            end: begin + len,
        };
        let mut pos = begin;
        while pos < window.end {
            let next = piece(&window, pos).clamp(pos + 1, window.end);
            out.push(next - pos);
            pos = next;
        }
        begin += len;
    }
    out
}

/// English contractions after an apostrophe at `pos`: `'s 't 'm 'd` or `'re 've 'll`.
fn contraction_end(w: &Window, pos: usize, fold_case: bool) -> Option<usize> {
    if !w.is(pos, '\'') || pos + 1 >= w.end {
        return None;
    }
    let lower = |p: usize| {
        w.cpt(p)
            .and_then(char::from_u32)
            .map(|c| if fold_case { c.to_ascii_lowercase() } else { c })
    };
    let next = lower(pos + 1);
    if matches!(next, Some('s' | 't' | 'm' | 'd')) {
        return Some(pos + 2);
    }
    if pos + 2 < w.end {
        if let (Some(a), Some(b)) = (next, lower(pos + 2)) {
            if matches!((a, b), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                return Some(pos + 3);
            }
        }
    }
    None
}

fn is_other(f: CptFlags) -> bool {
    !(f.is_whitespace() || f.is_letter() || f.is_number()) && f.is_any()
}

/// Whitespace run at `pos`: `\s+(?!\S)` keeps the last space for the next word, unless the run
/// ends the piece.
fn whitespace_end(w: &Window, pos: usize, run: usize) -> usize {
    if run > 1 && w.cpt(pos + run).is_some() {
        pos + run - 1
    } else if run > 0 {
        pos + run
    } else {
        pos + 1
    }
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
fn gpt2_piece(w: &Window, pos: usize) -> usize {
    if let Some(end) = contraction_end(w, pos, false) {
        return end;
    }
    let after_space = pos + usize::from(w.is(pos, ' '));
    let first = w.flags(after_space);
    let run_while = |cond: fn(CptFlags) -> bool| {
        let mut p = after_space;
        while cond(w.flags(p)) {
            p += 1;
        }
        p
    };
    if first.is_letter() {
        return run_while(CptFlags::is_letter);
    }
    if first.is_number() {
        return run_while(CptFlags::is_number);
    }
    if is_other(first) {
        return run_while(is_other);
    }
    let mut run = 0;
    while w.flags(pos + run).is_whitespace() {
        run += 1;
    }
    whitespace_end(w, pos, run)
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
fn llama3_piece(w: &Window, pos: usize) -> usize {
    if let Some(end) = contraction_end(w, pos, true) {
        return end;
    }
    let flags = w.flags(pos);
    let is_newline = |p: usize| w.is(p, '\r') || w.is(p, '\n');
    if !(is_newline(pos) || flags.is_number())
        && (flags.is_letter() || w.flags(pos + 1).is_letter())
    {
        let mut p = pos + 1;
        while w.flags(p).is_letter() {
            p += 1;
        }
        return p;
    }
    if flags.is_number() {
        let mut p = pos;
        while p - pos < 3 && w.flags(p).is_number() {
            p += 1;
        }
        return p;
    }
    let after_space = pos + usize::from(w.is(pos, ' '));
    // llama.cpp tests the class of the char after the space but the presence of the first one
    if is_other(w.flags(after_space)) && flags.is_any() {
        let mut p = after_space;
        while is_other(w.flags(p)) {
            p += 1;
        }
        while is_newline(p) {
            p += 1;
        }
        return p;
    }
    let mut run = 0;
    let mut last_newline_end = None;
    while w.flags(pos + run).is_whitespace() {
        if is_newline(pos + run) {
            last_newline_end = Some(pos + run + 1);
        }
        run += 1;
    }
    last_newline_end.unwrap_or_else(|| whitespace_end(w, pos, run))
}

/// `[^\n]+|[\n]+`
fn newline_piece(w: &Window, pos: usize) -> usize {
    let newline = w.is(pos, '\n');
    let mut p = pos;
    while p < w.end && w.is(p, '\n') == newline {
        p += 1;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: &str, text: &str) -> Vec<String> {
        let cfg = PreConfig::for_pre(pre).unwrap();
        PreTokenizer::new(cfg.patterns)
            .unwrap()
            .split(text)
            .unwrap()
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn gpt2_splits_words_spaces_and_contractions() {
        assert_eq!(
            words("gpt-2", "Hello world  it's 42!"),
            ["Hello", " world", " ", " it", "'s", " 42", "!"]
        );
    }

    #[test]
    fn llama3_groups_digits_by_three_and_keeps_newlines() {
        assert_eq!(
            words("llama-bpe", "x 1234567\n\n y"),
            ["x", " ", "123", "456", "7", "\n\n", " y"]
        );
    }

    #[test]
    fn collapsed_regex_handles_non_ascii_classes() {
        // qwen2: single digits, letters with one leading non-letter
        assert_eq!(
            words("qwen2", "héllo 12 中文!"),
            ["héllo", " ", "1", "2", " 中文", "!"]
        );
    }

    #[test]
    fn smollm_splits_every_digit_first() {
        assert_eq!(words("smollm", "a 123"), ["a", " ", "1", "2", "3"]);
    }

    #[test]
    fn unknown_pre_is_none() {
        assert!(PreConfig::for_pre("no-such-pre").is_none());
    }
}
