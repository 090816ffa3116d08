#!/usr/bin/env python3
"""Writes fixtures/models/: tiny random dense models and Hugging Face transformers' logits for them.

Run from the repository root:

    /opt/conch-py/bin/python tools/gen_model_fixtures.py

Pinned versions used to write the committed fixtures: torch 2.15.0, transformers 5.24.0,
safetensors 0.8.0, sentencepiece 0.2.3, numpy 2.4.6, and llama.cpp's convert_hf_to_gguf.py
from the llama-cpp-python 0.3.36 sdist (bench/work/llama.cpp, with its own gguf-py).

For every variant in VARIANTS it writes fixtures/models/<name>/:
  hf/config.json, hf/model.safetensors (float32; one variant sharded with model.safetensors.index.json)
  model.gguf        F32 GGUF made by llama.cpp's converter from hf/ (absent when conversion cannot
                    express the model; reference.json then says why)
  logits.f32        little-endian f32 logits, [len(tokens) x vocab_size], row-major, from one full-sequence
                    forward pass of the model reloaded from hf/ (eager attention, float32)
  reference.json    {"arch", "tokens", "vocab_size", "rows", "cols", "logits": "logits.f32", "gguf": bool,
                     "gguf_note"}

Weights are random with O(1) activations, norm weights are randomized (not all ones) and biases are
non-zero, so that a wrong layout or formula moves the logits far past the 1e-4 tolerance.
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "models"
CONVERTER = ROOT / "bench" / "work" / "llama.cpp" / "convert_hf_to_gguf.py"
SEQ_LEN = 13
VOCAB = 300

VARIANTS = [
    # SmolLM2-like: tied embeddings, 3 heads sharing one kv head, hidden/heads head_dim.
    dict(
        name="llama_tied",
        cls="LlamaForCausalLM",
        config=dict(
            vocab_size=VOCAB, hidden_size=48, intermediate_size=100, num_hidden_layers=2,
            num_attention_heads=3, num_key_value_heads=1, rms_norm_eps=1e-5, rope_theta=10000.0,
            tie_word_embeddings=True, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
        ),
    ),
    # Llama 3 rope scaling (with a small original context so the scaling touches the test positions),
    # explicit head_dim different from hidden/heads, untied output, biases, sharded safetensors.
    dict(
        name="llama_rope_llama3_sharded",
        cls="LlamaForCausalLM",
        shard="150KB",
        config=dict(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=88, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=24, rms_norm_eps=1e-6,
            rope_theta=50000.0, tie_word_embeddings=False, max_position_embeddings=256,
            attention_bias=True, mlp_bias=False,
            rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                              original_max_position_embeddings=32),
            bos_token_id=1, eos_token_id=2,
        ),
    ),
    # Llama with linear rope scaling.
    dict(
        name="llama_rope_linear",
        cls="LlamaForCausalLM",
        config=dict(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=56, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0,
            tie_word_embeddings=False, max_position_embeddings=256,
            rope_scaling=dict(rope_type="linear", factor=3.0), bos_token_id=1, eos_token_id=2,
        ),
    ),
    # Qwen2: q/k/v biases, GQA 4:2, untied.
    dict(
        name="qwen2",
        cls="Qwen2ForCausalLM",
        config=dict(
            vocab_size=VOCAB, hidden_size=48, intermediate_size=72, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1000000.0,
            tie_word_embeddings=False, max_position_embeddings=256, use_sliding_window=False,
            bos_token_id=1, eos_token_id=2,
        ),
    ),
    # Qwen3: q/k RMSNorm per head, explicit head_dim larger than hidden/heads, tied, GQA 4:1.
    dict(
        name="qwen3",
        cls="Qwen3ForCausalLM",
        config=dict(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=72, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=24, rms_norm_eps=1e-6,
            rope_theta=1000000.0, tie_word_embeddings=True, max_position_embeddings=256,
            bos_token_id=1, eos_token_id=2,
        ),
    ),
    # Qwen2 with its sliding window switched on for the layers from max_window_layers on (llama.cpp
    # ignores Qwen2's window, so no GGUF).
    dict(
        name="qwen2_sliding",
        cls="Qwen2ForCausalLM",
        no_gguf="llama.cpp's qwen2 has no sliding window",
        config=dict(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, rms_norm_eps=1e-6, rope_theta=10000.0,
            tie_word_embeddings=True, max_position_embeddings=256, use_sliding_window=True,
            sliding_window=5, max_window_layers=1, bos_token_id=1, eos_token_id=2,
        ),
    ),
    # Qwen3 with YaRN rope scaling and a tiny original context, so the ramp and the attention
    # factor both matter at the test positions.
    dict(
        name="qwen3_yarn",
        cls="Qwen3ForCausalLM",
        config=dict(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, head_dim=32, rms_norm_eps=1e-6,
            rope_theta=10000.0, tie_word_embeddings=False, max_position_embeddings=256,
            rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=64),
            bos_token_id=1, eos_token_id=2,
        ),
    ),
    # Gemma 3 as the 270M/1B configs: 5 sliding layers then one global (the default pattern of 6),
    # a sliding window shorter than the sequence, local rope base 10000 vs global 1e6 with linear
    # scaling on the global layers only, query_pre_attn_scalar == head_dim (which GGUF assumes).
    dict(
        name="gemma3",
        cls="Gemma3ForCausalLM",
        config_cls="Gemma3TextConfig",
        config=dict(
            vocab_size=VOCAB, hidden_size=48, intermediate_size=40, num_hidden_layers=6,
            num_attention_heads=3, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
            rms_norm_eps=1e-6, sliding_window=4, rope_theta=1000000.0, rope_local_base_freq=10000.0,
            rope_scaling=dict(rope_type="linear", factor=4.0), max_position_embeddings=256,
            hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
            pad_token_id=0, bos_token_id=2, eos_token_id=1,
        ),
    ),
    # Gemma 3 features GGUF cannot carry (llama.cpp assumes query_pre_attn_scalar == head_dim):
    # explicit layer_types, scalar != head_dim, final logit softcapping. attn_logit_softcapping is set
    # to check it is ignored as transformers' Gemma 3 ignores it.
    dict(
        name="gemma3_softcap",
        cls="Gemma3ForCausalLM",
        config_cls="Gemma3TextConfig",
        no_gguf="llama.cpp's gemma3 ignores query_pre_attn_scalar and attn_logit_softcapping",
        config=dict(
            vocab_size=VOCAB, hidden_size=48, intermediate_size=40, num_hidden_layers=3,
            num_attention_heads=2, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
            rms_norm_eps=1e-6, sliding_window=3,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_theta=1000000.0, rope_local_base_freq=10000.0, max_position_embeddings=256,
            final_logit_softcapping=4.0, attn_logit_softcapping=3.0,
            hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
            pad_token_id=0, bos_token_id=2, eos_token_id=1,
        ),
    ),
]


def randomize(model: torch.nn.Module, gemma: bool) -> None:
    """O(1)-scale random weights: linear weights ~ N(0, 1/fan_in), embeddings ~ N(0, 0.3^2), norm weights
    around their identity value (1, or 0 for Gemma's 1+w), biases ~ N(0, 0.1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                center = 0.0 if gemma else 1.0
                p.copy_(center + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.copy_(torch.randn_like(p) * (0.2 if gemma else 0.3))
            else:
                p.copy_(torch.randn_like(p) / np.sqrt(p.shape[-1]))


def tiny_sentencepiece(path: Path) -> None:
    """A small SentencePiece model; llama.cpp's converter needs some tokenizer next to the weights and
    pads the vocabulary to the model's vocab_size with [PAD] tokens."""
    import io

    import sentencepiece as spm

    text = [
        "the quick brown fox jumps over the lazy dog",
        "a tiny model for testing the conch inference engine",
        "pack my box with five dozen liquor jugs",
        "how vexingly quick daft zebras jump",
    ] * 50
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=buf, vocab_size=64, model_type="bpe",
        hard_vocab_limit=False, minloglevel=2, num_threads=1,
    )
    path.write_bytes(buf.getvalue())


def convert_to_gguf(hf_dir: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "model"
        shutil.copytree(hf_dir, work)
        tiny_sentencepiece(work / "tokenizer.model")
        subprocess.run(
            [sys.executable, str(CONVERTER), str(work), "--outfile", str(out), "--outtype", "f32"],
            check=True, stdout=subprocess.DEVNULL,
        )


def build(variant: dict, tokens: list[int]) -> None:
    name = variant["name"]
    dest = OUT / name
    if dest.exists():
        shutil.rmtree(dest)
    hf_dir = dest / "hf"
    hf_dir.mkdir(parents=True)

    config_cls = getattr(transformers, variant.get("config_cls", variant["cls"].replace("ForCausalLM", "Config")))
    config = config_cls(**variant["config"])
    config._attn_implementation = "eager"
    model_cls = getattr(transformers, variant["cls"])
    model = model_cls(config).float().eval()
    randomize(model, gemma="Gemma" in variant["cls"])
    if "shard" in variant:
        model.save_pretrained(hf_dir, max_shard_size=variant["shard"])
    else:
        model.save_pretrained(hf_dir)
    (hf_dir / "generation_config.json").unlink(missing_ok=True)

    # The reference comes from the saved directory, so the fixture is what transformers reads back.
    reloaded = model_cls.from_pretrained(hf_dir, torch_dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        logits = reloaded(torch.tensor([tokens])).logits[0].float().numpy()
    assert logits.shape == (len(tokens), VOCAB)
    logits.astype("<f4").tofile(dest / "logits.f32")

    gguf_note = variant.get("no_gguf")
    if gguf_note is None:
        convert_to_gguf(hf_dir, dest / "model.gguf")
    reference = {
        "arch": variant["cls"],
        "tokens": tokens,
        "vocab_size": VOCAB,
        "rows": len(tokens),
        "cols": VOCAB,
        "logits": "logits.f32",
        "gguf": gguf_note is None,
        "gguf_note": gguf_note or "",
    }
    (dest / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"{name}: max |logit| {np.abs(logits).max():.3f}")


def main() -> None:
    rng = np.random.default_rng(1234)
    tokens = [int(t) for t in rng.integers(0, VOCAB, SEQ_LEN)]
    for index, variant in enumerate(VARIANTS):
        torch.manual_seed(1000 + index)
        build(variant, tokens)


if __name__ == "__main__":
    main()
