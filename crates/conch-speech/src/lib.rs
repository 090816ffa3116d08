//! Offline speech for the memoir mode: speech-to-text (Whisper through faster-whisper) and
//! text-to-speech (Piper for English, espeak-ng for Mandarin and as a fallback).
//!
//! The models run in a Python worker process (`worker/speech_worker.py`, embedded here and written
//! beside the venv that `scripts/fetch-speech` installs). [`SpeechService`] starts it, health-checks
//! it, restarts it when it dies or stops answering, and sends it one request at a time.
//! The API is blocking: call it from `spawn_blocking` or a thread of its own.
//!
//! Invariant: nothing here prints; the worker's stderr is kept (its last lines) for error messages.

mod config;
mod error;
mod service;
mod worker;

pub use config::{SpeechConfig, WorkerCommand};
pub use error::SpeechError;
pub use service::{SpeechService, Transcript, TranscriptSegment};
