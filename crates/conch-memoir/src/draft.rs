//! Chapter drafts written from the transcript in the teller's own voice, every paragraph
//! traceable to the transcript segments it came from.
//!
//! The model gets the segments labelled `[S12]` and must end each paragraph with the ids it used.
//! [`parse_draft`] reads the reply into paragraphs with their source ids, [`check_draft`] rejects
//! paragraphs with no or unknown citations and flags words the cited segments do not contain, and
//! [`merge_redraft`] combines a new draft with the paragraphs the family edited.
//!
//! # What the "invention" check does, and what it cannot do
//! It is a lexical heuristic, not an understanding of meaning:
//! - Latin-script text is split into words. A word counts as supported when the cited segments
//!   contain it after crude normalisation (lower case, straight apostrophes, possessive `'s` and
//!   the endings -s/-es/-ies/-ed/-ing/-ly removed; number words one–twenty written as digits).
//!   Common function words and a few storytelling verbs are never flagged. Numbers must appear
//!   digit for digit. Capitalised words that do not start a sentence are reported as names.
//! - Chinese has no spaces, so it is checked character by character: every Han character must
//!   occur somewhere in the cited segments, except a documented set of grammatical characters
//!   (的, 了, 在, …). Adjacent unsupported characters are reported together.
//!
//! So it catches new names, places, numbers and most new nouns, and it flags honest paraphrase
//! (a "father" where the teller said "dad") for a person to look at. It cannot notice facts
//! recombined from supported words ("Tom's sister" from "Tom" and "sister"), negations flipped
//! by function words, or a wrong segment cited that happens to share the words.

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use crate::plan::Language;
use crate::text::{is_han, strip_thinking};
use crate::{ChatMessage, MemoirError, Result};

/// Who spoke a transcript segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    Teller,
    Interviewer,
}

/// A piece of transcript the draft may cite as `[S{id}]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub id: u32,
    pub speaker: Speaker,
    pub text: String,
}

/// Numbers a chapter's interview into segments from `first_id` on: each asked question, then its
/// answer. Transcripts only grow, so earlier ids stay the same when more is recorded.
pub fn segments_from_transcript(
    transcript: &crate::interview::ChapterTranscript,
    first_id: u32,
) -> Vec<Segment> {
    let spoken = transcript.turns.iter().flat_map(|turn| {
        [
            (Speaker::Interviewer, &turn.question),
            (Speaker::Teller, &turn.answer),
        ]
    });
    spoken
        .filter(|(_, text)| !text.trim().is_empty())
        .zip(first_id..)
        .map(|((speaker, text), id)| Segment {
            id,
            speaker,
            text: text.trim().to_string(),
        })
        .collect()
}

/// A paragraph of a model draft with the segment ids it cites (text without the citations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DraftParagraph {
    pub text: String,
    pub sources: Vec<u32>,
}

/// The chat messages asking the model to write one chapter from its transcript segments.
pub fn drafting_messages(
    language: Language,
    teller_name: &str,
    chapter_title: &str,
    segments: &[Segment],
) -> Result<Vec<ChatMessage>> {
    if !segments
        .iter()
        .any(|segment| segment.speaker == Speaker::Teller && !segment.text.trim().is_empty())
    {
        return Err(MemoirError::Draft(format!(
            "chapter {chapter_title:?} has no answers to write from"
        )));
    }
    let teller = match teller_name.trim() {
        "" => "the teller",
        name => name,
    };
    let language_name = language.english_name();
    let system = format!(
        "You turn interview transcripts into a chapter of {teller}'s memoir, written in the first \
         person as {teller} telling it, in {language_name}. Keep {teller}'s own words, phrases and \
         way of speaking; only tidy false starts and repetitions and put events in order. Never add \
         a fact, name, place, date, number or feeling that is not in the transcript; if something is \
         unclear, leave it out. Leave out the interviewer's questions, but you may use what they make \
         clear. Write plain paragraphs separated by a blank line, no headings and no lists. End every \
         paragraph with the ids of the segments it was written from, in square brackets, like \
         [S3][S4]. Cite only ids that appear in the transcript."
    );
    let mut user = format!(
        "Chapter: {}\n\nTranscript segments:\n",
        chapter_title.trim()
    );
    for segment in segments {
        let who = match segment.speaker {
            Speaker::Teller => teller,
            Speaker::Interviewer => "Interviewer",
        };
        user.push_str(&format!(
            "[S{}] {who}: {}\n",
            segment.id,
            segment.text.trim()
        ));
    }
    user.push_str(
        "\nWrite the chapter now. Remember: every paragraph ends with its [S…] citations.",
    );
    Ok(vec![ChatMessage::system(system), ChatMessage::user(user)])
}

/// Reads a model draft: paragraphs end at blank lines or after a line that ends in citations.
/// Citations are `[S3]`, `[S3, S4]`, `[S3-S5]` or `【S3】` anywhere in the paragraph; they are
/// removed from the text. Headings' and list markers' `#`, `-`, `*` are stripped.
pub fn parse_draft(reply: &str) -> Result<Vec<DraftParagraph>> {
    let mut paragraphs = Vec::new();
    let mut lines: Vec<&str> = Vec::new();
    for line in strip_thinking(reply).lines().map(str::trim) {
        if line.is_empty() {
            flush_paragraph(&mut lines, &mut paragraphs);
            continue;
        }
        lines.push(line);
        if ends_with_citation(line) {
            flush_paragraph(&mut lines, &mut paragraphs);
        }
    }
    flush_paragraph(&mut lines, &mut paragraphs);
    if paragraphs.is_empty() {
        return Err(MemoirError::ModelReply(
            "the draft has no paragraphs".into(),
        ));
    }
    Ok(paragraphs)
}

fn flush_paragraph(lines: &mut Vec<&str>, paragraphs: &mut Vec<DraftParagraph>) {
    if lines.is_empty() {
        return;
    }
    let joined = lines
        .iter()
        .map(|line| line.trim_start_matches(['#', '-', '*', '>']).trim())
        .collect::<Vec<_>>()
        .join(" ");
    lines.clear();
    let (text, sources) = take_citations(&joined);
    if !text.is_empty() || !sources.is_empty() {
        paragraphs.push(DraftParagraph { text, sources });
    }
}

fn ends_with_citation(line: &str) -> bool {
    let trimmed = line.trim_end_matches(|c: char| c.is_whitespace() || ".。!！".contains(c));
    let Some(last) = trimmed.chars().last() else {
        return false;
    };
    if last != ']' && last != '】' {
        return false;
    }
    let open = trimmed.rfind(['[', '【']).unwrap_or(0);
    parse_citation_body(&trimmed[open..]).is_some()
}

/// Removes every citation bracket from `text`; returns the cleaned text and the cited ids in
/// order of first appearance.
fn take_citations(text: &str) -> (String, Vec<u32>) {
    let mut cleaned = String::with_capacity(text.len());
    let mut sources = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(['[', '【']) {
        cleaned.push_str(&rest[..open]);
        let bracket = &rest[open..];
        let close = bracket.find([']', '】']);
        match close.and_then(|close| {
            let end = close + bracket[close..].chars().next().map_or(1, char::len_utf8);
            parse_citation_body(&bracket[..end]).map(|ids| (ids, end))
        }) {
            Some((ids, end)) => {
                for id in ids {
                    if !sources.contains(&id) {
                        sources.push(id);
                    }
                }
                rest = &bracket[end..];
            }
            None => {
                let open_len = bracket.chars().next().map_or(1, char::len_utf8);
                cleaned.push_str(&bracket[..open_len]);
                rest = &bracket[open_len..];
            }
        }
    }
    cleaned.push_str(rest);
    (tidy_spacing(&cleaned), sources)
}

/// The ids in one bracket like `[S3, S4]`, `[S3-S5]` or `【S3、S4】`; `None` if it is not a citation.
fn parse_citation_body(bracket: &str) -> Option<Vec<u32>> {
    let inner = bracket
        .trim_start_matches(['[', '【'])
        .trim_end_matches([']', '】']);
    let mut ids = Vec::new();
    for part in inner
        .split([',', ';', '、', '，', '；'])
        .flat_map(str::split_whitespace)
    {
        let range: Vec<&str> = part.split(['-', '–', '—', '~']).collect();
        let id_of = |piece: &str| -> Option<u32> {
            let digits = piece.trim().trim_start_matches(['S', 's']);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        };
        match range.as_slice() {
            [single] => ids.push(id_of(single)?),
            [first, last] if first.trim_start().starts_with(['S', 's']) => {
                let (first, last) = (id_of(first)?, id_of(last)?);
                // A range longer than a chapter is not a citation anyone meant.
                if last < first || last - first > 500 {
                    return None;
                }
                ids.extend(first..=last);
            }
            _ => return None,
        }
    }
    (!ids.is_empty()).then_some(ids)
}

/// Collapses the spaces citations leave behind, also before punctuation.
fn tidy_spacing(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut tidy = String::with_capacity(collapsed.len());
    let mut chars = collapsed.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ' '
            && chars
                .peek()
                .is_some_and(|next| ".,;:!?。，、；：！？)）".contains(*next))
        {
            continue;
        }
        tidy.push(c);
    }
    tidy.trim().to_string()
}

/// How a paragraph fared in [`check_draft`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Cited, and every checked word is in the cited segments.
    Supported,
    /// Cited, but some words are in no cited segment: a person should look.
    Flagged,
    /// No citation, or a citation of a segment that does not exist.
    Rejected,
}

/// What kind of unsupported term was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TermKind {
    Number,
    Name,
    Word,
    /// A run of Han characters, some in no cited segment.
    Characters,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsupportedTerm {
    pub term: String,
    pub kind: TermKind,
}

/// The check of one draft paragraph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParagraphCheck {
    /// Index into the checked paragraphs.
    pub paragraph: usize,
    pub verdict: Verdict,
    /// Cited ids that name no segment.
    pub unknown_sources: Vec<u32>,
    /// Terms the cited segments do not contain, in order of appearance, each once.
    pub unsupported: Vec<UnsupportedTerm>,
}

/// Checks each paragraph against the segments it cites (see the module docs for the heuristic).
pub fn check_draft(paragraphs: &[DraftParagraph], segments: &[Segment]) -> Vec<ParagraphCheck> {
    paragraphs
        .iter()
        .enumerate()
        .map(|(index, paragraph)| {
            let unknown_sources: Vec<u32> = paragraph
                .sources
                .iter()
                .copied()
                .filter(|id| !segments.iter().any(|segment| segment.id == *id))
                .collect();
            let cited: Vec<&str> = segments
                .iter()
                .filter(|segment| paragraph.sources.contains(&segment.id))
                .map(|segment| segment.text.as_str())
                .collect();
            let unsupported = unsupported_terms(&paragraph.text, &cited);
            let verdict = if paragraph.sources.is_empty() || !unknown_sources.is_empty() {
                Verdict::Rejected
            } else if unsupported.is_empty() {
                Verdict::Supported
            } else {
                Verdict::Flagged
            };
            ParagraphCheck {
                paragraph: index,
                verdict,
                unknown_sources,
                unsupported,
            }
        })
        .collect()
}

/// English words never flagged: function words, pronouns, auxiliaries and the verbs of telling.
const ENGLISH_STOPWORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "and",
    "or",
    "but",
    "so",
    "yet",
    "nor",
    "for",
    "of",
    "to",
    "in",
    "on",
    "at",
    "by",
    "with",
    "from",
    "into",
    "onto",
    "upon",
    "about",
    "as",
    "than",
    "then",
    "that",
    "this",
    "these",
    "those",
    "there",
    "here",
    "when",
    "where",
    "while",
    "who",
    "whom",
    "whose",
    "which",
    "what",
    "why",
    "how",
    "if",
    "because",
    "though",
    "although",
    "until",
    "till",
    "since",
    "after",
    "before",
    "over",
    "under",
    "up",
    "down",
    "out",
    "off",
    "again",
    "once",
    "all",
    "any",
    "both",
    "each",
    "every",
    "few",
    "more",
    "most",
    "other",
    "some",
    "such",
    "no",
    "not",
    "only",
    "own",
    "same",
    "too",
    "very",
    "just",
    "also",
    "even",
    "still",
    "ever",
    "never",
    "always",
    "often",
    "sometimes",
    "really",
    "quite",
    "much",
    "many",
    "i",
    "me",
    "my",
    "mine",
    "myself",
    "we",
    "us",
    "our",
    "ours",
    "ourselves",
    "you",
    "your",
    "yours",
    "he",
    "him",
    "his",
    "himself",
    "she",
    "her",
    "hers",
    "herself",
    "it",
    "its",
    "itself",
    "they",
    "them",
    "their",
    "theirs",
    "themselves",
    "be",
    "am",
    "is",
    "are",
    "was",
    "were",
    "been",
    "being",
    "have",
    "has",
    "had",
    "having",
    "do",
    "does",
    "did",
    "done",
    "doing",
    "will",
    "would",
    "shall",
    "should",
    "can",
    "could",
    "may",
    "might",
    "must",
    "i'm",
    "i've",
    "i'd",
    "i'll",
    "we're",
    "we've",
    "we'd",
    "it's",
    "that's",
    "there's",
    "he's",
    "she's",
    "they're",
    "didn't",
    "don't",
    "doesn't",
    "wasn't",
    "weren't",
    "isn't",
    "aren't",
    "couldn't",
    "wouldn't",
    "won't",
    "can't",
    "hadn't",
    "haven't",
    "remember",
    "remembered",
    "recall",
    "think",
    "thought",
    "know",
    "knew",
    "say",
    "said",
    "tell",
    "told",
    "back",
    "well",
    "oh",
    "yes",
    "like",
    "way",
    "thing",
    "things",
    "one",
    "got",
    "get",
    "went",
    "go",
    "came",
    "come",
];

/// Chinese characters that carry grammar rather than facts; never flagged.
const CHINESE_FUNCTION_CHARACTERS: &str =
    "的了是在我你您他她它们这那就也都和与跟很有个一不没着过把被给对说里上下去来到还又再要会能可以而且但因为所以如果吗呢吧啊呀哦嗯之其此于为等得地么些每";

const NUMBER_WORDS: &[&str] = &[
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];

/// A word token of Latin-script text, and whether it starts a sentence.
struct WordToken<'a> {
    text: &'a str,
    sentence_start: bool,
}

fn word_tokens(text: &str) -> Vec<WordToken<'_>> {
    let mut tokens = Vec::new();
    let mut start = None;
    let mut sentence_start = true;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (position, &(index, c)) in chars.iter().enumerate() {
        let next = chars.get(position + 1).map(|&(_, next)| next);
        let prev = position.checked_sub(1).map(|p| chars[p].1);
        // Apostrophes inside words and separators inside numbers ("1,000", "3.5") stay in the token.
        let joins = (c == '\'' || c == '’')
            && prev.is_some_and(char::is_alphanumeric)
            && next.is_some_and(char::is_alphanumeric)
            || (c == ',' || c == '.')
                && prev.is_some_and(|p| p.is_ascii_digit())
                && next.is_some_and(|n| n.is_ascii_digit());
        let in_word = (c.is_alphanumeric() && !is_han(c)) || (joins && start.is_some());
        match (in_word, start) {
            (true, None) => start = Some(index),
            (false, Some(begin)) => {
                tokens.push(WordToken {
                    text: &text[begin..index],
                    sentence_start,
                });
                start = None;
                sentence_start = false;
            }
            _ => {}
        }
        if !in_word && (".!?。！？\"“:".contains(c) || is_han(c)) {
            sentence_start = true;
        }
    }
    if let Some(begin) = start {
        tokens.push(WordToken {
            text: &text[begin..],
            sentence_start,
        });
    }
    tokens
}

/// The comparable form of a word: lower case, straight apostrophes, number words as digits,
/// numbers without separators, possessives and common endings removed.
fn normalize_word(word: &str) -> String {
    let lower = word.to_lowercase().replace('’', "'");
    if let Some(number) = NUMBER_WORDS.iter().position(|n| *n == lower) {
        return number.to_string();
    }
    if lower.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        return lower.replace(',', "");
    }
    let base = lower.strip_suffix("'s").unwrap_or(&lower);
    for (suffix, replacement) in [
        ("ies", "y"),
        ("ing", ""),
        ("ed", ""),
        ("es", ""),
        ("s", ""),
        ("ly", ""),
    ] {
        if let Some(stem) = base.strip_suffix(suffix) {
            if stem.chars().count() >= 3 {
                return format!("{stem}{replacement}");
            }
        }
    }
    base.to_string()
}

fn unsupported_terms(paragraph: &str, cited: &[&str]) -> Vec<UnsupportedTerm> {
    let supported_words: HashSet<String> = cited
        .iter()
        .flat_map(|text| word_tokens(text))
        .map(|token| normalize_word(token.text))
        .collect();
    let supported_han: HashSet<char> = cited
        .iter()
        .flat_map(|text| text.chars())
        .filter(|c| is_han(*c))
        .collect();
    let mut unsupported: Vec<UnsupportedTerm> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut report = |term: String, kind: TermKind| {
        if seen.insert(term.clone()) {
            unsupported.push(UnsupportedTerm { term, kind });
        }
    };

    for token in word_tokens(paragraph) {
        let lower = token.text.to_lowercase().replace('’', "'");
        if ENGLISH_STOPWORDS.contains(&lower.as_str())
            || supported_words.contains(&normalize_word(token.text))
        {
            continue;
        }
        let kind = if token.text.chars().any(|c| c.is_ascii_digit())
            || NUMBER_WORDS.contains(&lower.as_str())
        {
            TermKind::Number
        } else if !token.sentence_start && token.text.chars().next().is_some_and(char::is_uppercase)
        {
            TermKind::Name
        } else {
            TermKind::Word
        };
        report(token.text.to_string(), kind);
    }

    let mut run = String::new();
    for c in paragraph.chars().chain(std::iter::once(' ')) {
        if is_han(c) && !supported_han.contains(&c) && !CHINESE_FUNCTION_CHARACTERS.contains(c) {
            run.push(c);
        } else if !run.is_empty() {
            report(std::mem::take(&mut run), TermKind::Characters);
        }
    }
    unsupported
}

/// A paragraph of the book as stored: the text, its sources, and whether the family edited it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookParagraph {
    pub text: String,
    pub sources: Vec<u32>,
    #[serde(default)]
    pub edited_by_family: bool,
}

/// What happens to the family's edits when a chapter is drafted again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MergeMode {
    /// Edited paragraphs stay, in place of the new paragraphs written from the same segments.
    KeepFamilyEdits,
    /// The new draft replaces everything (the family asked for a fresh draft).
    DiscardFamilyEdits,
}

/// Merges a new draft with the chapter's current paragraphs.
///
/// With [`MergeMode::KeepFamilyEdits`], every paragraph the family edited survives:
/// - it takes the place of the first new paragraph that shares a source segment with it;
/// - a new paragraph whose sources are all covered by edited paragraphs already placed is dropped
///   (its content is in the family's version); one only partly covered is kept;
/// - an edited paragraph sharing no source with the new draft (a family addition without
///   sources, or one written from segments the new draft leaves out) is kept after the paragraph
///   that preceded it before, or first if it was first.
pub fn merge_redraft(
    previous: &[BookParagraph],
    redraft: &[DraftParagraph],
    mode: MergeMode,
) -> Vec<BookParagraph> {
    let fresh = |paragraph: &DraftParagraph| BookParagraph {
        text: paragraph.text.clone(),
        sources: paragraph.sources.clone(),
        edited_by_family: false,
    };
    if mode == MergeMode::DiscardFamilyEdits {
        return redraft.iter().map(fresh).collect();
    }
    let overlaps = |a: &[u32], b: &[u32]| a.iter().any(|id| b.contains(id));
    let edited: Vec<usize> = (0..previous.len())
        .filter(|&i| previous[i].edited_by_family)
        .collect();
    let mut placed: Vec<usize> = Vec::new();
    let mut merged: Vec<BookParagraph> = Vec::new();
    // For each merged paragraph, the index in `previous` it came from (edited ones only).
    let mut origin: Vec<Option<usize>> = Vec::new();
    for paragraph in redraft {
        let candidate = edited
            .iter()
            .copied()
            .find(|&i| !placed.contains(&i) && overlaps(&previous[i].sources, &paragraph.sources));
        if let Some(i) = candidate {
            placed.push(i);
            merged.push(previous[i].clone());
            origin.push(Some(i));
            continue;
        }
        let covered = !paragraph.sources.is_empty()
            && paragraph
                .sources
                .iter()
                .all(|id| placed.iter().any(|&i| previous[i].sources.contains(id)));
        if !covered {
            merged.push(fresh(paragraph));
            origin.push(None);
        }
    }
    for &i in &edited {
        if placed.contains(&i) {
            continue;
        }
        let position = match i.checked_sub(1) {
            None => 0,
            Some(before) => {
                let anchor = merged.iter().zip(&origin).position(|(paragraph, from)| {
                    *from == Some(before) || overlaps(&paragraph.sources, &previous[before].sources)
                });
                anchor.map_or(merged.len(), |anchor| anchor + 1)
            }
        };
        merged.insert(position, previous[i].clone());
        origin.insert(position, Some(i));
        placed.push(i);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interview::{ChapterTranscript, InterviewTurn, TurnKind};

    fn teller(id: u32, text: &str) -> Segment {
        Segment {
            id,
            speaker: Speaker::Teller,
            text: text.into(),
        }
    }

    fn paragraph(text: &str, sources: &[u32]) -> DraftParagraph {
        DraftParagraph {
            text: text.into(),
            sources: sources.to_vec(),
        }
    }

    #[test]
    fn segments_number_questions_and_answers_in_order() {
        let transcript = ChapterTranscript {
            chapter_id: "childhood".into(),
            turns: vec![
                InterviewTurn {
                    kind: TurnKind::Starter {
                        question_id: "q1".into(),
                    },
                    question: "Where were you born?".into(),
                    answer: "In Leeds.".into(),
                    topic_exhausted: false,
                },
                InterviewTurn {
                    kind: TurnKind::FollowUp,
                    question: "Which street?".into(),
                    answer: "".into(),
                    topic_exhausted: false,
                },
            ],
            closed: false,
        };
        let segments = segments_from_transcript(&transcript, 10);
        let ids: Vec<(u32, Speaker)> = segments.iter().map(|s| (s.id, s.speaker)).collect();
        assert_eq!(
            ids,
            [
                (10, Speaker::Interviewer),
                (11, Speaker::Teller),
                (12, Speaker::Interviewer)
            ]
        );
        assert_eq!(segments[1].text, "In Leeds.");
    }

    #[test]
    fn drafting_prompt_lists_segments_and_demands_citations() {
        let segments = [
            Segment {
                id: 1,
                speaker: Speaker::Interviewer,
                text: "Where were you born?".into(),
            },
            teller(2, "In Leeds, above the bakery."),
        ];
        let messages =
            drafting_messages(Language::English, "Walter", "Childhood", &segments).unwrap();
        assert!(messages[0].content.contains("Never add"));
        assert!(messages[0].content.contains("[S3][S4]"));
        assert!(messages[1]
            .content
            .contains("[S2] Walter: In Leeds, above the bakery."));
        assert!(messages[1].content.contains("[S1] Interviewer:"));
        let only_questions = &segments[..1];
        assert!(
            drafting_messages(Language::English, "Walter", "Childhood", only_questions).is_err()
        );
    }

    #[test]
    fn drafts_are_split_into_paragraphs_with_their_citations() {
        let reply = "<think>plan</think>\nI was born in Leeds, above the bakery. [S2]\n\
                     My uncle Harold baked every morning [S4, S5] and I helped [S6-S8].\n\n\
                     我出生在苏州【S9、S10】。\n\
                     A closing line without citation\n\
                     that goes on [not a citation] here.";
        let paragraphs = parse_draft(reply).unwrap();
        assert_eq!(
            paragraphs,
            [
                paragraph("I was born in Leeds, above the bakery.", &[2]),
                paragraph(
                    "My uncle Harold baked every morning and I helped.",
                    &[4, 5, 6, 7, 8]
                ),
                paragraph("我出生在苏州。", &[9, 10]),
                paragraph(
                    "A closing line without citation that goes on [not a citation] here.",
                    &[]
                ),
            ]
        );
        assert!(parse_draft("<think>only thinking</think>\n \n").is_err());
    }

    #[test]
    fn uncited_and_unknown_citations_are_rejected() {
        let segments = [teller(1, "We lived in Leeds.")];
        let checks = check_draft(
            &[
                paragraph("We lived in Leeds.", &[]),
                paragraph("We lived in Leeds.", &[1, 7]),
            ],
            &segments,
        );
        assert_eq!(checks[0].verdict, Verdict::Rejected);
        assert_eq!(checks[1].verdict, Verdict::Rejected);
        assert_eq!(checks[1].unknown_sources, [7]);
    }

    #[test]
    fn invented_names_numbers_and_words_are_flagged() {
        let segments = [
            teller(
                1,
                "We lived in Leeds above my uncle Harold's bakery. I was seven when we moved.",
            ),
            teller(2, "My dad drove a tram."),
        ];
        let faithful = paragraph(
            "I was 7 when we moved. We lived in Leeds, above my uncle Harold's bakery.",
            &[1],
        );
        let invented = paragraph("In 1952 we lived in Leeds with my cousin Margaret above the bakeries, and my father drove a tram.", &[1, 2]);
        let wrong_segment = paragraph("My dad drove a tram.", &[1]);
        let checks = check_draft(&[faithful, invented, wrong_segment], &segments);
        assert_eq!(checks[0].verdict, Verdict::Supported, "{:?}", checks[0]);
        assert_eq!(checks[1].verdict, Verdict::Flagged);
        let terms: Vec<(&str, TermKind)> = checks[1]
            .unsupported
            .iter()
            .map(|t| (t.term.as_str(), t.kind))
            .collect();
        assert_eq!(
            terms,
            [
                ("1952", TermKind::Number),
                ("cousin", TermKind::Word),
                ("Margaret", TermKind::Name),
                ("father", TermKind::Word)
            ]
        );
        // Citing a segment that does not say it is caught too.
        let terms: Vec<&str> = checks[2]
            .unsupported
            .iter()
            .map(|t| t.term.as_str())
            .collect();
        assert_eq!(terms, ["dad", "drove", "tram"]);
    }

    #[test]
    fn chinese_paragraphs_are_checked_by_character() {
        let segments = [teller(1, "我是一九四八年在苏州出生的，家门口有一条小河。")];
        let faithful = paragraph("我一九四八年出生在苏州，家门口有一条小河。", &[1]);
        let invented = paragraph("我一九四八年出生在杭州，家门口有一条小河和一座石桥。", &[1]);
        let checks = check_draft(&[faithful, invented], &segments);
        assert_eq!(checks[0].verdict, Verdict::Supported, "{:?}", checks[0]);
        let terms: Vec<&str> = checks[1]
            .unsupported
            .iter()
            .map(|t| t.term.as_str())
            .collect();
        assert_eq!(terms, ["杭", "座石桥"]);
        assert!(checks[1]
            .unsupported
            .iter()
            .all(|t| t.kind == TermKind::Characters));
    }

    fn book(text: &str, sources: &[u32], edited: bool) -> BookParagraph {
        BookParagraph {
            text: text.into(),
            sources: sources.to_vec(),
            edited_by_family: edited,
        }
    }

    #[test]
    fn redraft_keeps_family_edits_in_place() {
        let previous = [
            book("Old one.", &[1], false),
            book("Family fixed two.", &[2, 3], true),
            book("A family note.", &[], true),
            book("Old four.", &[4], false),
        ];
        let redraft = [
            paragraph("New one.", &[1]),
            paragraph("New two.", &[2]),
            paragraph("New three.", &[3]),
            paragraph("New four.", &[4, 5]),
        ];
        let merged = merge_redraft(&previous, &redraft, MergeMode::KeepFamilyEdits);
        let texts: Vec<&str> = merged.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "New one.",
                "Family fixed two.",
                "A family note.",
                "New four."
            ]
        );
        assert!(merged[1].edited_by_family && !merged[3].edited_by_family);

        let discarded = merge_redraft(&previous, &redraft, MergeMode::DiscardFamilyEdits);
        let texts: Vec<&str> = discarded.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, ["New one.", "New two.", "New three.", "New four."]);
    }

    #[test]
    fn a_leading_family_paragraph_stays_first() {
        let previous = [
            book("Foreword by Anna.", &[], true),
            book("Old.", &[1], false),
        ];
        let merged = merge_redraft(
            &previous,
            &[paragraph("New.", &[1])],
            MergeMode::KeepFamilyEdits,
        );
        let texts: Vec<&str> = merged.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, ["Foreword by Anna.", "New."]);
    }
}
