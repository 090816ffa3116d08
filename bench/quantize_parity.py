#!/usr/bin/env python3
"""`conch quantize` against llama.cpp's `llama-quantize` on the same F16 model: are the files
identical, and what perplexity does each give in llama.cpp and in Conch? Python 3 standard
library only; reuses bench/compare.py's builds of both engines.

    python3 bench/quantize_parity.py [--types Q8_0,Q4_0,Q4_K,Q6_K] [--ctx 512] [--threads 2]

The F16 source is SmolLM2-135M-Instruct widened from its shipped Q4_1 by llama-quantize
(no F16 original is reachable offline; the widening is exact, so both quantizers see the same
numbers). Conch's `Q4_K` is llama.cpp's `Q4_K_S` mix. Writes bench/quantize.md (or --out).
"""
import argparse
import datetime
import filecmp
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import compare  # noqa: E402

LLAMA_NAMES = {"Q8_0": "Q8_0", "Q4_0": "Q4_0", "Q4_K": "Q4_K_S", "Q6_K": "Q6_K"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default="Q8_0,Q4_0,Q4_K,Q6_K")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--out", default=str(BENCH / "quantize.md"))
    args = ap.parse_args()
    started = datetime.datetime.now(datetime.timezone.utc)

    conch = compare.Conch(not args.no_build, 3600)
    llama = compare.LlamaCpp(3600)
    for engine in (conch, llama):
        if engine.error:
            sys.exit(f"{engine.name}: {engine.error}")
    shipped = compare.fetch_models()["smollm2"]
    work = compare.MODELS / "quantize-parity"
    work.mkdir(parents=True, exist_ok=True)
    f16 = work / "SmolLM2-135M-Instruct.F16.gguf"
    err = llama.quantize(shipped, f16, "F16")
    if err:
        sys.exit(err)

    lines = ["# `conch quantize` vs `llama-quantize`\n",
             f"Run {started:%Y-%m-%d %H:%M} UTC on {compare.machine()}.  ",
             f"Command: `python3 bench/quantize_parity.py {' '.join(sys.argv[1:])}`  ",
             f"Conch {conch.version}; llama.cpp {llama.version}.\n",
             f"Source: `{f16.name}` (SmolLM2-135M-Instruct Q4_1 as shipped, widened to F16 by llama-quantize). "
             f"Perplexity on `{compare.TEXT.relative_to(compare.ROOT)}`, ctx {args.ctx}, {args.threads} threads, "
             "llama.cpp's method (second half of each chunk scored).\n",
             "| type | files identical | PPL llama.cpp (conch file) | PPL llama.cpp (llama file) | "
             "PPL conch (conch file) | PPL conch (llama file) | largest gap |",
             "|---|---|---|---|---|---|---|"]
    for qtype in args.types.split(","):
        ours = work / f"conch.{qtype}.gguf"
        theirs = work / f"llama.{qtype}.gguf"
        if not ours.exists():
            p = compare.run([conch.exe, "quantize", f16, ours, qtype, "--threads", args.threads], 1800)
            if p.failure():
                sys.exit(f"conch quantize {qtype}: {p.failure()}")
        err = llama.quantize(f16, theirs, LLAMA_NAMES[qtype])
        if err:
            sys.exit(err)
        same = filecmp.cmp(ours, theirs, shallow=False)
        ppl = {}
        for engine in (llama, conch):
            for name, path in (("conch", ours), ("llama", theirs)):
                r = engine.perplexity(path, args.ctx, args.threads)
                if not isinstance(r, tuple):
                    sys.exit(f"{engine.name} perplexity of {path.name}: {r.error}")
                ppl[(engine.name, name)] = r[0]
        values = list(ppl.values())
        gap = (max(values) - min(values)) / min(values)
        lines.append(f"| {qtype} | {'yes' if same else 'NO'} | {ppl[('llama.cpp', 'conch')]:.4f} | "
                     f"{ppl[('llama.cpp', 'llama')]:.4f} | {ppl[('conch', 'conch')]:.4f} | "
                     f"{ppl[('conch', 'llama')]:.4f} | {gap * 100:.3f}% |")
        print(lines[-1], flush=True)
    lines.append("\nThe issue's bar: each type within 0.5% of llama-quantize's file, in both engines.")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
