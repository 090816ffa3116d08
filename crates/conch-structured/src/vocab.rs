//! A model's token byte strings arranged for fast masking.

/// A byte trie over token byte strings: a mask walks each shared prefix once.
pub(crate) struct Trie {
    /// Per node: its children as a range of `edges`, its tokens as a range of `token_ids`.
    nodes: Vec<TrieNode>,
    edge_bytes: Vec<u8>,
    edge_targets: Vec<u32>,
    token_ids: Vec<u32>,
}

#[derive(Clone, Copy)]
struct TrieNode {
    edges: (u32, u32),
    tokens: (u32, u32),
}

impl Trie {
    /// `ids` sorted by their byte strings; every byte string non-empty.
    fn build(tokens: &[Vec<u8>], mut ids: Vec<u32>) -> Trie {
        ids.sort_by(|&a, &b| tokens[a as usize].cmp(&tokens[b as usize]));
        let mut trie = Trie {
            nodes: Vec::new(),
            edge_bytes: Vec::new(),
            edge_targets: Vec::new(),
            token_ids: Vec::new(),
        };
        trie.subtree(tokens, &ids, 0);
        trie
    }

    /// Adds the node for the common prefix of length `depth` of `ids` (all sharing it) and,
    /// recursively, its children; returns the node's index.
    fn subtree(&mut self, tokens: &[Vec<u8>], ids: &[u32], depth: usize) -> u32 {
        let index = self.nodes.len() as u32;
        self.nodes.push(TrieNode {
            edges: (0, 0),
            tokens: (0, 0),
        });
        let ends = ids
            .iter()
            .take_while(|&&id| tokens[id as usize].len() == depth)
            .count();
        let token_start = self.token_ids.len() as u32;
        self.token_ids.extend_from_slice(&ids[..ends]);
        let token_end = self.token_ids.len() as u32;
        // Children first into a local list: their own subtrees append edges of their own.
        let mut children = Vec::new();
        let mut rest = &ids[ends..];
        while let Some(&first) = rest.first() {
            let byte = tokens[first as usize][depth];
            let n = rest
                .iter()
                .take_while(|&&id| tokens[id as usize][depth] == byte)
                .count();
            let child = self.subtree(tokens, &rest[..n], depth + 1);
            children.push((byte, child));
            rest = &rest[n..];
        }
        let edge_start = self.edge_bytes.len() as u32;
        for (byte, child) in children {
            self.edge_bytes.push(byte);
            self.edge_targets.push(child);
        }
        self.nodes[index as usize] = TrieNode {
            edges: (edge_start, self.edge_bytes.len() as u32),
            tokens: (token_start, token_end),
        };
        index
    }

    pub fn edges(&self, node: u32) -> impl Iterator<Item = (u8, u32)> + '_ {
        let (a, b) = self.nodes[node as usize].edges;
        (a as usize..b as usize).map(move |e| (self.edge_bytes[e], self.edge_targets[e]))
    }

    pub fn tokens(&self, node: u32) -> &[u32] {
        let (a, b) = self.nodes[node as usize].tokens;
        &self.token_ids[a as usize..b as usize]
    }
}

/// Whether `bytes`, starting at a character boundary, is a valid UTF-8 prefix (it may end
/// inside a character) with no `"`, `\` or control character — text that may stand anywhere in
/// a JSON string. Returns the number of characters it starts.
fn plain_string_chars(bytes: &[u8]) -> Option<u32> {
    let mut chars = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            if b < 0x20 || b == b'"' || b == b'\\' {
                return None;
            }
            i += 1;
        } else {
            let (len, lo, hi) = utf8_lead(b)?;
            for k in 1..len {
                let Some(&c) = bytes.get(i + k) else { break };
                let (l, h) = if k == 1 { (lo, hi) } else { (0x80, 0xBF) };
                if c < l || c > h {
                    return None;
                }
            }
            i += len;
        }
        chars += 1;
    }
    Some(chars)
}

/// For a UTF-8 lead byte: the sequence length and the allowed range of the first continuation
/// byte (which rules out overlong forms, surrogates and code points above U+10FFFF).
pub(crate) fn utf8_lead(b: u8) -> Option<(usize, u8, u8)> {
    match b {
        0xC2..=0xDF => Some((2, 0x80, 0xBF)),
        0xE0 => Some((3, 0xA0, 0xBF)),
        0xE1..=0xEC | 0xEE..=0xEF => Some((3, 0x80, 0xBF)),
        0xED => Some((3, 0x80, 0x9F)),
        0xF0 => Some((4, 0x90, 0xBF)),
        0xF1..=0xF3 => Some((4, 0x80, 0xBF)),
        0xF4 => Some((4, 0x80, 0x8F)),
        _ => None,
    }
}

/// A model's vocabulary as byte strings, built once per model and shared by every
/// [`JsonConstraint`](crate::JsonConstraint).
pub struct TokenVocab {
    len: usize,
    eos: Vec<u32>,
    /// Every usable token.
    pub(crate) all: Trie,
    /// The tokens that are not plain string text: inside a string only these need a walk.
    pub(crate) non_plain: Trie,
    /// Plain string tokens ordered by how many characters they start.
    pub(crate) plain_by_chars: Vec<(u32, u32)>,
}

impl TokenVocab {
    /// `tokens[id]` is the text token `id` stands for, as bytes. An empty byte string marks a
    /// token that must never be produced inside JSON: pass one for special/control tokens
    /// (whose bytes are a marker such as `<|im_end|>`, not text). `eos` ids are allowed only
    /// once the value is complete, whatever their bytes.
    pub fn new(tokens: Vec<Vec<u8>>, eos: &[u32]) -> TokenVocab {
        let usable: Vec<u32> = (0..tokens.len() as u32)
            .filter(|id| !tokens[*id as usize].is_empty() && !eos.contains(id))
            .collect();
        let mut plain_by_chars = Vec::new();
        let mut non_plain = Vec::new();
        for &id in &usable {
            match plain_string_chars(&tokens[id as usize]) {
                Some(chars) => plain_by_chars.push((chars, id)),
                None => non_plain.push(id),
            }
        }
        plain_by_chars.sort_unstable();
        TokenVocab {
            len: tokens.len(),
            eos: eos
                .iter()
                .copied()
                .filter(|&id| (id as usize) < tokens.len())
                .collect(),
            all: Trie::build(&tokens, usable),
            non_plain: Trie::build(&tokens, non_plain),
            plain_by_chars,
        }
    }

    /// From a loaded tokenizer: special tokens are excluded, the tokenizer's eos ids end.
    pub fn from_tokenizer(tokenizer: &conch_tokenizer::Tokenizer) -> TokenVocab {
        let tokens = (0..tokenizer.vocab_size() as u32)
            .map(|id| {
                if tokenizer.is_special(id) {
                    Vec::new()
                } else {
                    tokenizer.token_bytes(id).unwrap_or_default()
                }
            })
            .collect();
        TokenVocab::new(tokens, &tokenizer.eos_ids())
    }

    /// Number of token ids (the length a mask must have).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn eos(&self) -> &[u32] {
        &self.eos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_string_text() {
        assert_eq!(plain_string_chars(b"hello"), Some(5));
        assert_eq!(plain_string_chars("héé".as_bytes()), Some(3));
        // A character cut at the end is still a valid prefix.
        assert_eq!(plain_string_chars(&"é".as_bytes()[..1]), Some(1));
        assert_eq!(plain_string_chars(b"a\"b"), None);
        assert_eq!(plain_string_chars(b"a\\n"), None);
        assert_eq!(plain_string_chars(b"a\nb"), None);
        // A continuation byte cannot start text; surrogates and overlongs are not UTF-8.
        assert_eq!(plain_string_chars(&[0x80]), None);
        assert_eq!(plain_string_chars(&[0xED, 0xA0, 0x80]), None);
        assert_eq!(plain_string_chars(&[0xC0, 0xAF]), None);
        assert_eq!(plain_string_chars(&[0xF4, 0x90, 0x80, 0x80]), None);
    }

    #[test]
    fn trie_holds_every_token_once() {
        let tokens: Vec<Vec<u8>> = ["a", "ab", "abc", "b", "", "ba", "a"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let vocab = TokenVocab::new(tokens, &[3]);
        let mut seen = Vec::new();
        let mut stack = vec![0u32];
        while let Some(n) = stack.pop() {
            seen.extend_from_slice(vocab.all.tokens(n));
            stack.extend(vocab.all.edges(n).map(|(_, c)| c));
        }
        seen.sort();
        // "" (4) is unusable and eos (3) is never inside JSON.
        assert_eq!(seen, vec![0, 1, 2, 5, 6]);
    }
}
