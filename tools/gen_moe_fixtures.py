#!/usr/bin/env python3
"""Writes fixtures/moe/: tiny random Mixture-of-Experts models with transformers' logits and router choices.

Run from the repository root:

    /opt/conch-py/bin/python tools/gen_moe_fixtures.py            # every variant
    /opt/conch-py/bin/python tools/gen_moe_fixtures.py mixtral    # only the named variants

Pinned versions used to write the committed fixtures: torch 2.15.0, transformers 5.24.0,
safetensors 0.8.0, tokenizers 0.23.3, sentencepiece 0.2.3, numpy 2.4.6, and llama.cpp's convert_hf_to_gguf.py from the
llama-cpp-python 0.3.36 sdist (bench/work/llama.cpp, with its own gguf-py).

For every variant in VARIANTS it writes fixtures/moe/<name>/ (layout in fixtures/moe/README.md):
  hf/            config.json, model.safetensors (float32), tokenizer.json + tokenizer_config.json
  model.gguf     F32 GGUF from llama.cpp's converter (absent when the converter fails; reference.json says why)
  logits.f32     little-endian f32 [tokens x vocab] from one full-sequence forward of the reloaded model
  router/L<i>_*  per MoE layer i: router logits, chosen expert ids, routing weights, MoE block input/output
  reference.json metadata: tokens, shapes, file names, routing description, GGUF note
and fixtures/moe/router_cases.json (transformers' router modules on random logits, see router_cases()).
A run reproduces the committed files byte for byte.

Weights are random with O(1) activations; norm weights are randomized around their identity value,
biases and router correction biases are non-zero, so a wrong layout or formula moves the logits far
past the 1e-4 tolerance.
"""

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers

# For gen_model_fixtures.tiny_sentencepiece (the SentencePiece vocabulary some converters require).
sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "moe"
LLAMA_CPP = ROOT / "bench" / "work" / "llama.cpp"
SEQ_LEN = 16
# Decode the tail one token at a time after a prefill of this many tokens, to check transformers'
# cached path agrees with its full-sequence pass (the Rust side tests both against logits.f32).
PREFILL = 9
SPECIAL_TOKENS = ["<|endoftext|>", "[gMASK]", "<|user|>", "<|observation|>"]

VARIANTS = [
    # Mixtral: softmax router, top-2 of 8, always renormalised; GQA 4:2.
    dict(
        name="mixtral",
        cls="MixtralForCausalLM",
        config=dict(
            vocab_size=288, hidden_size=48, intermediate_size=40, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
            rms_norm_eps=1e-5, rope_parameters=dict(rope_type="default", rope_theta=1e6),
            max_position_embeddings=256, tie_word_embeddings=False,
        ),
    ),
    # Qwen2-MoE: top-4 of 6 without renormalisation, sigmoid-gated shared expert, q/k/v bias.
    dict(
        name="qwen2_moe",
        cls="Qwen2MoeForCausalLM",
        config=dict(
            vocab_size=300, hidden_size=40, intermediate_size=56, moe_intermediate_size=24,
            shared_expert_intermediate_size=44, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, num_experts=6, num_experts_per_tok=4, norm_topk_prob=False,
            rms_norm_eps=1e-6,
            rope_parameters=dict(rope_type="default", rope_theta=1e6), max_position_embeddings=256,
            tie_word_embeddings=False,
        ),
    ),
    # Qwen3-MoE: top-3 of 8 renormalised, per-head q/k norm, head_dim != hidden/heads, GQA 3:1, tied.
    dict(
        name="qwen3_moe",
        cls="Qwen3MoeForCausalLM",
        config=dict(
            vocab_size=272, hidden_size=48, intermediate_size=60, moe_intermediate_size=20,
            num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=1, head_dim=20,
            num_experts=8, num_experts_per_tok=3, norm_topk_prob=True,
            rms_norm_eps=1e-6, rope_parameters=dict(rope_type="default", rope_theta=1e6),
            max_position_embeddings=256, tie_word_embeddings=True,
        ),
    ),
    # Qwen3-MoE with dense layers mixed in: decoder_sparse_step=2 makes layers 1 and 3 sparse,
    # mlp_only_layers=[3] makes layer 3 dense again. llama.cpp's converter cannot express this.
    dict(
        name="qwen3_moe_mixed",
        cls="Qwen3MoeForCausalLM",
        config=dict(
            vocab_size=272, hidden_size=32, intermediate_size=44, moe_intermediate_size=14,
            num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
            num_experts=4, num_experts_per_tok=2, norm_topk_prob=False, decoder_sparse_step=2,
            mlp_only_layers=[3], rms_norm_eps=1e-6, rope_parameters=dict(rope_type="default", rope_theta=1e6),
            max_position_embeddings=256, tie_word_embeddings=False,
        ),
    ),
    # OLMoE: top-2 of 5 without renormalisation, q/k RMSNorm over whole projections, clip_qkv.
    dict(
        name="olmoe",
        cls="OlmoeForCausalLM",
        config=dict(
            vocab_size=280, hidden_size=32, intermediate_size=28, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, num_experts=5, num_experts_per_tok=2,
            norm_topk_prob=False, clip_qkv=1.5, rms_norm_eps=1e-5,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0), max_position_embeddings=256,
            tie_word_embeddings=False,
        ),
    ),
    # DeepSeek-V2-Lite-like (no q LoRA): MLA, group-limited greedy softmax routing (group score = max),
    # top-3 of 8 in 4 groups keeping 2, scaled by 1.5, 2 shared experts, first layer dense.
    dict(
        name="deepseek_v2",
        cls="DeepseekV2ForCausalLM",
        config=dict(
            vocab_size=296, hidden_size=48, intermediate_size=72, moe_intermediate_size=20,
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=None,
            kv_lora_rank=24, qk_nope_head_dim=12, qk_rope_head_dim=8, v_head_dim=10,
            n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=3, topk_method="group_limited_greedy",
            n_group=4, topk_group=2, routed_scaling_factor=1.5, first_k_dense_replace=1,
            norm_topk_prob=False, rms_norm_eps=1e-6, rope_parameters=dict(rope_type="default", rope_theta=10000.0),
            max_position_embeddings=256, tie_word_embeddings=False,
        ),
    ),
    # DeepSeek-V3: MLA with q LoRA, sigmoid routing with correction bias, group score = sum of top-2,
    # top-3 of 8 in 4 groups keeping 2, renormalised, x2.5, one shared expert, first layer dense.
    dict(
        name="deepseek_v3",
        cls="DeepseekV3ForCausalLM",
        gguf_config=dict(scoring_func="sigmoid"),
        config=dict(
            vocab_size=304, hidden_size=64, intermediate_size=80, moe_intermediate_size=28,
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=20,
            kv_lora_rank=16, qk_nope_head_dim=12, qk_rope_head_dim=8, v_head_dim=12,
            n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=3, n_group=4, topk_group=2,
            routed_scaling_factor=2.5, first_k_dense_replace=1, norm_topk_prob=True, rms_norm_eps=1e-6,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0), rope_interleave=True,
            num_nextn_predict_layers=0, max_position_embeddings=256, tie_word_embeddings=False,
        ),
    ),
    # GLM-4.5-MoE: sigmoid + correction bias in 2 groups keeping 1 (group score = sum of top-2),
    # top-2 of 6 not renormalised, x1.7, partial RoPE, q/k norm, attention bias, first layer dense.
    dict(
        name="glm4_moe",
        cls="Glm4MoeForCausalLM",
        gguf_config=dict(scoring_func="sigmoid"),
        config=dict(
            vocab_size=312, hidden_size=48, intermediate_size=64, moe_intermediate_size=22,
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            n_routed_experts=6, n_shared_experts=1, num_experts_per_tok=2, n_group=2, topk_group=1,
            routed_scaling_factor=1.7, first_k_dense_replace=1, norm_topk_prob=False, use_qk_norm=True,
            attention_bias=True, rms_norm_eps=1e-5,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.5),
            num_nextn_predict_layers=0, max_position_embeddings=256, tie_word_embeddings=False,
        ),
    ),
    # gpt-oss with the old (hub) config keys rope_theta + rope_scaling: YaRN, attention sinks,
    # alternating sliding (window 5 < sequence) / full layers, biased router, top-3 of 6 softmax over
    # the chosen logits, clamped interleaved SwiGLU experts with biases. The expert gate/up weights are
    # 3x larger than elsewhere so some gate/up values pass the clamp limit of 7 (which GGUF cannot
    # carry: llama.cpp fixes it at 7).
    dict(
        name="gpt_oss",
        cls="GptOssForCausalLM",
        legacy_rope_keys=True,
        gain={"experts.gate_up_proj": 3.0},
        config=dict(
            vocab_size=320, hidden_size=48, intermediate_size=36, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=5,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            num_local_experts=6, num_experts_per_tok=3, swiglu_limit=7.0, rms_norm_eps=1e-5,
            rope_parameters=dict(
                rope_type="yarn", rope_theta=150000.0, factor=4.0, beta_fast=32.0, beta_slow=1.0,
                truncate=False, original_max_position_embeddings=8,
            ),
            max_position_embeddings=32, tie_word_embeddings=False,
        ),
    ),
    # MiniMax-M2: sigmoid + correction bias, always renormalised, top-3 of 8, q/k RMSNorm over all
    # heads, partial RoPE (rotary_dim 8 of head_dim 16).
    dict(
        name="minimax_m2",
        cls="MiniMaxM2ForCausalLM",
        gguf_config=dict(scoring_func="sigmoid", rotary_dim=8),
        config=dict(
            vocab_size=276, hidden_size=40, intermediate_size=26, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=8,
            num_experts_per_tok=3, rms_norm_eps=1e-6,
            rope_parameters=dict(rope_type="default", rope_theta=5e6, partial_rotary_factor=0.5),
            max_position_embeddings=256, tie_word_embeddings=False,
        ),
    ),
    # MiniMax-Text-01 as released: lightning attention in 7 of every 8 layers, softmax attention in the
    # 8th (the pattern llama.cpp assumes), residual alpha factors != 1 (all equal, betas 1, as the
    # converter requires), softmax top-2 of 4 renormalised, lightning block size 6 < sequence.
    dict(
        name="minimax_text01",
        cls="MiniMaxForCausalLM",
        gguf_skip=r"self_attn\.(slope_rate|query_decay|key_decay|diagonal_decay)$",
        gguf_config=dict(
            architectures=["MiniMaxText01ForCausalLM"], rotary_dim=8,
            attn_type_list=[0] * 7 + [1], layernorm_full_attention_alpha=1.7, layernorm_linear_attention_alpha=1.7,
            layernorm_mlp_alpha=1.7, layernorm_full_attention_beta=1.0, layernorm_linear_attention_beta=1.0,
            layernorm_mlp_beta=1.0,
        ),
        config=dict(
            vocab_size=284, hidden_size=32, intermediate_size=20, num_hidden_layers=8,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8,
            layer_types=["linear_attention"] * 7 + ["full_attention"], block_size=6,
            num_local_experts=4, num_experts_per_tok=2, rms_norm_eps=1e-5,
            full_attn_alpha_factor=1.7, full_attn_beta_factor=1.0, linear_attn_alpha_factor=1.7,
            linear_attn_beta_factor=1.0, mlp_alpha_factor=1.7, mlp_beta_factor=1.0,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
            max_position_embeddings=256, tie_word_embeddings=False,
        ),
    ),
    # GraniteMoE: top-2 of 5 by logit, softmax over the chosen; embedding/attention/residual/logit
    # multipliers != 1.
    dict(
        name="granitemoe",
        cls="GraniteMoeForCausalLM",
        config=dict(
            vocab_size=292, hidden_size=48, intermediate_size=34, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, num_local_experts=5, num_experts_per_tok=2,
            embedding_multiplier=3.0, attention_multiplier=0.3, residual_multiplier=0.6, logits_scaling=2.5,
            rms_norm_eps=1e-6, rope_parameters=dict(rope_type="default", rope_theta=10000.0),
            max_position_embeddings=256, tie_word_embeddings=True,
        ),
    ),
    # PhiMoE: sparsemixer top-2 of 6 (jitter eps 0.01), LayerNorm with bias, attention and lm_head bias.
    dict(
        name="phimoe",
        cls="PhimoeForCausalLM",
        # The hub name of the architecture, and Phi-3's original context (no long-context scaling here).
        gguf_config=dict(
            architectures=["PhiMoEForCausalLM"],
            rope_parameters=dict(rope_type="default", rope_theta=10000.0, original_max_position_embeddings=256),
        ),
        gguf_sentencepiece=True,
        config=dict(
            vocab_size=300, hidden_size=48, intermediate_size=38, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, num_local_experts=6, num_experts_per_tok=2,
            router_jitter_noise=0.01, attention_bias=True, lm_head_bias=True, rms_norm_eps=1e-5,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0), max_position_embeddings=256,
            tie_word_embeddings=False,
        ),
    ),
    # ERNIE-4.5-MoE: softmax, choice on prob + correction bias, renormalised with a clamp (norm_min),
    # top-3 of 6, one shared expert, MoE from layer 1, linear biases (use_bias).
    dict(
        name="ernie4_5_moe",
        cls="Ernie4_5_MoeForCausalLM",
        gguf_sentencepiece=True,
        config=dict(
            vocab_size=308, hidden_size=40, intermediate_size=52, moe_intermediate_size=18,
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
            moe_num_experts=6, moe_k=3, moe_num_shared_experts=1, moe_layer_start_index=1,
            moe_layer_end_index=2, moe_layer_interval=1, moe_norm_min=1e-12, use_bias=True,
            rms_norm_eps=1e-5, rope_parameters=dict(rope_type="default", rope_theta=500000.0),
            max_position_embeddings=256, tie_word_embeddings=True,
        ),
    ),
    # DeepSeek-V2-Lite's long-context RoPE: YaRN x4 from 64 positions with mscale = mscale_all_dim
    # = 0.707, which also sharpens the softmax (GGUF: rope.scaling.yarn_log_multiplier).
    dict(
        name="deepseek_v2_yarn",
        cls="DeepseekV2ForCausalLM",
        config=dict(
            vocab_size=296, hidden_size=48, intermediate_size=72, moe_intermediate_size=20,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=None,
            kv_lora_rank=24, qk_nope_head_dim=12, qk_rope_head_dim=8, v_head_dim=10,
            n_routed_experts=6, n_shared_experts=1, num_experts_per_tok=2, topk_method="greedy",
            n_group=1, topk_group=1, routed_scaling_factor=1.0, first_k_dense_replace=1,
            norm_topk_prob=False, rms_norm_eps=1e-6,
            rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                                 original_max_position_embeddings=64, beta_fast=32.0, beta_slow=1.0,
                                 mscale=0.707, mscale_all_dim=0.707),
            max_position_embeddings=256, tie_word_embeddings=False,
        ),
    ),
    # Phi-3.5-MoE's LongRoPE: per-frequency short factors and a cos/sin multiplier that
    # transformers' PhiMoE picks per forward call — short_mscale while the call stays within
    # original_max_position_embeddings (8 here), long_mscale once it reaches past. So the whole
    # sequence (13 tokens) runs with long_mscale and `prefix_logits` (the first 6 alone) with
    # short_mscale; decoding token by token would mix the two, so no incremental reference.
    # Not converted to GGUF: llama.cpp chooses long or short factors by context size instead.
    dict(
        name="phimoe_longrope",
        cls="PhimoeForCausalLM",
        incremental=False,
        gguf=False,
        prefix=6,
        config=dict(
            vocab_size=300, hidden_size=48, intermediate_size=38, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, num_local_experts=6, num_experts_per_tok=2,
            router_jitter_noise=0.01, attention_bias=True, lm_head_bias=True, rms_norm_eps=1e-5,
            rope_parameters=dict(rope_type="longrope", rope_theta=10000.0, original_max_position_embeddings=8,
                                 short_factor=[1.0, 1.05, 1.3, 2.0, 3.5, 6.0],
                                 long_factor=[1.0, 1.5, 3.0, 6.0, 12.0, 24.0],
                                 short_mscale=1.1, long_mscale=1.35),
            max_position_embeddings=256, tie_word_embeddings=False,
        ),
    ),
]


def randomize(model: torch.nn.Module) -> None:
    """O(1)-scale random weights: matrices ~ N(0, 1/fan_in), embeddings ~ N(0, 0.3^2), norm weights
    around 1, biases ~ N(0, 0.1^2), attention sinks ~ N(0, 1), router correction biases ~ U(0, 0.3)
    (large enough to change choices). Buffers other than the correction bias (e.g. MiniMax's decay
    tables) keep their computed values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "correction_bias" in name:
                p.copy_(0.3 * torch.rand_like(p))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias") or name.endswith("_bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif name.endswith("sinks"):
                p.copy_(torch.randn_like(p))
            elif "embed_tokens" in name:
                p.copy_(0.3 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / np.sqrt(p.shape[-1]))
        for name, b in model.named_buffers():
            if "correction_bias" in name:
                b.copy_(0.3 * torch.rand_like(b))


def write_tokenizer(hf_dir: Path) -> None:
    """A byte-level BPE (256 byte tokens, a few merges, GLM's special tokens) so llama.cpp's converter
    has a vocabulary; it pads to the model's vocab_size with [PAD] tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_chars = list(bytes_to_unicode().values())
    vocab = {ch: i for i, ch in enumerate(byte_chars)}
    merges = []
    for pair in ["th", "he", "in", "er", "an", "Ġt", "Ġa", "on"]:
        a, b = pair[:-1], pair[-1]
        merges.append((a, b))
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    fast.save_pretrained(hf_dir)


def use_legacy_rope_keys(config_path: Path) -> None:
    """Rewrites transformers-5 `rope_parameters` into the older `rope_theta` + `rope_scaling` keys that
    checkpoints on the hub carry."""
    cfg = json.loads(config_path.read_text())
    rope = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rope.pop("rope_theta")
    if rope.get("rope_type", "default") != "default":
        cfg["rope_scaling"] = rope
    config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def convert_to_gguf(hf_dir: Path, out: Path, variant: dict) -> str:
    """Runs llama.cpp's converter (F32) on a copy of hf_dir; returns "" or why it failed."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "model"
        shutil.copytree(hf_dir, work)
        # Bridge config keys the converter reads from hub checkpoints but transformers 5 no longer
        # writes (scoring_func, rotary_dim, MiniMax-Text-01's original keys and architecture name).
        cfg_path = work / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.update(variant.get("gguf_config", {}))
        cfg_path.write_text(json.dumps(cfg, indent=2))
        if variant.get("gguf_sentencepiece"):
            # These converters read only a SentencePiece vocabulary.
            from gen_model_fixtures import tiny_sentencepiece
            tiny_sentencepiece(work / "tokenizer.model")
        if not (work / "model.safetensors.index.json").exists():
            from safetensors import safe_open
            with safe_open(work / "model.safetensors", "np") as f:
                weight_map = {k: "model.safetensors" for k in f.keys()}
            (work / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        # The converter identifies BPE pre-tokenizers by hashing a test text's ids; this tokenizer is
        # unknown to it, so its pre-tokenizer is labelled explicitly as GPT-2's (which it is).
        # Tensors matching `gguf_skip` are buffers transformers computes and saves (MiniMax's decay
        # tables) that original checkpoints do not have; the converter has no name for them.
        runner = (
            "import re, sys\n"
            "llama_cpp, skip = sys.argv[1], sys.argv[2]\n"
            "sys.path.insert(0, llama_cpp)\n"
            "sys.argv = [llama_cpp + '/convert_hf_to_gguf.py'] + sys.argv[3:]\n"
            "import convert_hf_to_gguf as c\n"
            "from conversion.base import TextModel\n"
            "TextModel.get_vocab_base_pre = lambda self, tokenizer: 'gpt-2'\n"
            "original_filter = TextModel.filter_tensors.__func__\n"
            "def filter_tensors(cls, item):\n"
            "    return None if skip and re.search(skip, item[0]) else original_filter(cls, item)\n"
            "TextModel.filter_tensors = classmethod(filter_tensors)\n"
            "c.main()\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", runner, str(LLAMA_CPP), variant.get("gguf_skip", ""), str(work),
             "--outfile", str(out), "--outtype", "f32"],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            out.unlink(missing_ok=True)
            lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
            return "convert_hf_to_gguf.py failed: " + (lines[-1] if lines else f"exit {proc.returncode}")
    return ""


def layer_index(module_name: str) -> int:
    return int(re.search(r"layers\.(\d+)\.", module_name + ".").group(1))


def capture_moe(model: torch.nn.Module) -> tuple[dict, list]:
    """Hooks every MoE block: its input/output, its router's logits, and the (ids, weights) its experts
    receive — exactly what the model's own routing function chose."""
    records: dict[int, dict] = {}
    handles = []
    for name, module in model.named_modules():
        router = getattr(module, "gate", None) or getattr(module, "router", None)
        if getattr(module, "experts", None) is None or router is None:
            continue
        rec = records.setdefault(layer_index(name), {})

        def block_hook(_m, args, output, rec=rec):
            rec["moe_in"] = args[0].detach().reshape(-1, args[0].shape[-1]).clone()
            out = output[0] if isinstance(output, tuple) else output
            rec["moe_out"] = out.detach().reshape(-1, out.shape[-1]).clone()

        def router_hook(_m, _args, output, rec=rec):
            rec["logits"] = output[0].detach().float().reshape(-1, output[0].shape[-1]).clone()

        def experts_hook(_m, args, rec=rec):
            rec["ids"] = args[1].detach().clone()
            rec["weights"] = args[2].detach().float().clone()

        handles.append(module.register_forward_hook(block_hook))
        handles.append(router.register_forward_hook(router_hook))
        handles.append(module.experts.register_forward_pre_hook(experts_hook))
    return records, handles


def routing_description(cls: str, cfg: dict) -> dict:
    """How the routers of this model choose and weight experts, in the terms of conch's RouterConfig."""
    get = cfg.get
    if cls in ("MixtralForCausalLM", "MiniMaxForCausalLM"):
        return dict(scoring="softmax", top_k=get("num_experts_per_tok"), normalize=True)
    if cls in ("Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM", "OlmoeForCausalLM"):
        return dict(scoring="softmax", top_k=get("num_experts_per_tok"), normalize=get("norm_topk_prob"))
    if cls == "DeepseekV2ForCausalLM":
        grouped = get("topk_method") == "group_limited_greedy"
        return dict(scoring="softmax", top_k=get("num_experts_per_tok"), normalize=False,
                    n_group=get("n_group") if grouped else 1, topk_group=get("topk_group") if grouped else 1,
                    group_score="max", routed_scaling_factor=get("routed_scaling_factor"))
    if cls in ("DeepseekV3ForCausalLM", "Glm4MoeForCausalLM"):
        return dict(scoring="sigmoid", top_k=get("num_experts_per_tok"), normalize=get("norm_topk_prob"),
                    n_group=get("n_group"), topk_group=get("topk_group"), group_score="sum_top2",
                    routed_scaling_factor=get("routed_scaling_factor"), correction_bias=True)
    if cls == "MiniMaxM2ForCausalLM":
        return dict(scoring="sigmoid", top_k=get("num_experts_per_tok"), normalize=True, correction_bias=True)
    if cls in ("GptOssForCausalLM", "GraniteMoeForCausalLM"):
        return dict(scoring="softmax_of_top_k", top_k=get("num_experts_per_tok"), normalize=False)
    if cls == "PhimoeForCausalLM":
        return dict(scoring="sparsemixer", top_k=2, jitter_eps=get("router_jitter_noise"))
    if cls == "Ernie4_5_MoeForCausalLM":
        return dict(scoring="softmax", top_k=get("moe_k"), normalize=True, normalize_min=get("moe_norm_min"),
                    correction_bias=True)
    raise ValueError(cls)


def correction_bias(model: torch.nn.Module, layer: int) -> np.ndarray | None:
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if "correction_bias" in name and layer_index(name) == layer:
            return t.detach().float().reshape(-1).numpy()
    return None


def incremental_max_diff(model, tokens: list[int], full: np.ndarray) -> float:
    """Largest |logit| difference between a prefill + one-token decode steps and the full pass."""
    ids = torch.tensor([tokens])
    with torch.no_grad():
        out = model(ids[:, :PREFILL], position_ids=torch.arange(PREFILL)[None], use_cache=True)
        rows = [out.logits[0]]
        cache = out.past_key_values
        for pos in range(PREFILL, len(tokens)):
            out = model(ids[:, pos:pos + 1], position_ids=torch.tensor([[pos]]), past_key_values=cache,
                        use_cache=True)
            cache = out.past_key_values
            rows.append(out.logits[0])
    inc = torch.cat(rows).float().numpy()
    return float(np.abs(inc - full).max())


def f32(path: Path, array) -> None:
    np.ascontiguousarray(array, dtype="<f4").tofile(path)


def build(variant: dict, tokens: list[int]) -> dict:
    name, cls = variant["name"], variant["cls"]
    dest = OUT / name
    if dest.exists():
        shutil.rmtree(dest)
    hf_dir = dest / "hf"
    hf_dir.mkdir(parents=True)
    vocab = variant["config"]["vocab_size"]

    model_cls = getattr(transformers, cls)
    config_cls = getattr(transformers, variant.get("config_cls", cls.replace("ForCausalLM", "Config")))
    config = config_cls(**variant["config"], bos_token_id=264, eos_token_id=264, pad_token_id=264)
    model = model_cls(config).float().eval()
    randomize(model)
    with torch.no_grad():
        for pattern, gain in variant.get("gain", {}).items():
            for pname, p in model.named_parameters():
                if pname.endswith(pattern):
                    p.mul_(gain)
    model.save_pretrained(hf_dir)
    (hf_dir / "generation_config.json").unlink(missing_ok=True)
    if variant.get("legacy_rope_keys"):
        use_legacy_rope_keys(hf_dir / "config.json")
    write_tokenizer(hf_dir)

    # References come from the saved directory, so the fixture is what transformers reads back.
    reloaded = model_cls.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="eager",
                                         experts_implementation="eager").eval()
    records, handles = capture_moe(reloaded)
    with torch.no_grad():
        logits = reloaded(torch.tensor([tokens]), position_ids=torch.arange(len(tokens))[None]).logits[0].float().numpy()
    for h in handles:
        h.remove()
    assert logits.shape == (len(tokens), vocab)
    f32(dest / "logits.f32", logits)
    inc_diff = incremental_max_diff(reloaded, tokens, logits) if variant.get("incremental", True) else None
    prefix_len = variant.get("prefix")
    if prefix_len:
        with torch.no_grad():
            head = reloaded(torch.tensor([tokens[:prefix_len]]),
                            position_ids=torch.arange(prefix_len)[None]).logits[0]
        f32(dest / "prefix_logits.f32", head.float().numpy())

    router_dir = dest / "router"
    router_dir.mkdir()
    moe_layers = []
    for layer in sorted(records):
        rec = records[layer]
        ids = rec["ids"].numpy().astype(np.int64)
        weights = rec["weights"].numpy()
        # Order within a token's choice is unspecified (topk(sorted=False)); store by expert id.
        order = np.argsort(ids, axis=-1, kind="stable")
        ids = np.take_along_axis(ids, order, -1)
        weights = np.take_along_axis(weights, order, -1)
        prefix = f"L{layer}_"
        f32(router_dir / (prefix + "logits.f32"), rec["logits"].numpy())
        np.ascontiguousarray(ids, dtype="<i4").tofile(router_dir / (prefix + "ids.i32"))
        f32(router_dir / (prefix + "weights.f32"), weights)
        f32(router_dir / (prefix + "moe_in.f32"), rec["moe_in"].numpy())
        f32(router_dir / (prefix + "moe_out.f32"), rec["moe_out"].numpy())
        entry = dict(layer=layer, n_expert=int(rec["logits"].shape[-1]), top_k=int(ids.shape[-1]),
                     logits=f"router/{prefix}logits.f32", ids=f"router/{prefix}ids.i32",
                     weights=f"router/{prefix}weights.f32", moe_in=f"router/{prefix}moe_in.f32",
                     moe_out=f"router/{prefix}moe_out.f32")
        bias = correction_bias(reloaded, layer)
        if bias is not None:
            f32(router_dir / (prefix + "correction_bias.f32"), bias)
            entry["correction_bias"] = f"router/{prefix}correction_bias.f32"
        moe_layers.append(entry)

    gguf_note = (convert_to_gguf(hf_dir, dest / "model.gguf", variant) if variant.get("gguf", True)
                 else "not converted (see the variant's comment)")
    cfg = json.loads((hf_dir / "config.json").read_text())
    reference = {
        "arch": cls,
        "tokens": tokens,
        "vocab_size": vocab,
        "hidden_size": cfg["hidden_size"],
        "logits": "logits.f32",
        "incremental_max_abs_diff": inc_diff,
        "incremental_prefill": PREFILL,
        "routing": routing_description(cls, cfg),
        "moe_layers": moe_layers,
        "gguf": not gguf_note,
        "gguf_note": gguf_note,
        "legacy_rope_keys": bool(variant.get("legacy_rope_keys")),
    }
    if prefix_len:
        reference.update(prefix_logits="prefix_logits.f32", prefix_tokens=prefix_len)
    (dest / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"{name}: max |logit| {np.abs(logits).max():.3f}, incremental diff {inc_diff if inc_diff is None else f'{inc_diff:.2e}'}, "
          f"moe layers {[e['layer'] for e in moe_layers]}, gguf: {gguf_note or 'ok'}")
    return reference


def router_cases() -> None:
    """fixtures/moe/router_cases.json: transformers' own router modules on random logits for settings the
    tiny models leave unexercised (near-ties under PhiMoE's sparsemixer with a large jitter eps, ERNIE's
    clamped renormalisation, plain greedy DeepSeek-V2, DeepSeek-V3 groups without renormalisation,
    gpt-oss's biased router). Each router's weight is the identity, so its input is its logits."""
    from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2TopkRouter
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter
    from transformers.models.ernie4_5_moe.modeling_ernie4_5_moe import Ernie4_5_MoeTopKRouter
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssTopKRouter
    from transformers.models.phimoe.modeling_phimoe import sparsemixer

    torch.manual_seed(77)
    n_tokens = 24
    cases = []

    def record(name, routing, logits, weights, ids, bias=None):
        order = torch.argsort(ids, dim=-1, stable=True)
        case = dict(name=name, routing=routing, n_expert=logits.shape[-1],
                    logits=[float(v) for v in logits.reshape(-1)],
                    ids=[int(v) for v in torch.gather(ids, -1, order).reshape(-1)],
                    weights=[float(v) for v in torch.gather(weights.float(), -1, order).reshape(-1)])
        if bias is not None:
            case["correction_bias"] = [float(v) for v in bias.reshape(-1)]
        cases.append(case)

    def identity_router(router, n_expert):
        with torch.no_grad():
            router.weight.copy_(torch.eye(n_expert))
        return router

    # PhiMoE: logits with near-ties so the relative 2·eps window keeps several experts in the softmax.
    logits = torch.randn(n_tokens, 6)
    logits[:, 3] = logits.max(dim=-1).values * (1 - 0.3 * torch.rand(n_tokens))
    logits[:, 5] = logits[:, 3] - 0.2 * torch.rand(n_tokens)
    with torch.no_grad():
        weights, ids = sparsemixer(logits, jitter_eps=0.3, training=False, top_k=2)
    record("phimoe_sparsemixer_eps0.3", dict(scoring="sparsemixer", top_k=2, jitter_eps=0.3), logits, weights, ids)

    # ERNIE: sums of the top-2 of 16 probabilities often fall below norm_min 0.35.
    cfg = transformers.Ernie4_5_MoeConfig(hidden_size=16, moe_num_experts=16, moe_k=2, moe_norm_min=0.35,
                                        num_attention_heads=2, num_key_value_heads=2)
    router = identity_router(Ernie4_5_MoeTopKRouter(cfg), 16)
    bias = 0.05 * torch.rand(1, 16)
    with torch.no_grad():
        router.moe_statics.e_score_correction_bias.copy_(bias)
        logits = 0.7 * torch.randn(n_tokens, 16)
        _, weights, ids = router(logits)
    record("ernie_norm_min", dict(scoring="softmax", top_k=2, normalize=True, normalize_min=0.35,
                                  correction_bias=True), logits, weights, ids, bias=bias)

    # DeepSeek-V2 greedy: no groups, scaled, never renormalised.
    cfg = transformers.DeepseekV2Config(hidden_size=10, n_routed_experts=10, num_experts_per_tok=4,
                                        topk_method="greedy", routed_scaling_factor=0.8,
                                        num_attention_heads=2, num_key_value_heads=2)
    router = identity_router(DeepseekV2TopkRouter(cfg), 10)
    with torch.no_grad():
        logits = torch.randn(n_tokens, 10)
        _, weights, ids = router(logits)
    record("deepseek_v2_greedy", dict(scoring="softmax", top_k=4, normalize=False, routed_scaling_factor=0.8),
           logits, weights, ids)

    # DeepSeek-V3: 16 experts in 8 groups keeping 3, top-4, not renormalised.
    cfg = transformers.DeepseekV3Config(hidden_size=16, n_routed_experts=16, num_experts_per_tok=4, n_group=8,
                                        topk_group=3, norm_topk_prob=False, routed_scaling_factor=1.3,
                                        num_attention_heads=2, num_key_value_heads=2)
    router = identity_router(DeepseekV3TopkRouter(cfg), 16)
    bias = 0.2 * torch.randn(16)
    with torch.no_grad():
        router.e_score_correction_bias.copy_(bias)
        logits = torch.randn(n_tokens, 16)
        _, weights, ids = router(logits)
    record("deepseek_v3_groups_unnormalised",
           dict(scoring="sigmoid", top_k=4, normalize=False, n_group=8, topk_group=3, group_score="sum_top2",
                routed_scaling_factor=1.3, correction_bias=True), logits, weights, ids, bias=bias)

    # gpt-oss: the router's bias is part of the recorded logits.
    cfg = transformers.GptOssConfig(hidden_size=12, num_local_experts=12, num_experts_per_tok=4,
                                    num_attention_heads=2, num_key_value_heads=2, head_dim=6)
    router = identity_router(GptOssTopKRouter(cfg), 12)
    logit_bias = 0.5 * torch.randn(12)
    with torch.no_grad():
        router.bias.copy_(logit_bias)
        hidden = torch.randn(n_tokens, 12)
        logits, weights, ids = router(hidden)
    record("gpt_oss_biased", dict(scoring="softmax_of_top_k", top_k=4, normalize=False), logits, weights, ids)

    (OUT / "router_cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    print(f"router cases: {[c['name'] for c in cases]}")


def main() -> None:
    wanted = set(sys.argv[1:])
    unknown = wanted - {v["name"] for v in VARIANTS} - {"router_cases"}
    if unknown:
        sys.exit(f"unknown variants: {sorted(unknown)}")
    rng = np.random.default_rng(4321)
    tokens = [int(t) for t in rng.integers(0, 272, SEQ_LEN)]
    for index, variant in enumerate(VARIANTS):
        if wanted and variant["name"] not in wanted:
            continue
        torch.manual_seed(2000 + index)
        build(variant, tokens)
    if not wanted or "router_cases" in wanted:
        router_cases()


if __name__ == "__main__":
    main()
