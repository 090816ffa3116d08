//! Decoding a stream of generated ids into text without ever splitting a UTF-8 character.

use crate::Tokenizer;

/// Feed ids one at a time with [`push`](StreamDecoder::push); each call returns the text that is
/// complete so far. Bytes of a character split over several tokens are held back until the
/// character is whole; bytes that can never form one come out as U+FFFD.
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    skip_special: bool,
    pending: Vec<u8>,
    at_start: bool,
}

impl<'t> StreamDecoder<'t> {
    pub fn new(tokenizer: &'t Tokenizer, skip_special: bool) -> StreamDecoder<'t> {
        StreamDecoder {
            tokenizer,
            skip_special,
            pending: Vec::new(),
            at_start: true,
        }
    }

    /// Adds one id; returns the newly completed text (possibly empty). Unknown ids add nothing.
    pub fn push(&mut self, id: u32) -> String {
        if self.skip_special && self.tokenizer.is_special(id) {
            return String::new();
        }
        let Some(piece) = self.tokenizer.token_bytes(id) else {
            return String::new();
        };
        let mut piece = &piece[..];
        if self.at_start && !piece.is_empty() {
            // SentencePiece put a space in front of the text; it is not part of the output
            if self.tokenizer.backend().strips_leading_space() && !self.tokenizer.is_special(id) {
                piece = piece.strip_prefix(b" ").unwrap_or(piece);
            }
            self.at_start = false;
        }
        self.pending.extend_from_slice(piece);
        self.take_complete()
    }

    /// Whatever is still held back (an incomplete character comes out as U+FFFD).
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }

    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // bytes that no continuation can fix
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        // a character still waiting for its last bytes
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }
}
