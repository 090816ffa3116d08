//! The tokenizer.json back end against the Python `tokenizers` library (fixtures written by
//! tools/gen_tokenizer_fixtures.py from tokenizer.json files transformers built).

use conch_tokenizer::Tokenizer;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Case {
    text: String,
    special: Vec<u32>,
    plain: Vec<u32>,
    decode: String,
    decode_skip: String,
}

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/tokenizer/hf")
        .join(name)
}

fn check(name: &str) -> Tokenizer {
    let tok = Tokenizer::from_hf_dir(&dir(name)).unwrap();
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir(name).join("expected.json")).unwrap())
            .unwrap();
    for c in &cases {
        assert_eq!(
            tok.encode(&c.text, true, true).unwrap(),
            c.special,
            "{name}: special {:?}",
            c.text
        );
        assert_eq!(
            tok.encode(&c.text, false, false).unwrap(),
            c.plain,
            "{name}: plain {:?}",
            c.text
        );
        assert_eq!(
            tok.decode(&c.special, false),
            c.decode,
            "{name}: decode {:?}",
            c.text
        );
        assert_eq!(
            tok.decode(&c.special, true),
            c.decode_skip,
            "{name}: decode skipping specials {:?}",
            c.text
        );
        // streaming gives the same text as decoding all at once
        let mut stream = tok.stream_decoder(true);
        let mut streamed: String = c.special.iter().map(|&id| stream.push(id)).collect();
        streamed.push_str(&stream.finish());
        assert_eq!(streamed, c.decode_skip, "{name}: streamed {:?}", c.text);
    }
    tok
}

#[test]
fn byte_level_bpe_matches_tokenizers() {
    let tok = check("smollm2");
    assert_eq!(tok.bos_id(), tok.token_to_id("<|im_start|>"));
    assert_eq!(tok.eos_ids(), vec![tok.token_to_id("<|im_end|>").unwrap()]);
    assert!(tok.is_special(tok.token_to_id("<|im_end|>").unwrap()));
    assert!(!tok.is_special(tok.token_to_id("hello").unwrap()));
}

#[test]
fn sentencepiece_style_matches_tokenizers() {
    let tok = check("llama-spm");
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_ids(), vec![2]);
    assert_eq!(
        tok.token_bytes(tok.token_to_id("<0x0A>").unwrap()),
        Some(b"\n".to_vec())
    );
    assert_eq!(
        tok.token_bytes(tok.token_to_id("\u{2581}the").unwrap()),
        Some(b" the".to_vec())
    );
    assert_eq!(tok.id_to_token(1).as_deref(), Some("<s>"));
}

#[test]
fn missing_tokenizer_json_is_an_error() {
    let err = match Tokenizer::from_hf_dir(&dir("no-such-model")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("loaded a tokenizer from nothing"),
    };
    assert!(err.contains("tokenizer.json"), "{err}");
}

/// transformers 5 keeps tokenizer.json's post-processor even when tokenizer_config.json asks for
/// `add_bos_token`/`add_eos_token`; so do we.
#[test]
fn add_bos_eos_flags_follow_transformers() {
    #[derive(Deserialize)]
    struct Flagged {
        text: String,
        ids: Vec<u32>,
    }
    for name in ["smollm2", "llama-spm"] {
        let tmp = std::env::temp_dir().join(format!(
            "conch-tokenizer-flags-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::copy(dir(name).join("tokenizer.json"), tmp.join("tokenizer.json")).unwrap();
        let mut config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir(name).join("tokenizer_config.json")).unwrap(),
        )
        .unwrap();
        config["add_bos_token"] = true.into();
        config["add_eos_token"] = true.into();
        std::fs::write(tmp.join("tokenizer_config.json"), config.to_string()).unwrap();
        let tok = Tokenizer::from_hf_dir(&tmp).unwrap();
        let cases: Vec<Flagged> = serde_json::from_str(
            &std::fs::read_to_string(dir(name).join("expected_add_bos_eos.json")).unwrap(),
        )
        .unwrap();
        for c in cases {
            assert_eq!(
                tok.encode(&c.text, true, true).unwrap(),
                c.ids,
                "{name}: {:?}",
                c.text
            );
        }
        std::fs::remove_dir_all(&tmp).ok();
    }
}
