"""Checks conch's `quantize` against llama.cpp's llama-quantize, tensor by tensor (not a fixture generator).

Run from the repository root (after `cargo build --release -p conch-convert --example convert`):
    /opt/conch-py/bin/python tools/check_convert.py MODEL_F32.gguf [TYPE ...]
TYPE is one of Q8_0 Q4_0 Q4_K Q6_K (default: all); conch's Q4_K is compared with llama.cpp's Q4_K_S.
For each type both tools quantize MODEL_F32.gguf; the script prints the tensors whose type or bytes
differ and the metadata keys only one side wrote. Uses the gguf package (tools/requirements.txt) and
the llama.cpp build in bench/work/llama.cpp/build/bin.
"""
import subprocess
import sys
import tempfile
from pathlib import Path

from gguf import GGUFReader

ROOT = Path(__file__).resolve().parent.parent
CONVERT = ROOT / "target/release/examples/convert"
LLAMA_QUANTIZE = ROOT / "bench/work/llama.cpp/build/bin/llama-quantize"
LLAMA_NAME = {"Q8_0": "Q8_0", "Q4_0": "Q4_0", "Q4_K": "Q4_K_S", "Q6_K": "Q6_K"}


def compare(ours: Path, theirs: Path) -> int:
    a, b = GGUFReader(ours), GGUFReader(theirs)
    ta = {t.name: t for t in a.tensors}
    tb = {t.name: t for t in b.tensors}
    problems = 0
    for name in sorted(set(ta) ^ set(tb)):
        print(f"  only in {'conch' if name in ta else 'llama.cpp'}: {name}")
        problems += 1
    for name in sorted(set(ta) & set(tb)):
        x, y = ta[name], tb[name]
        if x.tensor_type != y.tensor_type:
            print(f"  {name}: conch {x.tensor_type.name}, llama.cpp {y.tensor_type.name}")
            problems += 1
        elif x.data.tobytes() != y.data.tobytes():
            print(f"  {name}: {x.tensor_type.name} bytes differ")
            problems += 1
    keys_a = {f.name for f in a.fields.values()}
    keys_b = {f.name for f in b.fields.values()}
    for key in sorted(keys_a ^ keys_b):
        print(f"  metadata {key} only in {'conch' if key in keys_a else 'llama.cpp'}")
    print(f"  {len(ta)} tensors, {problems} differ")
    return problems


def main() -> int:
    model = Path(sys.argv[1])
    types = sys.argv[2:] or list(LLAMA_NAME)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for t in types:
            ours, theirs = Path(tmp, f"conch-{t}.gguf"), Path(tmp, f"llama-{t}.gguf")
            subprocess.run([CONVERT, "quantize", model, ours, t], check=True, stdout=subprocess.DEVNULL)
            subprocess.run([LLAMA_QUANTIZE, model, theirs, LLAMA_NAME[t], "1"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(f"{t}:")
            failures += compare(ours, theirs) > 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
