//! Time of `JsonConstraint::allowed` per decoding step over a real vocabulary.
//!
//!     cargo run --release -p conch-structured --example mask_timing -- VOCAB.gguf [WALKS]
//!
//! Walks uniformly random allowed tokens (up to 300 per walk) under a few schemas and prints the
//! mean, 99th percentile and worst time of one mask (best of three tries each, as the
//! machine is shared), and the time to build the vocabulary.

use conch_formats::GgufFile;
use conch_structured::{JsonConstraint, TokenVocab};
use conch_tokenizer::Tokenizer;
use serde_json::json;
use std::time::{Duration, Instant};

/// A small xorshift generator: the example needs no statistical quality, only repeatability.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: mask_timing VOCAB.gguf [WALKS]")?;
    let walks: u64 = args.get(2).map(|w| w.parse()).transpose()?.unwrap_or(5);
    let tokenizer = Tokenizer::from_gguf(&GgufFile::open(path.as_ref())?)?;
    let started = Instant::now();
    let vocab = TokenVocab::from_tokenizer(&tokenizer);
    println!(
        "{path}: {} tokens, vocabulary built in {:?}",
        vocab.len(),
        started.elapsed()
    );
    let token_bytes: Vec<Vec<u8>> = (0..vocab.len() as u32)
        .map(|id| tokenizer.token_bytes(id).unwrap_or_default())
        .collect();
    let schemas = [
        ("json_object", None),
        (
            "schema",
            Some(json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 40},
                    "age": {"type": "integer", "minimum": 0, "maximum": 150},
                    "bio": {"type": "string"},
                    "tags": {"type": "array", "items": {"enum": ["admin", "user", "guest"]}},
                    "kind": {"anyOf": [{"type": "number"}, {"type": "boolean"}, {"type": "null"}]}
                },
                "required": ["name", "age", "bio", "tags", "kind"],
                "additionalProperties": false
            })),
        ),
    ];
    let mut mask = vec![false; vocab.len()];
    for (name, schema) in schemas {
        let mut times = Vec::new();
        for walk in 0..walks {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (walk + 1));
            let mut c = JsonConstraint::new(schema.as_ref())?;
            for _ in 0..300 {
                // Best of three: the machine is shared, and a preempted call says nothing of the mask.
                let mut best = Duration::MAX;
                let mut n = 0;
                for _ in 0..3 {
                    let t = Instant::now();
                    n = c.allowed(&vocab, &mut mask)?;
                    best = best.min(t.elapsed());
                }
                times.push(best);
                if n == 0 || c.is_complete() {
                    break;
                }
                let allowed: Vec<usize> = (0..mask.len()).filter(|&i| mask[i]).collect();
                c.advance(&token_bytes[allowed[rng.below(allowed.len())]])?;
            }
        }
        times.sort();
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        let p99 = times[times.len() * 99 / 100];
        println!(
            "  {name}: {} masks, mean {mean:?}, p99 {p99:?}, max {:?}",
            times.len(),
            times.last().unwrap()
        );
    }
    // States that take the slow path: a full trie walk instead of the plain-string shortcut.
    let many: Vec<String> = (0..300).map(|i| format!("value number {i}")).collect();
    let fixed: [(&str, Option<serde_json::Value>, &[u8]); 7] = [
        ("after {", None, b"{"),
        ("object value", None, b"{\"a\": "),
        ("inside a number", None, b"{\"a\": 12"),
        ("after a backslash", None, b"{\"a\": \"x\\"),
        ("inside a character", None, b"{\"a\": \"\xc3"),
        (
            "short string",
            Some(json!({"type": "string", "maxLength": 3})),
            b"\"ab",
        ),
        ("300-value enum", Some(json!({"enum": many})), b"\"value n"),
    ];
    for (name, schema, prefix) in fixed {
        let mut c = JsonConstraint::new(schema.as_ref())?;
        c.advance(prefix)?;
        let mut best = Duration::MAX;
        let mut n = 0;
        for _ in 0..5 {
            let t = Instant::now();
            n = c.allowed(&vocab, &mut mask)?;
            best = best.min(t.elapsed());
        }
        println!("  {name}: {n} allowed, {best:?}");
    }
    Ok(())
}
