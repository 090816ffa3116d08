//! Codepoint classes as llama.cpp sees them, and GPT-2's byte ↔ printable-char mapping.

use crate::unicode_data::{RANGE_FLAGS, WHITESPACE};
use std::sync::OnceLock;

/// Category flags (values as in llama.cpp's table) plus our whitespace bit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CptFlags(u16);

impl CptFlags {
    const UNDEFINED: u16 = 0x0001;
    const NUMBER: u16 = 0x0002;
    const LETTER: u16 = 0x0004;
    const ACCENT_MARK: u16 = 0x0010;
    const PUNCTUATION: u16 = 0x0020;
    const SYMBOL: u16 = 0x0040;
    const CATEGORIES: u16 = 0x00FF;
    const WHITESPACE: u16 = 0x0100;

    /// Flags of a position outside the text being split (no class at all).
    pub(crate) const NONE: CptFlags = CptFlags(0);

    pub(crate) fn of(cpt: u32) -> CptFlags {
        static WS: OnceLock<std::collections::HashSet<u32>> = OnceLock::new();
        let ws = WS.get_or_init(|| WHITESPACE.iter().copied().collect());
        let idx = RANGE_FLAGS.partition_point(|&(start, _)| start <= cpt);
        // idx == RANGE_FLAGS.len() means past the end marker (cpt >= 0x110000)
        let mut flags = if idx == 0 || idx == RANGE_FLAGS.len() {
            Self::UNDEFINED
        } else {
            RANGE_FLAGS[idx - 1].1
        };
        if ws.contains(&cpt) {
            flags |= Self::WHITESPACE;
        }
        CptFlags(flags)
    }

    pub(crate) fn is_any(self) -> bool {
        self.0 != 0
    }
    pub(crate) fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
    pub(crate) fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    pub(crate) fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }

    /// The single byte llama.cpp substitutes for a non-ASCII codepoint before running a regex
    /// that uses `\p{..}` classes.
    pub(crate) fn collapsed_byte(self) -> u8 {
        if self.is_whitespace() {
            return 0x0B;
        }
        match self.0 & Self::CATEGORIES {
            Self::NUMBER => 0xD1,
            Self::LETTER => 0xD2,
            Self::PUNCTUATION => 0xD3,
            Self::ACCENT_MARK => 0xD4,
            Self::SYMBOL => 0xD5,
            _ => 0xD0,
        }
    }
}

/// GPT-2's reversible map from bytes to printable characters (so every byte sequence is text).
pub(crate) fn byte_to_char() -> &'static [char; 256] {
    static MAP: OnceLock<[char; 256]> = OnceLock::new();
    MAP.get_or_init(|| {
        let printable = |b: u32| {
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
        };
        let mut map = ['\0'; 256];
        let mut next_extra = 256u32;
        for b in 0..256u32 {
            let c = if printable(b) {
                b
            } else {
                next_extra += 1;
                next_extra - 1
            };
            map[b as usize] = char::from_u32(c).expect("codepoints below 0x200 are valid chars");
        }
        map
    })
}

/// The byte a GPT-2 mapped character stands for, if it is one.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    static MAP: OnceLock<std::collections::HashMap<char, u8>> = OnceLock::new();
    MAP.get_or_init(|| {
        byte_to_char()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect()
    })
    .get(&c)
    .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_common_codepoints() {
        assert!(CptFlags::of('a' as u32).is_letter());
        assert!(CptFlags::of('7' as u32).is_number());
        assert!(CptFlags::of(' ' as u32).is_whitespace());
        assert!(CptFlags::of(0x3000).is_whitespace());
        assert!(CptFlags::of('中' as u32).is_letter());
        assert_eq!(CptFlags::of(0x11_0000), CptFlags(CptFlags::UNDEFINED));
        assert_eq!(CptFlags::of('!' as u32).collapsed_byte(), 0xD3);
    }

    #[test]
    fn byte_map_round_trips() {
        assert_eq!(byte_to_char()[b' ' as usize], 'Ġ');
        assert_eq!(byte_to_char()[b'\n' as usize], 'Ċ');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char()[b as usize]), Some(b));
        }
    }
}
