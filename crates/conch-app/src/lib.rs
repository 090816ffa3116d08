//! The family chat app's storage and domain, with no HTTP: accounts and sessions, conversations
//! as trees of messages, characters (and Character Card V2 as JSON or PNG), feedback and
//! preferences, and the training-data exports built from them.
//!
//! Everything goes through a [`Store`], opened on SQLite (the default, in the data directory) or
//! PostgreSQL; both run the same SQL and the same migrations. Every method that reads or changes
//! a person's data takes the acting user's id, and something that is not theirs answers
//! [`AppError::NotFound`] exactly as something that does not exist.

mod accounts;
mod card;
mod characters;
mod conversations;
mod export;
mod feedback;
mod memoir;
mod png;
mod store;
pub mod testing;

pub use accounts::{Session, User, SESSION_DAYS};
pub use card::{card_from_json, card_from_png};
pub use characters::{Character, CharacterFields};
pub use conversations::{ChatMessage, Conversation, Message, NewConversation, Role, Status};
pub use export::ExportFormat;
pub use feedback::{Feedback, DOWN_REASONS, UP_REASONS};
pub use memoir::{
    MemoirChapterDraft, MemoirProject, MemoirRecording, MemoirTurn, RecordingStatus, MAX_RECORDING,
};
pub use png::{png_text_chunks, with_text_chunk, PngError};
pub use store::{default_data_dir, Store};

/// What can go wrong; the message of each names the problem for the person who caused it.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request itself is wrong (a field too long, an unknown reason chip, a bad card).
    #[error("{0}")]
    BadInput(String),
    /// No such thing for this user: also what another person's id answers.
    #[error("no such {0}")]
    NotFound(&'static str),
    /// Signed in, but this needs something the user is not (an admin, the first account).
    #[error("{0}")]
    Forbidden(String),
    /// The name is taken, or the like.
    #[error("{0}")]
    Conflict(String),
    #[error("wrong username or password")]
    BadCredentials,
    #[error("storage failed: {0}")]
    Storage(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = AppError> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `n` bytes from the operating system's secure random source.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| AppError::Internal(format!("no secure random numbers: {e}")))?;
    Ok(bytes)
}

/// A random (version 4) UUID as text.
pub(crate) fn new_id() -> Result<String> {
    let mut b = random_bytes::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// Checks a free-text field's length (in characters) so nothing unbounded reaches the database.
pub(crate) fn check_len(field: &str, value: &str, max: usize) -> Result<()> {
    let n = value.chars().count();
    if n > max {
        return Err(AppError::BadInput(format!(
            "{field} is {n} characters long; at most {max} are allowed"
        )));
    }
    Ok(())
}
