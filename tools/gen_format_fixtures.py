#!/usr/bin/env python3
"""Writes the file-format fixtures with independent writers (the `gguf` and `safetensors` packages).

Run from the repository root, after tools/gen_quant_fixtures.py (whose blocks it reuses):
    /opt/conch-py/bin/python tools/gen_format_fixtures.py
Pinned versions used: gguf 0.19.0, safetensors 0.8.0, torch 2.15.0, numpy 2.4.6.

Outputs in fixtures/formats/:
  all_types.gguf       GGUF v3 (gguf-py's GGUFWriter, alignment 64): metadata of every value type
                       (nested arrays, non-ASCII strings) and one tensor per tensor type, holding the
                       blocks of fixtures/quant/<TYPE>.blocks.bin
  all_types.json       what was written: metadata [key, gguf type, value] in order, and tensor
                       [name, type, shape outermost first, source blocks file]
  small_v2.gguf        a small file by the same writer with its version field set to 2 (v2 and v3
                       differ only in that v3 may be big-endian, so the bytes are otherwise the same)
  small_v2.json        its metadata and tensors, as above
  sharded/             a Hugging Face-style directory: two safetensors shards (safetensors.torch),
                       model.safetensors.index.json, config.json, generation_config.json,
                       tokenizer_config.json, tokenizer.json
  single/              model.safetensors and config.json only
  safetensors.json     every tensor in sharded/ and single/: dtype, shape and values (as float32 → JSON)
"""
import json
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType as T
from gguf import GGML_QUANT_SIZES, GGUFValueType as V, GGUFWriter
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
QUANT = ROOT / "fixtures" / "quant"
OUT = ROOT / "fixtures" / "formats"

TENSOR_TYPES = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
                T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.MXFP4]


def f32(x: float) -> float:
    return float(np.float32(x))


METADATA = [
    ("general.architecture", V.STRING, "conchtest"),
    ("general.name", V.STRING, "Conch format fixture — ünïcödé ✓"),
    ("test.u8", V.UINT8, 250), ("test.i8", V.INT8, -120),
    ("test.u16", V.UINT16, 65000), ("test.i16", V.INT16, -32000),
    ("test.u32", V.UINT32, 4_000_000_000), ("test.i32", V.INT32, -2_000_000_000),
    ("test.u64", V.UINT64, 2**63 + 5), ("test.i64", V.INT64, -(2**62) - 3),
    ("test.f32", V.FLOAT32, f32(1e-5)), ("test.f64", V.FLOAT64, 0.1),
    ("test.bool_true", V.BOOL, True), ("test.bool_false", V.BOOL, False),
    ("test.empty_string", V.STRING, ""),
    ("test.str_array", V.ARRAY, ["<s>", "</s>", "ĠHello", "日本語", ""]),
    ("test.i32_array", V.ARRAY, [1, -2, 300000, -400000]),
    ("test.f32_array", V.ARRAY, [f32(0.5), f32(-1.25), f32(0.3)]),
    ("test.bool_array", V.ARRAY, [True, False, True]),
    ("test.nested_array", V.ARRAY, [[1, 2], [3], [4, 5, 6]]),
]


def write_gguf(path: Path, metadata, tensors, alignment: int | None) -> list:
    w = GGUFWriter(path, arch=None)
    # GGUFWriter adds general.architecture only when arch is given; we add all keys ourselves.
    for key, vtype, value in metadata:
        w.add_key_value(key, value, vtype)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    described = []
    for name, qtype, shape, blocks_file in tensors:
        raw = np.frombuffer((QUANT / blocks_file).read_bytes(), dtype=np.uint8)
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        n_values = int(np.prod(shape))
        raw = raw[: n_values // block_size * type_size]
        byte_shape = (*shape[:-1], shape[-1] // block_size * type_size)
        w.add_tensor(name, raw.reshape(byte_shape), raw_dtype=qtype)
        described.append([name, qtype.name, list(shape), blocks_file])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    meta = [[k, t.name, v] for k, t, v in metadata]
    if alignment is not None:
        meta.append(["general.alignment", "UINT32", alignment])
    return [meta, described]


def shape_for(qtype: T) -> tuple[int, ...]:
    block_size, _ = GGML_QUANT_SIZES[qtype]
    if block_size == 1:
        return (2, 4, 64)          # three dimensions: checks the ne[] reversal
    return (2, 1024)               # 64 blocks of 32, or 8 blocks of 256


def gguf_fixtures() -> None:
    tensors = [(f"{t.name}.weight", t, shape_for(t), f"{t.name}.blocks.bin") for t in TENSOR_TYPES]
    meta, described = write_gguf(OUT / "all_types.gguf", METADATA, tensors, alignment=64)
    (OUT / "all_types.json").write_text(json.dumps({"metadata": meta, "tensors": described}, ensure_ascii=False, indent=1))

    small_meta = [("general.architecture", V.STRING, "llama"), ("llama.block_count", V.UINT32, 2),
                  ("tokenizer.ggml.tokens", V.ARRAY, ["a", "b", "c"])]
    small_tensors = [("tok_embd.weight", T.Q8_0, (4, 64), "Q8_0.blocks.bin"),
                     ("norm.weight", T.F32, (64,), "F32.blocks.bin")]
    meta, described = write_gguf(OUT / "small_v2.gguf", small_meta, small_tensors, alignment=None)
    data = bytearray((OUT / "small_v2.gguf").read_bytes())
    assert data[4:8] == (3).to_bytes(4, "little")
    data[4:8] = (2).to_bytes(4, "little")
    (OUT / "small_v2.gguf").write_bytes(bytes(data))
    (OUT / "small_v2.json").write_text(json.dumps({"metadata": meta, "tensors": described}, indent=1))


def safetensors_fixtures() -> None:
    gen = torch.Generator().manual_seed(7)
    sharded = {
        "model.embed_tokens.weight": torch.randn(8, 4, generator=gen, dtype=torch.float32),
        "model.layers.0.mlp.up_proj.weight": torch.randn(6, 4, generator=gen).to(torch.bfloat16),
        "model.layers.0.input_layernorm.weight": torch.randn(4, generator=gen).to(torch.float16),
        "model.norm.weight": torch.tensor([1.0, -0.0, float("inf"), 65504.0], dtype=torch.float16),
        "lm_head.weight": torch.randn(2, 3, 4, generator=gen).to(torch.bfloat16),
    }
    shards = {"model-00001-of-00002.safetensors": list(sharded)[:2],
              "model-00002-of-00002.safetensors": list(sharded)[2:]}
    d = OUT / "sharded"
    d.mkdir(parents=True, exist_ok=True)
    for file, names in shards.items():
        save_file({n: sharded[n] for n in names}, d / file, metadata={"format": "pt"})
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in sharded.values())},
             "weight_map": {n: f for f, names in shards.items() for n in names}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 4, "vocab_size": 8}))
    (d / "generation_config.json").write_text(json.dumps({"do_sample": True, "temperature": 0.6}))
    (d / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    (d / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}))

    single = {"w": torch.arange(-6, 6, dtype=torch.float32).reshape(3, 4) / 4, "scalar": torch.tensor(2.5)}
    s = OUT / "single"
    s.mkdir(parents=True, exist_ok=True)
    save_file(single, s / "model.safetensors")
    (s / "config.json").write_text(json.dumps({"model_type": "test"}))

    def describe(tensors):
        names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
        return {n: {"dtype": names[t.dtype], "shape": list(t.shape),
                    "values": [float(v) if np.isfinite(v) else str(v) for v in t.float().reshape(-1).tolist()]}
                for n, t in tensors.items()}
    (OUT / "safetensors.json").write_text(json.dumps({"sharded": describe(sharded), "single": describe(single)}, indent=1))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    gguf_fixtures()
    safetensors_fixtures()
    print(f"wrote fixtures to {OUT}")


if __name__ == "__main__":
    main()
