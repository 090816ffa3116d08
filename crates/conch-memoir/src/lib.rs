//! Memoir books made from interviews with a teller.
//!
//! Plain data in, text or bytes out: nothing here stores, speaks or talks HTTP, and no model runs
//! here. The server runs the model on the chat messages these functions build and hands the replies
//! back to the parsers.
//!
//! - [`plan`]: the chapters of a life with starter questions (English and Simplified Chinese
//!   defaults), editable by the family and stored as JSON.
//! - [`interview`]: the interviewer policy: which question comes next (also when resuming), the
//!   prompt for one follow-up question, and the prompt and parser for "is this topic exhausted?".
//! - [`draft`]: the chapter drafting prompt with cited transcript segments, the parser of the
//!   model's draft, the traceability checker and the merge of a re-draft with family edits.
//! - [`book`]: the finished book and its exports to Markdown, EPUB 3 and PDF.

pub mod book;
pub mod chat;
pub mod draft;
mod error;
pub mod interview;
pub mod plan;
mod text;

pub use chat::{ChatMessage, ChatRole};
pub use error::MemoirError;
pub use plan::Language;

/// Result of this crate's fallible functions.
pub type Result<T, E = MemoirError> = std::result::Result<T, E>;
