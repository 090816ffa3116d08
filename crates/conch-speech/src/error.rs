use std::time::Duration;

use thiserror::Error;

/// Why a speech request failed. [`SpeechError::is_transient`] tells whether trying the same
/// request again later may succeed (the caller's retry policy decides when and how often).
#[derive(Debug, Error)]
pub enum SpeechError {
    /// A model, the venv or espeak-ng is missing; goes away once the assets are installed.
    #[error("speech assets are not installed ({0}): run scripts/fetch-speech")]
    NotInstalled(String),
    #[error("the speech worker could not be started: {0}")]
    WorkerStart(String),
    /// The worker exited or closed its output while a request was in flight; it is restarted
    /// on the next request.
    #[error("the speech worker stopped during {operation}: {detail}")]
    WorkerDied {
        operation: &'static str,
        detail: String,
    },
    /// The worker did not answer in time; it was killed and is restarted on the next request.
    #[error("the speech worker did not answer {operation} within {limit:?}; it was restarted")]
    Timeout {
        operation: &'static str,
        limit: Duration,
    },
    /// The worker answered something that is not a valid response; it was restarted.
    #[error("the speech worker broke the protocol: {0}")]
    Protocol(String),
    /// The request itself is wrong (empty text, unknown language, missing file, ...).
    #[error("bad speech request: {0}")]
    BadRequest(String),
    /// The audio file cannot be decoded; trying again will not help.
    #[error("cannot decode the audio: {0}")]
    BadAudio(String),
    /// Anything else the worker reported (an exception in a model library).
    #[error("speech processing failed: {0}")]
    Failed(String),
}

impl SpeechError {
    /// True when the same request may succeed later: the worker crashed, timed out or was not
    /// installed yet. False when the request or its audio is at fault.
    pub fn is_transient(&self) -> bool {
        !matches!(self, SpeechError::BadRequest(_) | SpeechError::BadAudio(_))
    }
}
