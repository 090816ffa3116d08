"""Conch speech worker: speech-to-text (faster-whisper) and text-to-speech (Piper, espeak-ng).

Started by the Rust `SpeechService` (crates/conch-speech) with the venv that scripts/fetch-speech
installs; it is embedded in the `conch` binary and written next to the venv at start.

Protocol: one JSON object per line on stdin, one answer per line on stdout with the same "id":
  {"id": 1, "op": "ping"}
  {"id": 2, "op": "transcribe", "audio_path": "/x.webm", "language": "zh" | null}
  {"id": 3, "op": "synthesize", "text": "...", "language": "en", "slow": false, "out_path": "/y.wav"}
answered by {"id": N, "ok": true, "result": {...}} or
{"id": N, "ok": false, "error": {"kind": KIND, "message": "..."}} where KIND is one of
bad_request (the request itself is wrong), bad_audio (the file cannot be decoded),
not_installed (an asset is missing) or internal (anything else).
Models are loaded once, on first use. Nothing but answers is written to stdout.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
import wave

# Chinese transcripts are given in Simplified script; Whisper often writes Traditional.
CHINESE_LANGUAGES = {"zh", "yue"}
PIPER_LANGUAGES = {"en"}
WHISPER_SAMPLE_RATE = 16000
# espeak-ng's plain `cmn` voice reads Han characters as pinyin spelled out in English;
# `cmn-latn-pinyin` pronounces them as Mandarin.
ESPEAK_VOICES = {"zh": "cmn-latn-pinyin", "cmn": "cmn-latn-pinyin", "en": "en-us"}
# Piper phoneme length and espeak-ng words per minute for normal and slow speech.
PIPER_SLOW_LENGTH_SCALE = 1.4
ESPEAK_WORDS_PER_MINUTE = {False: 165, True: 115}


class RequestError(Exception):
    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


class Worker:
    def __init__(self, args):
        self.args = args
        self.whisper = None
        self.piper = None
        self.opencc = None

    # --- loading (once, lazily) ---

    def load_whisper(self):
        if self.whisper is None:
            model_dir = self.args.whisper_model
            if not os.path.isfile(os.path.join(model_dir, "model.bin")):
                raise RequestError("not_installed", f"Whisper model not found in {model_dir}")
            from faster_whisper import WhisperModel

            self.whisper = WhisperModel(
                model_dir, device="cpu", compute_type="int8", cpu_threads=self.args.threads
            )
        return self.whisper

    def load_piper(self):
        if self.piper is None:
            voice = self.args.piper_voice
            if not os.path.isfile(voice):
                raise RequestError("not_installed", f"Piper voice not found at {voice}")
            from piper import PiperVoice

            self.piper = PiperVoice.load(voice)
        return self.piper

    def to_simplified(self, text):
        if self.opencc is None:
            import opencc

            self.opencc = opencc.OpenCC("t2s.json")
        return self.opencc.convert(text)

    # --- operations ---

    def ping(self, _request):
        return {
            "pong": True,
            "whisper_loaded": self.whisper is not None,
            "piper_loaded": self.piper is not None,
            "espeak_ng": shutil.which(self.args.espeak) is not None,
        }

    def transcribe(self, request):
        audio_path = require_string(request, "audio_path")
        language = optional_string(request, "language")
        if not os.path.isfile(audio_path):
            raise RequestError("bad_request", f"audio file not found: {audio_path}")
        from faster_whisper.audio import decode_audio

        # Decoded before the model loads, so that a file that is not audio fails fast.
        try:
            audio = decode_audio(audio_path, sampling_rate=WHISPER_SAMPLE_RATE)
        except Exception as error:  # PyAV raises many types for unreadable or non-audio files
            raise RequestError("bad_audio", f"cannot decode {audio_path}: {error}") from error
        started = time.monotonic()
        model = self.load_whisper()
        load_s = time.monotonic() - started
        if language is not None and language not in model.supported_languages:
            raise RequestError("bad_request", f"unsupported transcription language '{language}'")
        transcribe_started = time.monotonic()
        # The voice-activity filter drops silences, where Whisper tends to invent text.
        segments, info = model.transcribe(audio, language=language, vad_filter=True)
        # Whisper's timestamps can run past the end of the audio; they are kept within it.
        segments = [
            {
                "start": round(min(s.start, info.duration), 3),
                "end": round(min(s.end, info.duration), 3),
                "text": s.text.strip(),
            }
            for s in segments
        ]
        if info.language in CHINESE_LANGUAGES:
            for segment in segments:
                segment["text"] = self.to_simplified(segment["text"])
        joiner = "" if info.language in CHINESE_LANGUAGES else " "
        return {
            "text": joiner.join(s["text"] for s in segments if s["text"]),
            "language": info.language,
            "duration": round(info.duration, 3),
            "segments": segments,
            "load_s": round(load_s, 3),
            "transcribe_s": round(time.monotonic() - transcribe_started, 3),
        }

    def synthesize(self, request):
        text = require_string(request, "text").strip()
        language = require_string(request, "language")
        out_path = require_string(request, "out_path")
        slow = request.get("slow", False)
        if not isinstance(slow, bool):
            raise RequestError("bad_request", "'slow' must be true or false")
        if not text:
            raise RequestError("bad_request", "nothing to say: 'text' is empty")
        if not os.path.isdir(os.path.dirname(os.path.abspath(out_path))):
            raise RequestError("bad_request", f"output folder does not exist: {out_path}")
        started = time.monotonic()
        if language in PIPER_LANGUAGES and os.path.isfile(self.args.piper_voice):
            engine = "piper"
            self.synthesize_piper(text, slow, out_path)
        else:
            engine = "espeak-ng"
            self.synthesize_espeak(text, language, slow, out_path)
        with wave.open(out_path, "rb") as wav:
            duration = wav.getnframes() / wav.getframerate()
        return {
            "out_path": out_path,
            "engine": engine,
            "duration": round(duration, 3),
            "synthesize_s": round(time.monotonic() - started, 3),
        }

    def synthesize_piper(self, text, slow, out_path):
        from piper import SynthesisConfig

        voice = self.load_piper()
        config = SynthesisConfig(length_scale=PIPER_SLOW_LENGTH_SCALE if slow else None)
        with wave.open(out_path, "wb") as wav:
            # Set here rather than by Piper, which sets it from the first chunk of audio and so
            # leaves no valid file for text without any sound (punctuation only).
            wav.setframerate(voice.config.sample_rate)
            wav.setsampwidth(2)
            wav.setnchannels(1)
            voice.synthesize_wav(text, wav, syn_config=config, set_wav_format=False)

    def synthesize_espeak(self, text, language, slow, out_path):
        espeak = shutil.which(self.args.espeak)
        if espeak is None:
            raise RequestError(
                "not_installed", f"{self.args.espeak} not found (Debian package espeak-ng)"
            )
        voice = ESPEAK_VOICES.get(language, language)
        # The text goes through stdin so that nothing in it is read as an option.
        command = [espeak, "-v", voice, "-s", str(ESPEAK_WORDS_PER_MINUTE[slow]), "-w", out_path, "--stdin"]
        result = subprocess.run(command, input=text.encode(), capture_output=True, timeout=300)
        message = result.stderr.decode(errors="replace").strip()
        if result.returncode != 0 or not os.path.isfile(out_path):
            raise RequestError(
                "bad_request", f"espeak-ng cannot speak language '{language}': {message or 'no output'}"
            )


def require_string(request, key):
    value = request.get(key)
    if not isinstance(value, str):
        raise RequestError("bad_request", f"'{key}' must be a string")
    return value


def optional_string(request, key):
    value = request.get(key)
    if value is not None and not isinstance(value, str):
        raise RequestError("bad_request", f"'{key}' must be a string or null")
    return value


def handle(worker, line):
    try:
        request = json.loads(line)
    except ValueError as error:
        return {"id": None, "ok": False, "error": {"kind": "bad_request", "message": f"not JSON: {error}"}}
    if not isinstance(request, dict):
        return {"id": None, "ok": False, "error": {"kind": "bad_request", "message": "request is not an object"}}
    request_id = request.get("id")
    operations = {"ping": worker.ping, "transcribe": worker.transcribe, "synthesize": worker.synthesize}
    operation = operations.get(request.get("op"))
    try:
        if operation is None:
            raise RequestError("bad_request", f"unknown op {request.get('op')!r}")
        return {"id": request_id, "ok": True, "result": operation(request)}
    except RequestError as error:
        return {"id": request_id, "ok": False, "error": {"kind": error.kind, "message": str(error)}}
    except Exception as error:
        traceback.print_exc(file=sys.stderr)
        message = f"{type(error).__name__}: {error}"
        return {"id": request_id, "ok": False, "error": {"kind": "internal", "message": message}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--whisper-model", required=True, help="CTranslate2 Whisper model folder")
    parser.add_argument("--piper-voice", required=True, help="Piper voice .onnx (config beside it)")
    parser.add_argument("--espeak", default="espeak-ng", help="espeak-ng program")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for Whisper (0: all)")
    args = parser.parse_args()
    # Libraries (Python or native) may print; only answers may reach the protocol stream, so it gets
    # its own descriptor and descriptor 1 becomes stderr.
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker = Worker(args)
    for raw_line in sys.stdin.buffer:
        line = raw_line.decode("utf-8", errors="replace")
        if not line.strip():
            continue
        answers.write(json.dumps(handle(worker, line), ensure_ascii=False) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
