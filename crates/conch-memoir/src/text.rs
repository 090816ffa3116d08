//! Small text helpers shared by the interviewer, the drafting checker and the layouts.

/// A Han ideograph (CJK Unified Ideographs and their extensions A–F, compatibility ideographs).
pub(crate) fn is_han(c: char) -> bool {
    matches!(c,
        '\u{4E00}'..='\u{9FFF}'
        | '\u{3400}'..='\u{4DBF}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{20000}'..='\u{2EBEF}')
}

/// A character written full width in CJK text (ideographs, kana, hangul, CJK and full-width
/// punctuation); a line may break before or after each of them.
pub(crate) fn is_wide(c: char) -> bool {
    is_han(c)
        || matches!(c,
            '\u{3000}'..='\u{303F}'   // CJK symbols and punctuation
            | '\u{3040}'..='\u{30FF}' // kana
            | '\u{AC00}'..='\u{D7AF}' // hangul syllables
            | '\u{FF00}'..='\u{FFEF}') // full-width forms
}

/// Drops a reasoning model's `<think>…</think>` block (closed or left open) before the answer.
pub(crate) fn strip_thinking(reply: &str) -> &str {
    match reply.find("</think>") {
        Some(end) => &reply[end + "</think>".len()..],
        None if reply.trim_start().starts_with("<think>") => "",
        None => reply,
    }
}

/// How much was said, in words: each run of letters or digits counts one, and each Han
/// character counts half (Chinese words are mostly one or two characters long).
pub(crate) fn spoken_size(text: &str) -> f32 {
    let mut size = 0.0;
    let mut in_word = false;
    for c in text.chars() {
        if is_han(c) {
            size += 0.5;
            in_word = false;
        } else if c.is_alphanumeric() {
            if !in_word {
                size += 1.0;
            }
            in_word = true;
        } else {
            in_word = in_word && (c == '\'' || c == '’');
        }
    }
    size
}

/// Lower-cases, turns curly apostrophes straight and pads with spaces, so that a phrase can be
/// matched as whole words by searching for `" phrase "`.
pub(crate) fn padded_lowercase_words(text: &str) -> String {
    let mut padded = String::with_capacity(text.len() + 2);
    padded.push(' ');
    for c in text.chars() {
        match c {
            '’' | '\'' => padded.push('\''),
            c if c.is_alphanumeric() => padded.extend(c.to_lowercase()),
            _ => padded.push(' '),
        }
    }
    padded.push(' ');
    padded
}

/// Escapes text for XML and XHTML content and attribute values.
pub(crate) fn escape_xml(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoken_size_counts_words_and_half_characters() {
        assert_eq!(spoken_size("We lived by the river."), 5.0);
        assert_eq!(spoken_size("I don't know"), 3.0);
        assert_eq!(spoken_size("我们住在河边"), 3.0);
        assert_eq!(spoken_size("  "), 0.0);
    }

    #[test]
    fn thinking_blocks_are_dropped() {
        assert_eq!(strip_thinking("<think>hmm</think>\nWhere?"), "\nWhere?");
        assert_eq!(strip_thinking("<think>still thinking"), "");
        assert_eq!(strip_thinking("Where?"), "Where?");
    }

    #[test]
    fn xml_escaping_covers_markup_and_controls() {
        assert_eq!(escape_xml("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot;");
    }
}
