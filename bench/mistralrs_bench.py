#!/usr/bin/env python3
"""One measured run of mistral.rs (the PyPI wheel `mistralrs`, CPU) on a GGUF file: prompt processing
(pp) and generation (tg) speed, as close to llama-bench's definitions as its Python API allows.

Run it with the Python that has mistralrs==0.9.5 installed; bench/compare.py does, as
    RAYON_NUM_THREADS=N taskset -c 0-(N-1) PY bench/mistralrs_bench.py --model F.gguf --pp 512 --tg 128 \
        --text fixtures/text/kjv-genesis-1-12.txt
The last line of stdout is one JSON object: pp_tokens_per_s, tg_tokens_per_s and what they came from,
or {"error": ...} with a non-zero exit status.

Definitions (mistral.rs takes text, not token ids, so the prompt is real text cut to the length):
- pp: a completion request whose prompt is `--pp` tokens of the text and max_tokens=1, on a runner with
  the prefix cache off; speed = usage.prompt_tokens / usage.total_prompt_time_sec (the engine's own
  timing of the prompt step).
- tg: a request with a one-word prompt, greedy, ignore_eos, max_tokens=`--tg`; speed =
  usage.completion_tokens / usage.total_completion_time_sec (the engine's own timing of the decode
  steps). llama-bench's tg starts from an empty cache too.
Both are run once as a warm-up first (tg shortened), like llama-bench and `conch bench`.
"""
import argparse
import json
import os
import sys
import time
from importlib.metadata import version


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--text", required=True, help="text the prompt is cut from")
    args = ap.parse_args()
    try:
        result = measure(args)
    except Exception as e:  # any failure of the engine is a result to report, not a crash
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""  # drop Rust backtraces
        print(json.dumps({"error": f"{type(e).__name__}: {first_line}"}))
        sys.exit(1)
    print(json.dumps(result))


def measure(args):
    import mistralrs as mr

    model = os.path.abspath(args.model)
    if not os.path.isfile(model):
        raise FileNotFoundError(model)
    t0 = time.perf_counter()
    runner = mr.Runner(
        which=mr.Which.GGUF(quantized_model_id=os.path.dirname(model), quantized_filename=os.path.basename(model)),
        max_seqs=1,
        prefix_cache_n=0,  # a cached prefix would skip the prompt work being measured
    )
    load_s = time.perf_counter() - t0
    with open(args.text, encoding="utf-8") as f:
        text_ids = runner.tokenize_text(f.read(), False, None)
    if not text_ids:
        raise ValueError(f"{args.text}: no tokens")

    def prompt_of(n, offset):
        ids = [text_ids[(offset + i) % len(text_ids)] for i in range(n)]
        return runner.detokenize_text(ids, False)

    def complete(prompt, max_tokens):
        req = mr.CompletionRequest(prompt=prompt, model="default", max_tokens=max_tokens, temperature=0.0,
                                   ignore_eos=True)
        return runner.send_completion_request(req).usage

    result = {"mistralrs_version": version("mistralrs"), "rayon_num_threads": os.environ.get("RAYON_NUM_THREADS"),
              "load_s": load_s}
    if args.pp > 0:
        complete(prompt_of(args.pp, len(text_ids) // 2), 1)  # warm-up, a different text
        u = complete(prompt_of(args.pp, 0), 1)
        result.update(pp_tokens_per_s=u.prompt_tokens / u.total_prompt_time_sec, pp_prompt_tokens=u.prompt_tokens,
                      pp_time_s=u.total_prompt_time_sec, pp_reported_tok_per_s=u.avg_prompt_tok_per_sec)
    if args.tg > 0:
        complete("The", min(args.tg, 16))  # warm-up
        u = complete("The", args.tg)
        result.update(tg_tokens_per_s=u.completion_tokens / u.total_completion_time_sec,
                      tg_completion_tokens=u.completion_tokens, tg_time_s=u.total_completion_time_sec,
                      tg_reported_tok_per_s=u.avg_compl_tok_per_sec, tg_prompt_tokens=u.prompt_tokens)
    return result


if __name__ == "__main__":
    main()
