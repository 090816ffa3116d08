#!/usr/bin/env bash
# A stand-in for the speech worker that speaks its protocol without models, for the supervision
# tests. What it does depends on the audio file's name (or the text) it is given:
#   ...hang...      never answers          ...die...     exits mid-request
#   ...garbage...   answers with non-JSON  ...badaudio... answers a bad_audio error
#   ...stale...     answers first with a wrong id, then properly
#   otherwise       transcribe: "heard <path>"; synthesize: writes an empty 16-bit WAV to out_path
# With the argument --no-ping it never answers at all (a worker that cannot start).
[ "${1:-}" = --no-ping ] && exec sleep 600
field() { [[ $line =~ \"$1\":\"([^\"]*)\" ]] && echo "${BASH_REMATCH[1]}"; }
while IFS= read -r line; do
  [[ $line =~ \"id\":([0-9]+) ]] && id=${BASH_REMATCH[1]}
  [[ $line =~ \"op\":\"([a-z]+)\" ]] && op=${BASH_REMATCH[1]}
  audio_path=$(field audio_path)
  subject="${audio_path##*/}$(field text)"
  case $subject in
    *hang*) exec sleep 600 ;;
    *die*) echo "fake worker: dying as asked" >&2; exit 3 ;;
    *garbage*) echo "this is not JSON"; continue ;;
    *badaudio*) echo "{\"id\":$id,\"ok\":false,\"error\":{\"kind\":\"bad_audio\",\"message\":\"cannot decode $subject\"}}"; continue ;;
    *stale*) echo "{\"id\":$((id + 1000)),\"ok\":true,\"result\":{}}" ;;
  esac
  case $op in
    ping) echo "{\"id\":$id,\"ok\":true,\"result\":{\"pong\":true}}" ;;
    transcribe)
      echo "{\"id\":$id,\"ok\":true,\"result\":{\"text\":\"heard $audio_path\",\"language\":\"en\",\"duration\":1.0,\"segments\":[{\"start\":0.0,\"end\":1.0,\"text\":\"heard $audio_path\"}],\"load_s\":0.0,\"transcribe_s\":0.1}}" ;;
    synthesize)
      printf 'RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x22\x56\x00\x00\x44\xac\x00\x00\x02\x00\x10\x00data\x00\x00\x00\x00' > "$(field out_path)"
      echo "{\"id\":$id,\"ok\":true,\"result\":{\"engine\":\"fake\"}}" ;;
    *) echo "{\"id\":$id,\"ok\":false,\"error\":{\"kind\":\"bad_request\",\"message\":\"unknown op\"}}" ;;
  esac
done
