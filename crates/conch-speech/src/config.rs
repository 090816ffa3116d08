use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::SpeechError;

/// The worker script, embedded so that the `conch` binary needs no file of the source tree.
pub(crate) const WORKER_SCRIPT: &str = include_str!("../worker/speech_worker.py");
const WORKER_SCRIPT_NAME: &str = "speech_worker.py";
/// Written last by `scripts/fetch-speech`: its presence means the install completed.
const INSTALLED_STAMP: &str = "installed";
const VENV_PYTHON: &str = "venv/bin/python";
const WHISPER_MODEL_DIR: &str = "models/whisper-base";
const PIPER_VOICE: &str = "models/piper/en_US-joe-medium.onnx";

/// Where the speech assets are and how long the worker may take.
#[derive(Debug, Clone)]
pub struct SpeechConfig {
    /// The folder `scripts/fetch-speech` filled (see [`SpeechConfig::default_dir`]).
    pub speech_dir: PathBuf,
    /// CPU threads for Whisper; 0 lets the worker use all cores.
    pub threads: usize,
    /// Limit for starting the worker and for health checks.
    pub ping_timeout: Duration,
    /// Limit for one transcription, model loading included (long recordings need minutes).
    pub transcribe_timeout: Duration,
    /// Limit for one synthesis, voice loading included.
    pub synthesize_timeout: Duration,
    /// Runs this program instead of the installed worker (tests use a stand-in); the asset
    /// check is then skipped.
    pub worker_command: Option<WorkerCommand>,
}

/// A program and its arguments that speaks the worker protocol.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl SpeechConfig {
    pub fn new(speech_dir: impl Into<PathBuf>) -> Self {
        SpeechConfig {
            speech_dir: speech_dir.into(),
            threads: 0,
            ping_timeout: Duration::from_secs(30),
            transcribe_timeout: Duration::from_secs(900),
            synthesize_timeout: Duration::from_secs(120),
            worker_command: None,
        }
    }

    /// `$CONCH_SPEECH_DIR`, else `$XDG_CACHE_HOME/conch/speech`, else `~/.cache/conch/speech`:
    /// the same default as `scripts/fetch-speech`.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("CONCH_SPEECH_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
            });
        cache.join("conch").join("speech")
    }

    /// True when `scripts/fetch-speech` completed in `speech_dir`.
    pub fn is_installed(&self) -> bool {
        self.missing_asset().is_none()
    }

    fn missing_asset(&self) -> Option<PathBuf> {
        [INSTALLED_STAMP, VENV_PYTHON, WHISPER_MODEL_DIR, PIPER_VOICE]
            .iter()
            .map(|relative| self.speech_dir.join(relative))
            .find(|path| !path.exists())
    }

    /// The command that starts the worker: the stand-in, or the venv's Python running the
    /// embedded script (written to the speech folder when it differs from what is there).
    pub(crate) fn worker_command(&self) -> Result<WorkerCommand, SpeechError> {
        if let Some(command) = &self.worker_command {
            return Ok(command.clone());
        }
        if let Some(missing) = self.missing_asset() {
            return Err(SpeechError::NotInstalled(format!(
                "{} is missing",
                missing.display()
            )));
        }
        let script = self.write_worker_script()?;
        let args: Vec<OsString> = vec![
            script.into(),
            "--whisper-model".into(),
            self.speech_dir.join(WHISPER_MODEL_DIR).into(),
            "--piper-voice".into(),
            self.speech_dir.join(PIPER_VOICE).into(),
            "--threads".into(),
            self.threads.to_string().into(),
        ];
        Ok(WorkerCommand {
            program: self.speech_dir.join(VENV_PYTHON),
            args,
        })
    }

    fn write_worker_script(&self) -> Result<PathBuf, SpeechError> {
        let dir = self.speech_dir.join("worker");
        let path = dir.join(WORKER_SCRIPT_NAME);
        if std::fs::read(&path).is_ok_and(|current| current == WORKER_SCRIPT.as_bytes()) {
            return Ok(path);
        }
        let failed = |error: std::io::Error| {
            SpeechError::WorkerStart(format!("cannot write {}: {error}", path.display()))
        };
        std::fs::create_dir_all(&dir).map_err(failed)?;
        // Written aside and renamed, so that a worker starting at the same time in another
        // process never reads half a script.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let partial = dir.join(format!(
            "{WORKER_SCRIPT_NAME}.{}-{}.part",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&partial, WORKER_SCRIPT).map_err(failed)?;
        std::fs::rename(&partial, &path).map_err(failed)?;
        Ok(path)
    }
}

impl Default for SpeechConfig {
    fn default() -> Self {
        SpeechConfig::new(SpeechConfig::default_dir())
    }
}
