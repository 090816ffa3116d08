#!/usr/bin/env python3
"""Writes the dequantization and quantization fixtures of every tensor type, using the `gguf`
Python package as the reference.

Run from the repository root:
    /opt/conch-py/bin/python tools/gen_quant_fixtures.py
Pinned versions used: gguf 0.19.0, numpy 2.4.6 (see tools/requirements.txt).

Outputs, per type T, in fixtures/quant/ (little-endian raw files):
  T.blocks.bin        random but valid blocks (finite f16 scales; zero, negative, tiny, huge
                      scales and saturated / empty quants among them)
  T.dequant.f32.bin   gguf.quants.dequantize of those blocks, float32
and for each type gguf-py can quantize:
  T.quant_in.f32.bin  input floats (random blocks plus zero, tie, outlier and constant blocks)
  T.quant_out.bin     gguf.quants.quantize of that input
and the same for Q8_1 and the K-quants Q2_K to Q8_K, which gguf-py cannot quantize, from llama.cpp's
reference quantizers (quantize_row_*_ref, what llama-quantize uses without an imatrix), called
through ctypes in the pinned llama.cpp build (bench/work/llama.cpp/build/bin/libggml-base.so, from the
llama-cpp-python 0.3.36 sdist). They are skipped, keeping the committed files, if that library is absent.

The same blocks also go into fixtures/formats/all_types.gguf (see tools/gen_format_fixtures.py).
"""
import ctypes
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGML_QUANT_SIZES
from gguf import quants

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "quant"
GGML_BASE = ROOT / "bench" / "work" / "llama.cpp" / "build" / "bin" / "libggml-base.so"
LLAMA_CPP_QUANT_TYPES = {t: f"quantize_row_{t.name[:2].lower()}{t.name[2:]}_ref"
                         for t in (T.Q8_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_K)}

# Byte offsets of the f16 scale fields in each block layout (ggml's block_* structs).
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
    T.MXFP4: [],
}
DEQUANT_TYPES = [T.F32, T.F16, T.BF16, *F16_FIELDS]
QUANT_TYPES = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.MXFP4]

# Extreme f16 scales placed in the first blocks: zero, negative zero, negative, largest finite,
# smallest subnormal, one.
SPECIAL_SCALES = np.array([0.0, -0.0, -1.5, 65504.0, 2.0**-24, 1.0], dtype=np.float16)


def n_blocks(t: T) -> int:
    block_size, _ = GGML_QUANT_SIZES[t]
    return 8 if block_size == 256 else 64 if block_size == 32 else 512


def random_blocks(t: T, rng: np.random.Generator) -> np.ndarray:
    """Random bytes for `n_blocks(t)` blocks of `t`, with valid scales and some extreme blocks."""
    _, type_size = GGML_QUANT_SIZES[t]
    n = n_blocks(t)
    blocks = rng.integers(0, 256, size=(n, type_size), dtype=np.uint8)
    if t == T.F32:
        # Ordinary values plus the specials f32 can hold (random bytes would be mostly ordinary).
        values = rng.standard_normal(n).astype(np.float32)
        values[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45]
        return values.view(np.uint8).reshape(n, type_size)
    if t in (T.F16, T.BF16):
        return blocks  # every bit pattern, NaNs and infinities included
    fields = F16_FIELDS[t]
    for off in fields:
        scales = (rng.standard_normal(n) * 0.05).astype(np.float16)
        blocks[:, off:off + 2] = scales.view(np.uint8).reshape(n, 2)
    for i, s in enumerate(SPECIAL_SCALES):
        for off in fields:
            blocks[i, off:off + 2] = np.array([s], dtype=np.float16).view(np.uint8)
    quant_bytes = [j for j in range(type_size) if all(not (o <= j < o + 2) for o in fields)]
    if t == T.MXFP4:
        blocks[0, 0], blocks[1, 0], blocks[2, 0] = 0, 1, 254  # subnormal, subnormal, huge exponents
        quant_bytes = list(range(1, type_size))
    blocks[len(SPECIAL_SCALES), quant_bytes] = 0xFF  # every quant and packed scale saturated
    blocks[len(SPECIAL_SCALES) + 1, quant_bytes] = 0x00
    return blocks


def quant_input(t: T, rng: np.random.Generator) -> np.ndarray:
    block_size, _ = GGML_QUANT_SIZES[t]
    n = 256 if block_size == 1 else 16
    x = (rng.standard_normal((n, block_size)) * rng.uniform(0.01, 10, (n, 1))).astype(np.float32)
    if block_size > 1:
        x[0] = 0.0                                     # all-zero block
        x[1] = 3.25                                    # constant block
        x[2] = np.linspace(-1, 1, block_size)          # many rounding ties
        x[3, 5] = -100.0                               # negative outlier dominates the scale
        x[4] = rng.integers(-8, 8, block_size) * 0.5   # exact multiples of a power-of-two scale
        x[5, :] = np.abs(x[5]); x[5, 7] = x[5].max()   # duplicated maximum
    else:
        x[:8, 0] = [0.0, -0.0, 1.0 + 2**-11, 1.0 + 3 * 2**-11, 65520.0, 1e-8, 3.0e38, -2.5]
    return x.reshape(-1)


def main() -> None:
    rng = np.random.default_rng(20261129)
    OUT.mkdir(parents=True, exist_ok=True)
    for t in DEQUANT_TYPES:
        blocks = random_blocks(t, rng)
        out = quants.dequantize(blocks, t).astype(np.float32).reshape(-1)
        (OUT / f"{t.name}.blocks.bin").write_bytes(blocks.tobytes())
        (OUT / f"{t.name}.dequant.f32.bin").write_bytes(out.tobytes())
    for t in QUANT_TYPES:
        x = quant_input(t, rng)
        q = quants.quantize(x.reshape(1, -1), t)
        (OUT / f"{t.name}.quant_in.f32.bin").write_bytes(x.tobytes())
        (OUT / f"{t.name}.quant_out.bin").write_bytes(np.ascontiguousarray(q).view(np.uint8).tobytes())
    if GGML_BASE.exists():
        ggml = ctypes.CDLL(str(GGML_BASE))
        ggml.ggml_type_size.restype = ctypes.c_size_t
        ggml.ggml_type_size.argtypes = [ctypes.c_int]
        for t, fn_name in LLAMA_CPP_QUANT_TYPES.items():
            x = quant_input(t, rng)
            block_size, _ = GGML_QUANT_SIZES[t]
            # Sizes from ggml itself: gguf-py 0.19 still lists Q8_1 as 40 bytes, ggml's block is 36.
            out = np.zeros(x.size // block_size * ggml.ggml_type_size(int(t)), dtype=np.uint8)
            fn = getattr(ggml, fn_name)
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            fn(x.ctypes.data, out.ctypes.data, x.size)
            (OUT / f"{t.name}.quant_in.f32.bin").write_bytes(x.tobytes())
            (OUT / f"{t.name}.quant_out.bin").write_bytes(out.tobytes())
    else:
        print(f"note: {GGML_BASE} not found; K-quant quantization fixtures left as they are")
    print(f"wrote {len(list(OUT.iterdir()))} files to {OUT}")


if __name__ == "__main__":
    main()
