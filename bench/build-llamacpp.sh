#!/usr/bin/env bash
# Builds the pinned llama.cpp (the source inside the llama-cpp-python sdist on PyPI) natively for
# this CPU, into bench/work/llama.cpp/build/bin. Idempotent.
#
# gcc 12 drops the stores that fill the AMX tile configuration before `ldtilecfg` in ggml's AMX
# kernel (SIGILL on any prompt). A compiler memory barrier before the load fixes it; we apply that
# one-line patch rather than disable AMX, which would make the anchor unfairly slow.
set -euo pipefail
cd "$(dirname "$0")"
VERSION=0.3.36
WORK=${CONCH_BENCH_DIR:-$PWD/work}
SRC=$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp
mkdir -p "$WORK"
if [ ! -d "$SRC" ]; then
  python3 -m pip download -q --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d "$WORK"
  tar xzf "$WORK/llama_cpp_python-$VERSION.tar.gz" -C "$WORK"
fi
MMQ=$SRC/ggml/src/ggml-cpu/amx/mmq.cpp
if ! grep -q 'conch: barrier' "$MMQ"; then
  sed -i 's|^\(\s*\)_tile_loadconfig(&tc);|\1asm volatile("" ::: "memory"); // conch: barrier\n\1_tile_loadconfig(\&tc);|' "$MMQ"
fi
if [ ! -x "$SRC/build/bin/llama-perplexity" ]; then
  cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_LLGUIDANCE=OFF \
    -DLLAMA_BUILD_TESTS=OFF >/dev/null
  cmake --build "$SRC/build" -j "$(nproc)" --target llama-bench llama-server llama-perplexity \
    llama-tokenize llama-quantize llama-cli >"$WORK/llama-build.log" 2>&1 || { tail -20 "$WORK/llama-build.log" >&2; exit 1; }
fi
ln -sfn "$SRC" "$WORK/llama.cpp"
echo "$WORK/llama.cpp/build/bin"
