#!/usr/bin/env python3
"""Side-by-side speed, perplexity and peak memory of Conch, llama.cpp and mistral.rs on the same GGUF
files, runs alternated between the engines. Python 3 standard library only; the engines run as
subprocesses. How to run it and what each number means: bench/README.md.

    python3 bench/compare.py                      # the full run (pp512, tg128, 5 reps, 1 and 2 threads)
    python3 bench/compare.py --pp 64 --tg 16 --reps 1 --threads 1 --workloads smollm2-q4_1

Writes bench/results.md (or --out) and prints the same. Exits non-zero only when the harness itself
fails; an engine that fails to build, load or run is reported in the tables.
"""
import argparse
import datetime
import json
import math
import mmap
import os
import platform
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "work"
MODELS = WORK / "models"
TEXT = ROOT / "fixtures" / "text" / "kjv-genesis-1-12.txt"
MISTRALRS_VERSION = "0.9.5"
MISTRALRS_VENV = Path(os.environ.get("CONCH_MISTRALRS_VENV", "/opt/anchors"))
ENGINES = ("conch", "llama.cpp", "mistral.rs")
MOE_PRESET = "qwen3moe-1.3b-a0.25b"
# `conch synth` arguments of the synthetic MoE model and of its dense counterpart (same attention,
# one dense FFN as wide as the active experts); both are requantized to each listed type.
SYNTH_MODELS = {
    "qwen3moe-1.3b-a0.25b": ["--arch", "qwen3moe", "--preset", MOE_PRESET],
    # Dense counterparts of equal active and of equal total size (conch synth --list).
    "qwen3-dense-0.25b": ["--arch", "qwen3", "--preset", "qwen3-dense-0.25b"],
    "qwen3-dense-1.3b": ["--arch", "qwen3", "--preset", "qwen3-dense-1.3b"],
}
SYNTH_QTYPES = ("Q8_0", "Q4_K_M")
WORKLOAD_NAMES = ["smollm2-q4_1", "smollm2-q8_0", "smollm2-q4_k_m", "gemma3-270m-q4_k_m"] + [
    f"{model}-{qtype.lower()}" for model in SYNTH_MODELS for qtype in SYNTH_QTYPES]


class Unavailable(Exception):
    """A workload or an engine that cannot be used in this run; the message says why."""


# ---------------------------------------------------------------------------------------------
# Running a subprocess and measuring its peak memory and CPU time


@dataclass
class Proc:
    cmd: list
    rc: int
    out: str
    err: str
    wall_s: float
    cpu_s: float
    max_rss_kib: int
    timed_out: bool = False

    def failure(self):
        """None when the process succeeded, else a one-line reason with the tail of its output."""
        if self.timed_out:
            return f"timed out after {self.wall_s:.0f} s"
        if self.rc == 0:
            return None
        tail = [l for l in (self.err + "\n" + self.out).splitlines() if l.strip() and "INFO" not in l][-3:]
        what = f"killed by signal {-self.rc}" if self.rc < 0 else f"exit status {self.rc}"
        return f"{what}: " + " | ".join(t.strip()[:300] for t in tail)


def run(cmd, timeout, env=None, cwd=ROOT):
    """Runs cmd, returning its output, wall and CPU time and maximum resident set size (from wait4,
    so only this process and the children it waited for are counted)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        try:
            p = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=err, env=env, cwd=cwd)
        except OSError as e:
            return Proc(cmd, 127, "", f"cannot start {cmd[0]}: {e}", 0.0, 0.0, 0)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                break
            if time.perf_counter() - start > timeout:
                p.kill()
                timed_out = True
                _, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.02)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return Proc(cmd, p.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                    wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, timed_out)


def pinned(cmd, threads):
    """cmd restricted to the first `threads` CPUs, so every engine gets the same cores whatever its own
    thread control does."""
    if threads >= os.cpu_count() or not shutil.which("taskset"):
        return cmd
    return ["taskset", "-c", f"0-{threads - 1}"] + cmd


# ---------------------------------------------------------------------------------------------
# GGUF: the bytes of weights read per generated token

# ggml type id -> (elements per block, bytes per block)
GGML_BLOCKS = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17),
}
GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_gguf(path):
    """(metadata with scalar and string values, [(name, ggml type, n elements, size in bytes)])."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        pos = 0

        def take(fmt):
            nonlocal pos
            v = struct.unpack_from(fmt, m, pos)
            pos += struct.calcsize(fmt)
            return v[0]

        def string():
            nonlocal pos
            n = take("<Q")
            s = m[pos:pos + n].decode("utf-8", errors="replace")
            pos += n
            return s

        def value(t):
            if t in GGUF_SCALARS:
                return take(GGUF_SCALARS[t])
            if t == 8:
                return string()
            if t == 9:
                et, n = take("<I"), take("<Q")
                items = [value(et) for _ in range(n)]
                return items if n <= 16 else None  # long arrays (vocabularies) are skipped, not kept
            raise ValueError(f"{path}: unknown GGUF value type {t}")

        if m[:4] != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        pos = 4
        version, n_tensors, n_kv = take("<I"), take("<Q"), take("<Q")
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is not supported")
        meta = {}
        for _ in range(n_kv):
            key = string()
            meta[key] = value(take("<I"))
        infos = []
        for _ in range(n_tensors):
            name = string()
            dims = [take("<Q") for _ in range(take("<I"))]
            ggml_type, offset = take("<I"), take("<Q")
            infos.append((name, ggml_type, math.prod(dims), offset))
        align = meta.get("general.alignment", 32)
        data_start = (pos + align - 1) // align * align
        ends = sorted(o for _, _, _, o in infos)[1:] + [len(m) - data_start]
        next_offset = dict(zip(sorted(o for _, _, _, o in infos), ends))
        tensors = []
        for name, t, n, offset in infos:
            if t in GGML_BLOCKS:
                block, size = GGML_BLOCKS[t]
                nbytes = n // block * size
            else:  # a type this table lacks: the distance to the next tensor (at most alignment too much)
                nbytes = next_offset[offset] - offset
            tensors.append((name, t, n, nbytes))
        return meta, tensors


def weight_bytes_per_token(path):
    """Bytes of weights one decode step reads, and how they were counted. The token embedding table is
    only gathered (one row per token), unless the output projection is tied to it, in which case it is
    read whole as the output matrix. Of the routed experts' tensors only the active share counts."""
    meta, tensors = read_gguf(path)
    arch = meta.get("general.architecture", "")
    names = {n for n, *_ in tensors}
    tied = "output.weight" not in names
    n_expert = meta.get(f"{arch}.expert_count") or 0
    n_used = meta.get(f"{arch}.expert_used_count") or 0
    total = read = 0
    for name, _, _, nbytes in tensors:
        total += nbytes
        if name == "token_embd.weight" and not tied:
            continue
        if "_exps." in name and n_expert:
            read += nbytes * n_used / n_expert
        else:
            read += nbytes
    how = "tied embeddings, read as the output matrix" if tied else "token embedding table excluded (gathered)"
    if n_expert:
        how += f"; routed experts counted {n_used}/{n_expert}"
    return int(read), total, how


# ---------------------------------------------------------------------------------------------
# Memory bandwidth: a tiny C program, best of several passes over 256 MiB buffers

MEMBW_C = r"""
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define BYTES (256UL << 20)
static char *src, *dst; static int nthreads; static int mode; static pthread_barrier_t barrier;
static volatile uint64_t sink;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static void *worker(void *arg) {
    long id = (long)arg; size_t part = BYTES / nthreads, off = part * id;
    pthread_barrier_wait(&barrier);
    if (mode == 0) memcpy(dst + off, src + off, part);
    else { const uint64_t *p = (const uint64_t *)(src + off); uint64_t a = 0, b = 0, c = 0, d = 0;
           for (size_t i = 0; i < part / 8; i += 4) { a += p[i]; b += p[i + 1]; c += p[i + 2]; d += p[i + 3]; }
           sink += a + b + c + d; }
    pthread_barrier_wait(&barrier);
    return NULL;
}
int main(int argc, char **argv) {
    nthreads = atoi(argv[1]); int reps = atoi(argv[2]);
    src = aligned_alloc(4096, BYTES); dst = aligned_alloc(4096, BYTES);
    memset(src, 1, BYTES); memset(dst, 2, BYTES);
    pthread_t th[64]; pthread_barrier_init(&barrier, NULL, nthreads + 1);
    for (mode = 0; mode < 2; mode++) {
        double best = 1e9;
        for (int r = 0; r < reps; r++) {
            for (long i = 0; i < nthreads; i++) pthread_create(&th[i], NULL, worker, (void *)i);
            pthread_barrier_wait(&barrier); double t = now();
            pthread_barrier_wait(&barrier); t = now() - t;
            for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
            if (t < best) best = t;
        }
        /* copy counts bytes read plus bytes written (STREAM's convention); read counts bytes read */
        printf("%s %.3f\n", mode == 0 ? "copy" : "read", (mode == 0 ? 2.0 : 1.0) * BYTES / best / 1e9);
    }
    return 0;
}
"""


def memory_bandwidth(threads_list, reps=7):
    """{threads: {"copy": GB/s, "read": GB/s}}, or an error string."""
    exe = WORK / "membw"
    src = WORK / "membw.c"
    if not exe.exists() or not src.exists() or src.read_text() != MEMBW_C:
        src.write_text(MEMBW_C)
        p = run(["gcc", "-O3", "-march=native", "-pthread", "-o", exe, src], 120)
        if p.failure():
            return f"gcc failed: {p.failure()}"
    result = {}
    for t in threads_list:
        p = run(pinned([exe, t, reps], t), 300)
        if p.failure():
            return f"membw failed: {p.failure()}"
        result[t] = {k: float(v) for k, v in (line.split() for line in p.out.splitlines())}
    return result


# ---------------------------------------------------------------------------------------------
# Engines


@dataclass
class Engine:
    name: str
    version: str = "?"
    error: str = None  # set when the engine cannot run at all
    perplexity_gap: str = None  # set when the engine cannot score a text


@dataclass
class Sample:
    pp: float = None
    tg: float = None
    max_rss_kib: int = 0
    cpu_per_wall: float = 0.0
    error: str = None


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith(("{", "[")):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def git_commit():
    sha = run(["git", "rev-parse", "--short=12", "HEAD"], 30).out.strip() or "?"
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"], 30).out.strip()
    return sha + ("+uncommitted changes" if dirty else "")


class Conch(Engine):
    def __init__(self, build, timeout):
        super().__init__("conch")
        self.exe = ROOT / "target" / "release" / "conch"
        self.timeout = timeout
        if build:
            p = run(["cargo", "build", "--release", "-p", "conch-cli"], 3600)
            if p.failure():
                self.error = f"cargo build failed: {p.failure()}"
                return
        if not self.exe.exists():
            self.error = f"{self.exe} does not exist (build it, or drop --no-build)"
            return
        v = run([self.exe, "--version"], 30).out.strip()
        self.version = f"{v} (git {git_commit()})"

    def bench(self, model, pp, tg, threads):
        p = run(pinned([self.exe, "bench", "--model", model, "--pp", pp, "--tg", tg, "--threads", threads, "--reps", 1,
                        "--json"], threads), self.timeout)
        j = last_json(p.out)
        if p.failure() or not isinstance(j, dict):
            return sample_error(p, "no JSON in the output")
        return Sample(j.get("pp_tokens_per_s"), j.get("tg_tokens_per_s"), p.max_rss_kib, p.cpu_s / p.wall_s)

    def perplexity(self, model, ctx, threads):
        p = run(pinned([self.exe, "perplexity", "--model", model, "--file", TEXT, "--ctx", ctx, "--threads", threads],
                       threads), self.timeout)
        m = re.search(r"^perplexity:\s*([0-9.eE+-]+|nan|inf)", p.out, re.M)
        return (float(m.group(1)), p.max_rss_kib) if m and not p.failure() else sample_error(p, "no perplexity line")


class LlamaCpp(Engine):
    def __init__(self, timeout):
        super().__init__("llama.cpp")
        self.timeout = timeout
        p = run(["bash", BENCH / "build-llamacpp.sh"], 3600)
        if p.failure():
            self.error = f"build-llamacpp.sh failed: {p.failure()}"
            return
        self.bin = Path(p.out.strip().splitlines()[-1])
        v = run([self.bin / "llama-bench", "--version"], 30)
        sdist = re.search(r"^VERSION=(\S+)", (BENCH / "build-llamacpp.sh").read_text(), re.M)
        self.version = (f"llama-cpp-python {sdist.group(1) if sdist else '?'} sdist, native build with the AMX fix; "
                        + (" ".join((v.out + v.err).split()) or "?"))

    def bench(self, model, pp, tg, threads):
        p = run(pinned([self.bin / "llama-bench", "-m", model, "-p", pp, "-n", tg, "-t", threads, "-r", 1, "-o", "json"],
                       threads), self.timeout)
        j = last_json_array(p.out)
        if p.failure() or not isinstance(j, list):
            return sample_error(p, "no JSON in the output")
        s = Sample(max_rss_kib=p.max_rss_kib, cpu_per_wall=p.cpu_s / p.wall_s)
        for test in j:
            if test.get("n_prompt") and not test.get("n_gen"):
                s.pp = test["avg_ts"]
            elif test.get("n_gen") and not test.get("n_prompt"):
                s.tg = test["avg_ts"]
        return s

    def perplexity(self, model, ctx, threads):
        p = run(pinned([self.bin / "llama-perplexity", "-m", model, "-f", TEXT, "-c", ctx, "-t", threads], threads),
                self.timeout)
        m = re.search(r"Final estimate: PPL = ([0-9.]+|nan|inf)", p.out + p.err)
        return (float(m.group(1)), p.max_rss_kib) if m and not p.failure() else sample_error(p, "no PPL estimate")

    def quantize(self, src, dst, qtype):
        """Requantizes src into dst (kept between runs). Returns an error string or None."""
        if dst.exists():
            return None
        tmp = dst.with_suffix(".part")
        p = run([self.bin / "llama-quantize", "--allow-requantize", src, tmp, qtype, "2"], 1800)
        if p.failure():
            return f"llama-quantize {qtype} failed: {p.failure()}"
        tmp.rename(dst)
        return None


def last_json_array(text):
    """llama-bench -o json prints one JSON array over several lines."""
    start = text.find("[")
    try:
        return json.loads(text[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        return None


class MistralRs(Engine):
    def __init__(self, timeout):
        super().__init__("mistral.rs")
        self.timeout = timeout
        self.perplexity_gap = ("not measured: the mistralrs Python API returns log-probabilities of generated "
                               "tokens only, never of a given text")
        self.python = MISTRALRS_VENV / "bin" / "python"
        check = [self.python, "-c", "from importlib.metadata import version; print(version('mistralrs'))"]
        found = run(check, 60).out.strip() if self.python.exists() else ""
        if found != MISTRALRS_VERSION:
            p = run([sys.executable, "-m", "venv", MISTRALRS_VENV], 300)
            p = p if p.failure() else run([self.python, "-m", "pip", "install", "-q", f"mistralrs=={MISTRALRS_VERSION}"],
                                          1800)
            if p.failure():
                self.error = f"installing mistralrs=={MISTRALRS_VERSION} into {MISTRALRS_VENV} failed: {p.failure()}"
                return
            found = run(check, 60).out.strip()
        self.version = f"mistralrs {found} (PyPI wheel)"

    def bench(self, model, pp, tg, threads):
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        p = run(pinned([self.python, BENCH / "mistralrs_bench.py", "--model", model, "--pp", pp, "--tg", tg,
                        "--text", TEXT], threads), self.timeout, env=env)
        j = last_json(p.out)
        if not isinstance(j, dict) or "error" in j or p.failure():
            return Sample(error=(j or {}).get("error") or p.failure() or "no JSON in the output",
                          max_rss_kib=p.max_rss_kib)
        return Sample(j.get("pp_tokens_per_s"), j.get("tg_tokens_per_s"), p.max_rss_kib, p.cpu_s / p.wall_s)


def sample_error(p, otherwise):
    return Sample(error=p.failure() or otherwise, max_rss_kib=p.max_rss_kib)


# ---------------------------------------------------------------------------------------------
# Workloads


@dataclass
class Workload:
    name: str
    note: str
    path: Path = None
    error: str = None
    bytes_per_token: int = 0
    file_tensor_bytes: int = 0
    bytes_note: str = ""
    samples: dict = field(default_factory=dict)  # (engine, threads) -> [Sample]
    perplexity: dict = field(default_factory=dict)  # engine -> (ppl, max_rss_kib) or Sample with error


def fetch_models():
    p = run([ROOT / "scripts" / "fetch-models", "all"], 1800)
    if p.failure():
        raise Unavailable(f"scripts/fetch-models all failed: {p.failure()}")
    paths = [Path(l) for l in p.out.split()]
    found = {key: next((x for x in paths if marker in x.name), None) for key, marker in (("smollm2", "SmolLM2"),
                                                                                         ("gemma3", "gemma-3"))}
    missing = [k for k, v in found.items() if v is None]
    if missing:
        raise Unavailable(f"scripts/fetch-models all printed no path for {', '.join(missing)}")
    return found


def prepare_workloads(names, llama, conch):
    """Workload objects in the order asked for, each with a path or an error."""
    MODELS.mkdir(parents=True, exist_ok=True)
    try:
        shipped, fetch_error = fetch_models(), None
    except Unavailable as e:
        shipped, fetch_error = {}, str(e)

    def requantized(src, stem, qtype):
        if src is None:
            raise Unavailable(fetch_error or "source model missing")
        if llama.error:
            raise Unavailable(f"needs llama-quantize: {llama.error}")
        dst = MODELS / f"{stem}.{qtype}.gguf"
        err = llama.quantize(src, dst, qtype)
        if err:
            raise Unavailable(err)
        return dst

    def synthesized(model):
        out = MODELS / f"{model}.gguf"
        if not out.exists():
            if conch.error:
                raise Unavailable(f"needs `conch synth`: {conch.error}")
            p = run([conch.exe, "synth", *SYNTH_MODELS[model], "--out", out], 1800)
            if p.failure():
                out.unlink(missing_ok=True)
                raise Unavailable(f"skipped: `conch synth {' '.join(SYNTH_MODELS[model])}` failed: {p.failure()}")
        return out

    def shipped_model(key):
        if key not in shipped:
            raise Unavailable(fetch_error)
        return shipped[key]

    table = {
        "smollm2-q4_1": ("SmolLM2-135M-Instruct Q4_1, as shipped", lambda: shipped_model("smollm2")),
        "smollm2-q8_0": ("SmolLM2-135M-Instruct requantized Q4_1 → Q8_0 (llama-quantize --allow-requantize; "
                         "no F16 original is reachable, so it carries Q4_1's rounding)",
                         lambda: requantized(shipped.get("smollm2"), "SmolLM2-135M-Instruct", "Q8_0")),
        "smollm2-q4_k_m": ("SmolLM2-135M-Instruct requantized Q4_1 → Q4_K_M (as above; hidden size 576 is not a "
                           "multiple of 256, so most tensors fall back to Q5_0)",
                           lambda: requantized(shipped.get("smollm2"), "SmolLM2-135M-Instruct", "Q4_K_M")),
        "gemma3-270m-q4_k_m": ("Gemma 3 270M Q4_K_M, as shipped", lambda: shipped_model("gemma3")),
    }
    for model in SYNTH_MODELS:
        for qtype in SYNTH_QTYPES:
            table[f"{model}-{qtype.lower()}"] = (
                f"synthetic {model} (random weights, `conch synth`), quantized to {qtype} by llama-quantize",
                lambda model=model, qtype=qtype: requantized(synthesized(model), model, qtype))
    workloads = []
    for name in names:
        note, get_path = table[name]
        w = Workload(name, note)
        try:
            w.path = Path(get_path())
            w.bytes_per_token, w.file_tensor_bytes, w.bytes_note = weight_bytes_per_token(w.path)
        except (Unavailable, ValueError, OSError) as e:
            w.error = str(e)
        workloads.append(w)
    return workloads


# ---------------------------------------------------------------------------------------------
# The run and the report


def mean_sd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd, len(xs)


def fmt_mean_sd(v, reps):
    """mean ± sd, with the number of runs behind it when some failed."""
    return "—" if v is None else f"{v[0]:.1f} ± {v[1]:.1f}" + (f" (n={v[2]})" if v[2] < reps else "")


def ratio(a, b):
    return "—" if a is None or b is None or not b[0] else f"{a[0] / b[0]:.2f}"


def machine():
    model = "?"
    p = run(["lscpu"], 30)
    for line in p.out.splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    mem = "?"
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f"{kib / 2**20:.1f} GiB"
    except (OSError, AttributeError):
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8") if f" {f}" in flags]
    return f"{model}, {os.cpu_count()} logical CPUs, {mem} RAM, {platform.system()} {platform.release()}; " \
           f"ISA: {' '.join(isa) or '?'}"


def report(args, argv, started, engines, workloads, bandwidth):
    threads = args.threads
    lines = ["# Conch vs llama.cpp vs mistral.rs", "",
             f"Produced by `{' '.join(shlex.quote(a) for a in argv)}` (from the repository root), "
             f"started {started} UTC, took {args.elapsed_min:.1f} min. Load average at the start: {args.load_before:.1f} "
             f"({'an idle machine' if args.load_before < 0.5 else 'other work was running; treat the figures as rough'}).",
             "",
             f"- Machine: {machine()}"]
    if isinstance(bandwidth, dict):
        bw = "; ".join(f"{t} thread{'s' if t > 1 else ''}: read {b['read']:.1f} GB/s, copy {b['copy']:.1f} GB/s"
                       for t, b in bandwidth.items())
        lines.append(f"- Memory bandwidth (256 MiB buffers, best of 7; copy counts bytes read + written): {bw}")
    else:
        lines.append(f"- Memory bandwidth: {bandwidth}")
    for e in engines:
        lines.append(f"- {e.name}: {e.version}" + (f" — **unavailable**: {e.error}" if e.error else ""))
    lines += [f"- Settings: pp{args.pp}, tg{args.tg}, {args.reps} rep(s) per engine alternated run by run "
              f"(each rep is a fresh process with its own warm-up), threads {', '.join(map(str, threads))}, "
              f"every engine pinned to the first N CPUs with taskset (unpinned when N is all of them); "
              + ("no perplexity test." if args.no_ppl else
                 f"perplexity on `{TEXT.relative_to(ROOT)}` with ctx {args.ppl_ctx} and {max(threads)} thread(s)."),
              ""]

    lines += ["## Workloads", "", "| workload | file | weight bytes read / token | note |", "|---|---|---|---|"]
    for w in workloads:
        if w.error:
            lines.append(f"| {w.name} | — | — | **unavailable**: {w.error} |")
        else:
            lines.append(f"| {w.name} | `{w.path.name}` ({w.file_tensor_bytes / 2**20:.1f} MiB of tensors) | "
                         f"{w.bytes_per_token / 2**20:.1f} MiB ({w.bytes_note}) | {w.note} |")

    lines += ["", f"## Speed (tokens/s, mean ± sd over {args.reps} rep(s))", "",
              f"| workload | threads | engine | pp{args.pp} | tg{args.tg} | tg roofline | peak RSS MiB | CPU/wall |",
              "|---|---|---|---|---|---|---|---|"]
    failures = []
    for w in workloads:
        if w.error:
            continue
        for t in threads:
            roof = "—"
            if isinstance(bandwidth, dict) and w.bytes_per_token:
                roof = f"{bandwidth[t]['read'] * 1e9 / w.bytes_per_token:.0f}"
            for e in engines:
                samples = w.samples.get((e.name, t), [])
                errs = [s.error for s in samples if s.error]
                if e.error:
                    lines.append(f"| {w.name} | {t} | {e.name} | — | — | {roof} | — | — |")
                    continue
                pp, tg = mean_sd([s.pp for s in samples]), mean_sd([s.tg for s in samples])
                rss = max((s.max_rss_kib for s in samples), default=0)
                cpu = mean_sd([s.cpu_per_wall for s in samples if not s.error])
                lines.append(f"| {w.name} | {t} | {e.name} | {fmt_mean_sd(pp, args.reps)} | {fmt_mean_sd(tg, args.reps)} | {roof} | "
                             f"{rss / 1024:.0f} | {'—' if cpu is None else f'{cpu[0]:.2f}'} |")
                if errs:
                    failures.append(f"{e.name} on {w.name}, {t} thread(s), {len(errs)}/{len(samples)} run(s): {errs[0]}")

    if "conch" in {e.name for e in engines} and len(engines) > 1:
        lines += ["", "## Ratios (Conch ÷ other engine; above 1 means Conch is faster)", "",
                  "| workload | threads | pp conch/llama.cpp | tg conch/llama.cpp | pp conch/mistral.rs | tg conch/mistral.rs |",
                  "|---|---|---|---|---|---|"]
        for w in workloads:
            if w.error:
                continue
            for t in threads:
                m = {e: (mean_sd([s.pp for s in w.samples.get((e, t), [])]),
                         mean_sd([s.tg for s in w.samples.get((e, t), [])])) for e in ENGINES}
                c, l, r = m["conch"], m["llama.cpp"], m["mistral.rs"]
                lines.append(f"| {w.name} | {t} | {ratio(c[0], l[0])} | {ratio(c[1], l[1])} | {ratio(c[0], r[0])} | "
                             f"{ratio(c[1], r[1])} |")

    if not args.no_ppl:
        lines += ["", f"## Perplexity (ctx {args.ppl_ctx}, llama.cpp's method: second half of each chunk scored)", "",
                  "| workload | " + " | ".join(e.name for e in engines) + " |", "|---|" + "---|" * len(engines)]
        for w in workloads:
            if w.error:
                continue
            cells = []
            for e in engines:
                v = w.perplexity.get(e.name)
                if e.perplexity_gap:
                    cells.append("n/a")
                    failures.append(f"{e.name} perplexity: {e.perplexity_gap}")
                elif e.error or v is None:
                    cells.append("—")
                elif isinstance(v, Sample):
                    cells.append("failed")
                    failures.append(f"{e.name} perplexity on {w.name}: {v.error}")
                else:
                    cells.append(f"{v[0]:.4f} (peak RSS {v[1] / 1024:.0f} MiB)")
            lines.append(f"| {w.name} | " + " | ".join(cells) + " |")

    if failures:
        lines += ["", "## Failures and gaps", ""] + [f"- {f}" for f in dict.fromkeys(failures)]
    lines += ["", "## How to read this", "",
              "See bench/README.md. In short: pp = prompt tokens per second of one forward pass over the prompt "
              "into an empty cache; tg = tokens per second of single-token decode steps from an empty cache; "
              "roofline = read bandwidth ÷ weight bytes per token, the decode speed memory alone would allow "
              "(models whose weights fit in cache can exceed it); peak RSS includes each engine's process as a whole "
              "(for mistral.rs, the Python interpreter too); CPU/wall near the thread count means the engine used "
              "the threads it was given (it includes loading)."]
    return "\n".join(lines) + "\n"


def main():
    argv = [Path(sys.argv[0]).as_posix()] + sys.argv[1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pp", type=int, default=512, help="prompt tokens of the prefill test (default 512)")
    ap.add_argument("--tg", type=int, default=128, help="generated tokens of the decode test (default 128)")
    ap.add_argument("--reps", type=int, default=5, help="measured runs per engine, workload and thread count")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--workloads", default=",".join(WORKLOAD_NAMES),
                    help="comma-separated subset of " + ", ".join(WORKLOAD_NAMES))
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of " + ", ".join(ENGINES))
    ap.add_argument("--ppl-ctx", type=int, default=512, help="context of the perplexity test (default 512)")
    ap.add_argument("--no-ppl", action="store_true", help="skip the perplexity test")
    ap.add_argument("--no-build", action="store_true", help="use target/release/conch as it is")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds one engine run may take")
    ap.add_argument("--out", default=str(BENCH / "results.md"), help="where the Markdown report goes")
    args = ap.parse_args()
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if not args.threads or min(args.threads) < 1 or args.reps < 1 or args.pp < 0 or args.tg < 0:
        ap.error("--threads needs positive counts, --reps at least 1, --pp/--tg at least 0")
    names = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not names or any(n not in ENGINES for n in names):
        ap.error(f"--engines: choose among {', '.join(ENGINES)}")
    wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if not wanted or any(w not in WORKLOAD_NAMES for w in wanted):
        ap.error(f"--workloads: choose among {', '.join(WORKLOAD_NAMES)}")
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    args.load_before = os.getloadavg()[0]
    t_start = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", file=sys.stderr, flush=True)

    log("preparing engines")
    # llama.cpp and conch are prepared even when not compared: llama-quantize and `conch synth` make workloads.
    needs_synth = any(w.startswith(tuple(SYNTH_MODELS)) for w in wanted)
    llama = LlamaCpp(args.timeout)
    conch = Conch(not args.no_build and ("conch" in names or needs_synth), args.timeout)
    built = {"conch": conch, "llama.cpp": llama}
    engines = [built[n] if n in built else MistralRs(args.timeout) for n in names]
    for e in engines:
        log(f"{e.name}: {e.error or e.version}")
    log("measuring memory bandwidth")
    bandwidth = memory_bandwidth(args.threads)
    log("preparing workloads")
    workloads = prepare_workloads(wanted, llama, conch)
    live = [e for e in engines if not e.error]
    for w in workloads:
        if w.error:
            log(f"{w.name}: unavailable: {w.error}")
            continue
        for t in args.threads:
            for rep in range(args.reps):
                for e in live:
                    s = e.bench(w.path, args.pp, args.tg, t)
                    w.samples.setdefault((e.name, t), []).append(s)
                    log(f"{w.name} t={t} rep {rep + 1}/{args.reps} {e.name}: "
                        + (f"error: {s.error}" if s.error else f"pp {s.pp or 0:.1f} tg {s.tg or 0:.1f} t/s"))
        if not args.no_ppl:
            for e in (e for e in live if not e.perplexity_gap):
                w.perplexity[e.name] = e.perplexity(w.path, args.ppl_ctx, max(args.threads))
                v = w.perplexity[e.name]
                log(f"{w.name} perplexity {e.name}: " + (v.error if isinstance(v, Sample) else f"{v[0]:.4f}"))
    args.elapsed_min = (time.perf_counter() - t_start) / 60
    text = report(args, argv, started, engines, workloads, bandwidth)
    Path(args.out).write_text(text)
    raw = {"command": argv, "started_utc": started, "bandwidth": bandwidth,
           "engines": {e.name: {"version": e.version, "error": e.error} for e in engines},
           "workloads": [{"name": w.name, "path": str(w.path), "error": w.error, "bytes_per_token": w.bytes_per_token,
                          "samples": [{"engine": e, "threads": t, **vars(s)} for (e, t), ss in w.samples.items()
                                      for s in ss],
                          "perplexity": {e: (v if isinstance(v, tuple) else v.error) for e, v in w.perplexity.items()}}
                         for w in workloads]}
    (WORK / "last-run.json").write_text(json.dumps(raw, indent=1))  # every sample, for a closer look
    print(text)


if __name__ == "__main__":
    main()
