//! The real speech models, installed by `scripts/fetch-speech`: an English voice round trip
//! (Piper speaks, Whisper transcribes), browser containers (WebM/Ogg Opus), a Mandarin smoke test
//! (espeak-ng speaks, Whisper transcribes into Simplified script) and bad input. Skipped with a
//! printed reason when the assets are absent, unless CONCH_REQUIRE_SPEECH=1. Prints timings.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use conch_speech::{SpeechConfig, SpeechError, SpeechService, Transcript};

const ENGLISH_SENTENCE: &str =
    "My grandmother grew up on a farm near the river, and every summer she picked strawberries.";
const ENGLISH_CONTENT_WORDS: [&str; 5] = ["grandmother", "farm", "river", "summer", "strawberries"];
const MANDARIN_SENTENCE: &str = "我的奶奶在农村长大，她每天早上做饭。";
/// Characters written only in Traditional script (their Simplified forms differ), among them the
/// ones Whisper base wrote for this test's Mandarin audio before conversion (愛 臺 農 孫 長 騙).
const TRADITIONAL_ONLY: &str = "們這個說話時間來為會對過還從裡後與長氣國愛農臺騙見讓麼樣現學開關東車門馬鳥魚語記讀書寫聽問題頭點歲萬經處親戰歡飯葉孫種";

/// Writes to stderr past the test harness's capture, so that skips and timings show in every run.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn require_speech() -> bool {
    std::env::var("CONCH_REQUIRE_SPEECH").is_ok_and(|v| v == "1")
}

/// One service for the tests of this file (one model load); they take turns at the worker.
fn service() -> Option<&'static SpeechService> {
    static SERVICE: OnceLock<Option<SpeechService>> = OnceLock::new();
    SERVICE
        .get_or_init(|| {
            let config = SpeechConfig::default();
            if !config.is_installed() {
                let reason = format!(
                    "speech assets are not installed in {}: run scripts/fetch-speech",
                    config.speech_dir.display()
                );
                assert!(!require_speech(), "CONCH_REQUIRE_SPEECH=1 but {reason}");
                report(&format!("skipping the real speech tests: {reason}"));
                return None;
            }
            let started = Instant::now();
            let service = SpeechService::start(config).expect("the speech worker starts");
            report(&format!(
                "timing: worker start {:.2}s",
                started.elapsed().as_secs_f64()
            ));
            Some(service)
        })
        .as_ref()
}

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
    let dir = std::env::temp_dir().join(format!("conch-speech-real-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    ScratchDir(dir)
}

/// Seconds of audio in a PCM WAV file, from its fmt and data chunks.
fn wav_seconds(wav: &[u8]) -> f64 {
    assert!(
        wav.len() >= 12 && &wav[..4] == b"RIFF" && &wav[8..12] == b"WAVE",
        "not a WAV file"
    );
    let (mut byte_rate, mut data_len, mut at) = (0u32, 0usize, 12usize);
    while at + 8 <= wav.len() {
        let id = &wav[at..at + 4];
        let len = u32::from_le_bytes(wav[at + 4..at + 8].try_into().unwrap()) as usize;
        if id == b"fmt " {
            byte_rate = u32::from_le_bytes(wav[at + 16..at + 20].try_into().unwrap());
        } else if id == b"data" {
            data_len = len.min(wav.len() - at - 8);
        }
        at += 8 + len + len % 2;
    }
    assert!(byte_rate > 0, "WAV without a fmt chunk");
    data_len as f64 / byte_rate as f64
}

fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn transcribe_timed(service: &SpeechService, audio: &Path, language: Option<&str>) -> Transcript {
    let started = Instant::now();
    let transcript = service.transcribe(audio, language).unwrap();
    let wall = started.elapsed().as_secs_f64();
    report(&format!(
        "timing: transcribe {} ({language:?}): {:.2}s audio, model load {:.2}s, transcription {:.2}s \
         = {:.2}s per second of audio, {wall:.2}s in all; {:?}",
        audio.file_name().unwrap().to_string_lossy(),
        transcript.duration,
        transcript.load_s,
        transcript.transcribe_s,
        transcript.transcribe_s / transcript.duration.max(1e-3),
        transcript.text
    ));
    transcript
}

fn synthesize_timed(service: &SpeechService, text: &str, language: &str, slow: bool) -> Vec<u8> {
    let started = Instant::now();
    let wav = service.synthesize(text, language, slow).unwrap();
    let wall = started.elapsed().as_secs_f64();
    let seconds = wav_seconds(&wav);
    report(&format!(
        "timing: synthesize {language} (slow: {slow}): {seconds:.2}s audio in {wall:.2}s \
         = {:.3}s per second of audio",
        wall / seconds.max(1e-3)
    ));
    wav
}

fn assert_english_content(transcript: &Transcript) {
    let heard = words(&transcript.text);
    let missing: Vec<_> = ENGLISH_CONTENT_WORDS
        .iter()
        .filter(|w| !heard.contains(**w))
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?} in {:?}",
        transcript.text
    );
}

#[test]
fn english_voice_round_trip() {
    let Some(service) = service() else { return };
    let dir = scratch_dir("english");
    let normal = synthesize_timed(service, ENGLISH_SENTENCE, "en", false);
    let slow = synthesize_timed(service, ENGLISH_SENTENCE, "en-US", true);
    assert!(
        wav_seconds(&slow) > 1.2 * wav_seconds(&normal),
        "slow speech is not slower: {:.2}s vs {:.2}s",
        wav_seconds(&slow),
        wav_seconds(&normal)
    );
    for (name, wav) in [("normal.wav", &normal), ("slow.wav", &slow)] {
        let path = dir.join(name);
        std::fs::write(&path, wav).unwrap();
        let transcript = transcribe_timed(service, &path, Some("en"));
        assert_eq!(transcript.language, "en");
        assert_english_content(&transcript);
        let mut previous_end = 0.0;
        for segment in &transcript.segments {
            assert!(
                previous_end <= segment.start
                    && segment.start < segment.end
                    && segment.end <= transcript.duration,
                "segment {segment:?} out of order or outside {:.3}s",
                transcript.duration
            );
            previous_end = segment.end;
        }
    }
    // Without a language, English is detected.
    let detected = transcribe_timed(service, &dir.join("normal.wav"), None);
    assert_eq!(detected.language, "en");
    assert_english_content(&detected);
}

#[test]
fn browser_recordings_in_webm_and_ogg_opus_are_transcribed() {
    let Some(service) = service() else { return };
    let dir = scratch_dir("opus");
    let wav = dir.join("source.wav");
    std::fs::write(
        &wav,
        service.synthesize(ENGLISH_SENTENCE, "en", false).unwrap(),
    )
    .unwrap();
    let python = SpeechConfig::default().speech_dir.join("venv/bin/python");
    let encoder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/encode_opus.py");
    for container in ["webm", "ogg"] {
        let recording = dir.join(format!("recording.{container}"));
        let status = Command::new(&python)
            .arg(&encoder)
            .arg(&wav)
            .arg(&recording)
            .arg(container)
            .status()
            .unwrap();
        assert!(status.success(), "encoding {container} failed");
        assert_english_content(&transcribe_timed(service, &recording, Some("en")));
    }
}

#[test]
fn mandarin_smoke_test_gives_simplified_chinese() {
    let Some(service) = service() else { return };
    let dir = scratch_dir("mandarin");
    // espeak-ng's Mandarin is robotic; spoken slowly, Whisper base recognises part of it.
    let wav = synthesize_timed(service, MANDARIN_SENTENCE, "zh", true);
    let path = dir.join("mandarin.wav");
    std::fs::write(&path, wav).unwrap();
    let transcript = transcribe_timed(service, &path, Some("zh-CN"));
    assert_eq!(transcript.language, "zh");
    let is_han = |c: char| ('\u{4e00}'..='\u{9fff}').contains(&c);
    let han: HashSet<char> = transcript.text.chars().filter(|c| is_han(*c)).collect();
    assert!(
        !han.is_empty(),
        "no Chinese characters in {:?}",
        transcript.text
    );
    let traditional: Vec<char> = han
        .iter()
        .copied()
        .filter(|c| TRADITIONAL_ONLY.contains(*c))
        .collect();
    assert!(
        traditional.is_empty(),
        "Traditional characters {traditional:?} in {:?}",
        transcript.text
    );
    let spoken: HashSet<char> = MANDARIN_SENTENCE.chars().filter(|c| is_han(*c)).collect();
    let recognised = han.intersection(&spoken).count();
    assert!(
        recognised >= 4,
        "only {recognised} of the spoken characters in {:?}",
        transcript.text
    );
}

#[test]
fn bad_input_to_the_real_worker_is_an_error_not_a_crash() {
    let Some(service) = service() else { return };
    let dir = scratch_dir("bad-input");
    let not_audio = dir.join("notes.webm");
    std::fs::write(&not_audio, "these are words, not sound").unwrap();
    let error = service.transcribe(&not_audio, None).unwrap_err();
    assert!(matches!(error, SpeechError::BadAudio(_)), "{error}");
    assert!(!error.is_transient());

    let wav = dir.join("speech.wav");
    std::fs::write(&wav, service.synthesize("Hello.", "en", false).unwrap()).unwrap();
    let error = service.transcribe(&wav, Some("xx")).unwrap_err();
    assert!(matches!(error, SpeechError::BadRequest(_)), "{error}");

    let error = service.synthesize("hello", "qq", false).unwrap_err();
    assert!(matches!(error, SpeechError::BadRequest(_)), "{error}");

    // A recording without a single sample is an empty transcript, and text without sound an
    // empty recording.
    let silent = service.synthesize("...", "en", false).unwrap();
    assert_eq!(wav_seconds(&silent), 0.0);
    let empty = dir.join("empty.wav");
    std::fs::write(&empty, &silent).unwrap();
    let transcript = transcribe_timed(service, &empty, Some("en"));
    assert_eq!(transcript.text, "");
    service.health().unwrap();
}

#[test]
fn the_real_worker_is_restarted_after_being_killed() {
    let Some(_) = service() else { return };
    // A service of its own: killing the shared worker would break the other tests' requests.
    let service = SpeechService::start(SpeechConfig::default()).unwrap();
    let pid = service.worker_pid().unwrap();
    assert!(Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(200));
    service.health().unwrap();
    assert_ne!(service.worker_pid(), Some(pid));
    assert_eq!(service.restarts(), 1);
    let wav = service.synthesize("Still here.", "en", false).unwrap();
    assert!(wav_seconds(&wav) > 0.3);
}
