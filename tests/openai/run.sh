#!/usr/bin/env bash
# Drives the server with the official `openai` Python client.
#   tests/openai/run.sh            (from the repository root; needs network once for pip)
# Creates tests/openai/.venv with the pinned packages of requirements.txt, builds and starts the
# example server on a tiny fixture model with a byte-level vocabulary (constrained decoding needs
# every byte as a token), runs the tests and stops the server.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ ! -x "$here/.venv/bin/python" ]; then
    python3 -m venv "$here/.venv"
    "$here/.venv/bin/pip" install --quiet -r "$here/requirements.txt"
fi
port="${CONCH_TEST_PORT:-18089}"
cd "$root"
cargo build --quiet -p conch-server --example serve
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
"$target/debug/examples/serve" fixtures/moe/mixtral/hf "$port" &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    sleep 0.1
done
CONCH_BASE_URL="http://127.0.0.1:$port/v1" "$here/.venv/bin/python" -m pytest -q "$here"
