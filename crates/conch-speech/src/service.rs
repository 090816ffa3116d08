use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::SpeechConfig;
use crate::error::SpeechError;
use crate::worker::WorkerProcess;

/// What was said in a recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// The segments' text joined (with spaces; without them for Chinese). Chinese is in
    /// Simplified script.
    pub text: String,
    /// Whisper's code of the language: the one asked for, or the one detected.
    pub language: String,
    /// Length of the audio, seconds.
    pub duration: f64,
    pub segments: Vec<TranscriptSegment>,
    /// Seconds this request spent loading the model (0 once it is loaded).
    pub load_s: f64,
    /// Seconds spent transcribing, after decoding the audio.
    pub transcribe_s: f64,
}

/// A stretch of speech; times in seconds from the start of the recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptSegment {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// The speech worker, supervised. Requests are served one at a time (others wait); a worker that
/// has died is replaced on the next request, and one that breaks a time limit is killed and
/// replaced. Blocking: call from `spawn_blocking` or a thread of its own.
pub struct SpeechService {
    config: SpeechConfig,
    worker: Mutex<Option<WorkerProcess>>,
    starts: AtomicU64,
    /// The running worker's process id (0: none), readable while a request holds the worker.
    worker_pid: AtomicU32,
}

impl SpeechService {
    /// Starts the worker and checks that it answers. Fails with [`SpeechError::NotInstalled`]
    /// when `scripts/fetch-speech` has not filled `config.speech_dir`.
    pub fn start(config: SpeechConfig) -> Result<Self, SpeechError> {
        let service = SpeechService {
            config,
            worker: Mutex::new(None),
            starts: AtomicU64::new(0),
            worker_pid: AtomicU32::new(0),
        };
        service.health()?;
        Ok(service)
    }

    /// Pings the worker (starting a new one if it is gone).
    pub fn health(&self) -> Result<(), SpeechError> {
        self.call("ping", Map::new(), self.config.ping_timeout)
            .map(drop)
    }

    /// Transcribes an audio file in any container the browser records (WebM/Opus, Ogg, WAV, ...).
    /// `language` is a code or tag such as `en`, `zh` or `zh-CN`; `None` detects it.
    pub fn transcribe(
        &self,
        audio_path: &Path,
        language: Option<&str>,
    ) -> Result<Transcript, SpeechError> {
        if !audio_path.is_file() {
            return Err(SpeechError::BadRequest(format!(
                "audio file not found: {}",
                audio_path.display()
            )));
        }
        let absolute = std::path::absolute(audio_path).map_err(|error| {
            SpeechError::BadRequest(format!("{}: {error}", audio_path.display()))
        })?;
        let Some(absolute) = absolute.to_str() else {
            return Err(SpeechError::BadRequest(format!(
                "the audio path is not UTF-8: {}",
                audio_path.display()
            )));
        };
        let mut fields = Map::new();
        fields.insert("audio_path".into(), absolute.into());
        let language = language.map(language_code).transpose()?;
        fields.insert("language".into(), language.into());
        let result = self.call("transcribe", fields, self.config.transcribe_timeout)?;
        serde_json::from_value(result).map_err(|error| {
            SpeechError::Protocol(format!("malformed transcription result: {error}"))
        })
    }

    /// Speaks `text` in `language` (`en` with Piper; `zh` and any other espeak-ng language with
    /// espeak-ng), slower when `slow`. Returns a WAV file (16-bit mono PCM).
    pub fn synthesize(
        &self,
        text: &str,
        language: &str,
        slow: bool,
    ) -> Result<Vec<u8>, SpeechError> {
        if text.trim().is_empty() {
            return Err(SpeechError::BadRequest(
                "nothing to say: the text is empty".into(),
            ));
        }
        let language = language_code(language)?;
        let output = ScratchFile::new("wav");
        let Some(out_path) = output.path.to_str() else {
            return Err(SpeechError::Failed(format!(
                "the temporary folder's path is not UTF-8: {}",
                output.path.display()
            )));
        };
        let mut fields = Map::new();
        fields.insert("text".into(), text.into());
        fields.insert("language".into(), language.into());
        fields.insert("slow".into(), slow.into());
        fields.insert("out_path".into(), out_path.into());
        self.call("synthesize", fields, self.config.synthesize_timeout)?;
        let wav = std::fs::read(&output.path).map_err(|error| {
            SpeechError::Failed(format!("the worker wrote no audio to {out_path}: {error}"))
        })?;
        if wav.len() < 12 || &wav[..4] != b"RIFF" || &wav[8..12] != b"WAVE" {
            return Err(SpeechError::Failed(format!(
                "the worker wrote no WAV file to {out_path}"
            )));
        }
        Ok(wav)
    }

    /// The process id of the running worker, if one is running. Does not wait for a request in
    /// flight.
    pub fn worker_pid(&self) -> Option<u32> {
        Some(self.worker_pid.load(Ordering::Relaxed)).filter(|&pid| pid != 0)
    }

    /// How many times a worker was started after the first one.
    pub fn restarts(&self) -> u64 {
        self.starts.load(Ordering::Relaxed).saturating_sub(1)
    }

    fn call(
        &self,
        operation: &'static str,
        fields: Map<String, Value>,
        timeout: Duration,
    ) -> Result<Value, SpeechError> {
        let mut slot = self.worker.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_mut().is_some_and(WorkerProcess::has_exited) {
            *slot = None;
            self.worker_pid.store(0, Ordering::Relaxed);
        }
        let worker = match slot.as_mut() {
            Some(worker) => worker,
            None => {
                let worker = slot.insert(self.spawn_checked()?);
                self.worker_pid.store(worker.pid(), Ordering::Relaxed);
                worker
            }
        };
        let result = worker.request(operation, fields, timeout);
        if matches!(
            result,
            Err(SpeechError::WorkerDied { .. }
                | SpeechError::Timeout { .. }
                | SpeechError::Protocol(_))
        ) {
            // Dropping the process kills it; the next request starts a fresh one.
            *slot = None;
            self.worker_pid.store(0, Ordering::Relaxed);
        }
        result
    }

    /// Starts a worker and waits for its first ping, so that a worker that cannot start is
    /// reported as such rather than as a failure of the request at hand.
    fn spawn_checked(&self) -> Result<WorkerProcess, SpeechError> {
        let command = self.config.worker_command()?;
        let mut worker = WorkerProcess::spawn(&command)?;
        match worker.request("ping", Map::new(), self.config.ping_timeout) {
            Ok(_) => {
                self.starts.fetch_add(1, Ordering::Relaxed);
                Ok(worker)
            }
            Err(error) => Err(SpeechError::WorkerStart(error.to_string())),
        }
    }
}

/// The primary subtag of a language tag, lowercased (`zh-CN` → `zh`, `en_US` → `en`), with
/// `cmn` (Mandarin) read as Whisper's `zh`.
fn language_code(tag: &str) -> Result<String, SpeechError> {
    let primary = tag
        .trim()
        .split(['-', '_'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !(2..=3).contains(&primary.len()) || !primary.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(SpeechError::BadRequest(format!(
            "'{tag}' is not a language tag (expected a code such as en, zh or zh-CN)"
        )));
    }
    Ok(if primary == "cmn" {
        "zh".into()
    } else {
        primary
    })
}

/// A file name in the temporary folder, removed when dropped.
struct ScratchFile {
    path: std::path::PathBuf,
}

impl ScratchFile {
    fn new(extension: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "conch-speech-{}-{}.{extension}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ScratchFile {
            path: std::env::temp_dir().join(name),
        }
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tags_reduce_to_their_primary_code() {
        assert_eq!(language_code("en").unwrap(), "en");
        assert_eq!(language_code(" zh-CN ").unwrap(), "zh");
        assert_eq!(language_code("en_US").unwrap(), "en");
        assert_eq!(language_code("ZH-Hans").unwrap(), "zh");
        assert_eq!(language_code("cmn").unwrap(), "zh");
        for bad in ["", "e", "english", "1a", "zh/../x", "-"] {
            let error = language_code(bad).unwrap_err();
            assert!(
                matches!(error, SpeechError::BadRequest(_)),
                "{bad}: {error}"
            );
        }
    }
}
