//! Supervision of the worker process, with a stand-in worker (tests/fake_worker.sh) that speaks the
//! protocol without models: restarts, time limits, protocol breaks and bad requests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use conch_speech::{SpeechConfig, SpeechError, SpeechService, WorkerCommand};

/// A folder of its own for a test, removed at the end of it.
struct ScratchDir(PathBuf);

impl std::ops::Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch_dir(name: &str) -> ScratchDir {
    let dir = std::env::temp_dir().join(format!("conch-speech-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    ScratchDir(dir)
}

/// A file for the fake worker to "transcribe"; its name chooses the fake's behaviour.
fn audio_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, b"not really audio").unwrap();
    path
}

fn fake_config(extra_args: &[&str]) -> SpeechConfig {
    // The stand-in needs no speech folder.
    let mut config = SpeechConfig::new("/nonexistent/speech");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_worker.sh");
    let mut args = vec![script.into_os_string()];
    args.extend(extra_args.iter().map(Into::into));
    config.worker_command = Some(WorkerCommand {
        program: "bash".into(),
        args,
    });
    config.ping_timeout = Duration::from_secs(10);
    config.transcribe_timeout = Duration::from_secs(10);
    config
}

fn start_fake() -> SpeechService {
    SpeechService::start(fake_config(&[])).expect("the fake worker starts")
}

fn kill(pid: u32) {
    let status = Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn transcribes_and_synthesizes_through_the_worker() {
    let dir = scratch_dir("basic");
    let service = start_fake();
    let audio = audio_file(&dir, "hello.webm");
    let transcript = service.transcribe(&audio, Some("en-US")).unwrap();
    assert_eq!(transcript.text, format!("heard {}", audio.display()));
    assert_eq!(transcript.segments.len(), 1);
    let wav = service.synthesize("hello", "en", true).unwrap();
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(service.restarts(), 0);
}

#[test]
fn a_killed_worker_is_replaced_on_the_next_request() {
    let dir = scratch_dir("killed");
    let service = start_fake();
    let first = service.worker_pid().expect("a worker runs");
    kill(first);
    std::thread::sleep(Duration::from_millis(100));
    let audio = audio_file(&dir, "after-kill.wav");
    let transcript = service.transcribe(&audio, None).unwrap();
    assert!(transcript.text.contains("after-kill"));
    let second = service.worker_pid().expect("a worker runs again");
    assert_ne!(first, second);
    assert_eq!(service.restarts(), 1);
    // The health check also revives it.
    kill(second);
    std::thread::sleep(Duration::from_millis(100));
    service.health().unwrap();
    assert_ne!(service.worker_pid(), Some(second));
    assert_eq!(service.restarts(), 2);
}

#[test]
fn a_worker_dying_mid_request_is_a_transient_error_and_is_replaced() {
    let dir = scratch_dir("dies");
    let service = start_fake();
    let error = service
        .transcribe(&audio_file(&dir, "die.ogg"), Some("en"))
        .unwrap_err();
    assert!(matches!(error, SpeechError::WorkerDied { .. }), "{error}");
    assert!(error.is_transient());
    assert!(
        error.to_string().contains("dying as asked"),
        "stderr is quoted: {error}"
    );
    let transcript = service
        .transcribe(&audio_file(&dir, "fine.ogg"), Some("en"))
        .unwrap();
    assert!(transcript.text.contains("fine.ogg"));
    assert_eq!(service.restarts(), 1);
}

#[test]
fn a_silent_worker_times_out_is_killed_and_replaced() {
    let dir = scratch_dir("hangs");
    let mut config = fake_config(&[]);
    config.transcribe_timeout = Duration::from_millis(500);
    let service = SpeechService::start(config).unwrap();
    let hung = service.worker_pid().unwrap();
    let started = Instant::now();
    let error = service
        .transcribe(&audio_file(&dir, "hang.wav"), None)
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(
            error,
            SpeechError::Timeout {
                operation: "transcribe",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.is_transient());
    assert_eq!(service.worker_pid(), None, "the hung worker was dropped");
    let status = Command::new("kill")
        .arg("-0")
        .arg(hung.to_string())
        .status()
        .unwrap();
    assert!(!status.success(), "the hung worker {hung} was killed");
    service
        .transcribe(&audio_file(&dir, "ok.wav"), None)
        .unwrap();
    assert_eq!(service.restarts(), 1);
}

#[test]
fn a_protocol_break_restarts_the_worker() {
    let dir = scratch_dir("garbage");
    let service = start_fake();
    let error = service
        .transcribe(&audio_file(&dir, "garbage.wav"), None)
        .unwrap_err();
    assert!(matches!(error, SpeechError::Protocol(_)), "{error}");
    service
        .transcribe(&audio_file(&dir, "ok.wav"), None)
        .unwrap();
    assert_eq!(service.restarts(), 1);
}

#[test]
fn answers_to_other_ids_are_skipped() {
    let dir = scratch_dir("stale");
    let service = start_fake();
    let transcript = service
        .transcribe(&audio_file(&dir, "stale.wav"), None)
        .unwrap();
    assert!(transcript.text.contains("stale.wav"));
    assert_eq!(service.restarts(), 0);
}

#[test]
fn errors_the_worker_reports_keep_it_running_and_are_permanent() {
    let dir = scratch_dir("badaudio");
    let service = start_fake();
    let pid = service.worker_pid();
    let error = service
        .transcribe(&audio_file(&dir, "badaudio.webm"), None)
        .unwrap_err();
    assert!(matches!(error, SpeechError::BadAudio(_)), "{error}");
    assert!(!error.is_transient());
    assert_eq!(service.worker_pid(), pid);
}

#[test]
fn bad_requests_are_refused_before_reaching_the_worker() {
    let dir = scratch_dir("bad-requests");
    let service = start_fake();
    let missing = service
        .transcribe(&dir.join("no-such-file.wav"), None)
        .unwrap_err();
    assert!(matches!(missing, SpeechError::BadRequest(_)), "{missing}");
    assert!(missing.to_string().contains("no-such-file.wav"));
    let language = service
        .transcribe(&audio_file(&dir, "a.wav"), Some("english!"))
        .unwrap_err();
    assert!(matches!(language, SpeechError::BadRequest(_)), "{language}");
    let empty = service.synthesize("  \n", "en", false).unwrap_err();
    assert!(matches!(empty, SpeechError::BadRequest(_)), "{empty}");
    let no_language = service.synthesize("hello", "", false).unwrap_err();
    assert!(
        matches!(no_language, SpeechError::BadRequest(_)),
        "{no_language}"
    );
    for error in [missing, language, empty, no_language] {
        assert!(!error.is_transient());
    }
    assert_eq!(service.restarts(), 0);
}

#[test]
fn concurrent_requests_are_served_one_at_a_time_with_their_own_answers() {
    let dir = scratch_dir("concurrent");
    let service = start_fake();
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let (service, dir) = (&service, &dir);
            scope.spawn(move || {
                for request in 0..5 {
                    let audio = audio_file(dir, &format!("t{thread}-r{request}.wav"));
                    let transcript = service.transcribe(&audio, None).unwrap();
                    assert_eq!(transcript.text, format!("heard {}", audio.display()));
                }
            });
        }
    });
    assert_eq!(service.restarts(), 0);
}

#[test]
fn missing_assets_say_how_to_install_them() {
    let empty = scratch_dir("empty-speech-dir");
    let Err(error) = SpeechService::start(SpeechConfig::new(empty.to_path_buf())) else {
        panic!("started without assets");
    };
    assert!(matches!(error, SpeechError::NotInstalled(_)), "{error}");
    assert!(
        error.to_string().contains("scripts/fetch-speech"),
        "{error}"
    );
    assert!(error.is_transient(), "installing the assets fixes it");
}

#[test]
fn a_worker_that_cannot_start_is_an_error() {
    let mut config = fake_config(&[]);
    config.worker_command = Some(WorkerCommand {
        program: "/nonexistent/python".into(),
        args: vec![],
    });
    let Err(error) = SpeechService::start(config) else {
        panic!("started a missing program")
    };
    assert!(matches!(error, SpeechError::WorkerStart(_)), "{error}");

    let mut silent = fake_config(&["--no-ping"]);
    silent.ping_timeout = Duration::from_millis(300);
    let Err(error) = SpeechService::start(silent) else {
        panic!("a silent worker started")
    };
    assert!(matches!(error, SpeechError::WorkerStart(_)), "{error}");
    assert!(error.to_string().contains("ping"), "{error}");
}
