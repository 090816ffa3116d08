#!/usr/bin/env bash
# The family app's end-to-end tests in a real headless Chromium.
#
#   tests/browser/run.sh [node --test options]
#
# Installs Debian's chromium if /usr/bin/chromium is missing, installs the pinned test packages
# (npm ci), builds `conch`, starts `conch serve` on the tiny fixture model with a fresh data
# directory on a free port, runs tests/*.test.mjs against it, and stops it again. Screenshots go
# to tests/browser/artifacts/; the server's log is printed if a test fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
model="$root/fixtures/models/llama_tied/model.gguf"

if [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium (Debian package)" >&2
  if [ "$(id -u)" -eq 0 ]; then
    apt-get install -y chromium
  else
    sudo apt-get install -y chromium
  fi
fi

(cd "$here" && npm ci --no-audit --no-fund)

cargo build --manifest-path "$root/Cargo.toml" -p conch-cli --bin conch
conch="${CARGO_TARGET_DIR:-$root/target}/debug/conch"

data="$(mktemp -d -t conch-browser-data.XXXXXX)"
log="$data/server.log"
server=""
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$data"
}
trap cleanup EXIT

# A port nobody listens on now: the kernel picks it, node prints it and lets it go.
port="$(node -e "const s = require('net').createServer(); s.listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close(); })")"
"$conch" serve --model "$model" --host 127.0.0.1 --port "$port" --data-dir "$data/app" >"$log" 2>&1 &
server=$!

url="http://127.0.0.1:$port"
for _ in $(seq 1 120); do
  if curl -fsS "$url/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then
    echo "conch serve exited before it was ready:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.5
done
curl -fsS "$url/health" >/dev/null || { echo "conch serve did not answer on $url" >&2; cat "$log" >&2; exit 1; }

cd "$here"
status=0
CONCH_URL="$url" node --test --test-concurrency=1 "$@" tests/*.test.mjs || status=$?
if [ "$status" -ne 0 ]; then
  echo "---- conch serve log ----" >&2
  tail -n 100 "$log" >&2
fi
exit "$status"
