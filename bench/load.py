#!/usr/bin/env python3
"""Serving load, side by side: `conch serve` and llama.cpp's `llama-server` on the same GGUF file
with the same number of parallel slots and threads, loopback only, bounded in requests and time.
Python 3 standard library only.

    python3 bench/load.py                                  # SmolLM2 Q4_1 and the synthetic MoE (Q8_0)
    python3 bench/load.py --workloads qwen3moe-1.3b-a0.25b-q8_0 --concurrency 8 --requests 16

For each workload and concurrency level (1, 8, 32) each server gets the same requests (streamed
/v1/completions, a distinct ~`--prompt-tokens` prompt each, `--max-tokens` tokens, greedy,
end-of-sequence ignored) from that many client threads, and reports aggregate generated tokens/s,
p50/p99 time to first token and p50/p99 inter-token latency. Then the prefix-cache check: a
~1,000-token shared system prompt, requests sent one after another with different questions;
the TTFT of the later ones over the first shows what the prefix cache saves.
Writes bench/load.md (or --out) with the commands and the machine.
"""
import argparse
import datetime
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import compare  # noqa: E402  (the engines' builds and the workload files)

DEFAULT_WORKLOADS = ["smollm2-q4_1", "qwen3moe-1.3b-a0.25b-q8_0"]
WORDS = ("river stone lantern harvest window letter mountain garden winter kitchen road bridge "
         "school market father mother village station summer music bicycle field ").split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prompt_text(seed, words):
    """A distinct prompt of about `words` words (no two share a long prefix)."""
    out = [f"Story {seed}:"]
    x = seed * 7919 + 1
    for _ in range(words):
        x = (x * 1103515245 + 12345) % (1 << 31)
        out.append(WORDS[x % len(WORDS)])
    return " ".join(out)


class Server:
    """A server process on a free loopback port, stopped on exit."""

    def __init__(self, name, argv_for_port, threads):
        self.name = name
        self.port = free_port()
        self.argv = [str(a) for a in argv_for_port(self.port)]
        self.proc = subprocess.Popen(compare.pinned(self.argv, threads), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.proc.stderr.read()[-2000:]}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{name} did not become healthy in 300 s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def complete(self, prompt, max_tokens):
        """One streamed completion: (time to first token, [gaps between tokens], tokens)."""
        body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                           "ignore_eos": True})
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        start = time.perf_counter()
        c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            raise RuntimeError(f"{self.name}: HTTP {r.status}: {r.read()[:500]!r}")
        stamps = []
        for raw in r:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if any(ch.get("text") for ch in chunk.get("choices", [])):
                stamps.append(time.perf_counter())
        c.close()
        if not stamps:
            raise RuntimeError(f"{self.name}: a reply with no text")
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        return stamps[0] - start, gaps, len(stamps)


def percentile(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def load_level(server, concurrency, requests, prompt_words, max_tokens, time_limit):
    """`requests` requests from `concurrency` threads; aggregate figures."""
    lock = threading.Lock()
    queue = list(range(requests))
    ttfts, gaps, errors = [], [], []
    tokens = [0]
    deadline = time.time() + time_limit

    def worker():
        while time.time() < deadline:
            with lock:
                if not queue:
                    return
                i = queue.pop()
            try:
                ttft, g, n = server.complete(prompt_text(1000 * concurrency + i, prompt_words), max_tokens)
            except Exception as e:  # noqa: BLE001  (reported in the table)
                with lock:
                    errors.append(str(e))
                continue
            with lock:
                ttfts.append(ttft)
                gaps.extend(g)
                tokens[0] += n

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {
        "done": len(ttfts), "errors": errors[:3], "tokens_per_s": tokens[0] / wall if wall else 0.0,
        "ttft_p50": percentile(ttfts, 50), "ttft_p99": percentile(ttfts, 99),
        "itl_p50": percentile(gaps, 50), "itl_p99": percentile(gaps, 99),
    }


def prefix_check(server, system_words, max_tokens, count):
    """TTFT of `count` sequential requests sharing a ~1,000-token prefix: (first, later mean)."""
    system = prompt_text(424242, system_words)
    ttfts = []
    for i in range(count):
        ttft, _, _ = server.complete(f"{system}\nQuestion {i}: what happened next?", max_tokens)
        ttfts.append(ttft)
    return ttfts[0], statistics.mean(ttfts[1:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS))
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests", type=int, default=0, help="requests per level (default 2 × concurrency, ≥ 4)")
    ap.add_argument("--prompt-words", type=int, default=96)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--ctx", type=int, default=2048, help="context per slot")
    ap.add_argument("--time-limit", type=float, default=300, help="seconds per level and server")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--out", default=str(BENCH / "load.md"))
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    started = datetime.datetime.now(datetime.timezone.utc)

    conch = compare.Conch(not args.no_build, 3600)
    llama = compare.LlamaCpp(3600)
    for engine in (conch, llama):
        if engine.error:
            sys.exit(f"{engine.name}: {engine.error}")
    workloads = compare.prepare_workloads(args.workloads.split(","), llama, conch)

    def servers(path, parallel):
        yield Server("conch", lambda port: [conch.exe, "serve", "--model", path, "--port", port, "--parallel",
                                            parallel, "--ctx", args.ctx, "--threads", args.threads,
                                            "--max-queue", 256], args.threads)
        yield Server("llama.cpp", lambda port: [llama.bin / "llama-server", "-m", path, "--port", port, "-np",
                                                parallel, "-c", args.ctx * parallel, "-t", args.threads,
                                                "--no-webui"], args.threads)

    lines = [f"# Serving load: Conch vs llama.cpp's server\n",
             f"Run {started:%Y-%m-%d %H:%M} UTC on {compare.machine()}; {args.threads} threads.  ",
             f"Command: `python3 bench/load.py {' '.join(sys.argv[1:])}`  ",
             f"Conch {conch.version}; llama.cpp {llama.version}.\n",
             f"Each level: streamed /v1/completions, ~{args.prompt_words}-word prompts, {args.max_tokens} tokens, "
             f"greedy; `--parallel`/`-np` = concurrency, context {args.ctx} per slot.\n"]
    for w in workloads:
        lines.append(f"\n## {w.name}\n\n{w.note}\n")
        if w.error:
            lines.append(f"Unavailable: {w.error}\n")
            continue
        lines.append("| concurrency | server | done | tokens/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | errors |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for level in levels:
            requests = args.requests or max(4, 2 * level)
            results = {}
            for server in servers(w.path, level):
                try:
                    results[server.name] = load_level(server, level, requests, args.prompt_words, args.max_tokens,
                                                      args.time_limit)
                finally:
                    server.stop()
                r = results[server.name]
                lines.append(f"| {level} | {server.name} | {r['done']}/{requests} | {r['tokens_per_s']:.1f} | "
                             f"{r['ttft_p50']:.3f} s | {r['ttft_p99']:.3f} s | {r['itl_p50'] * 1000:.1f} ms | "
                             f"{r['itl_p99'] * 1000:.1f} ms | {'; '.join(r['errors']) or ''} |")
                print(lines[-1], flush=True)
            a, b = results["conch"]["tokens_per_s"], results["llama.cpp"]["tokens_per_s"]
            lines.append(f"| {level} | **ratio** | | **{a / b:.2f}×** | | | | | |" if b else "")
        lines.append("\nShared ~1,000-token system prompt, 6 requests one after another (TTFT):\n")
        for server in servers(w.path, 1):
            try:
                first, later = prefix_check(server, 760, 8, 6)
            finally:
                server.stop()
            lines.append(f"- {server.name}: first {first:.3f} s, later {later:.3f} s "
                         f"(later/first = {later / first:.2f})")
            print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
