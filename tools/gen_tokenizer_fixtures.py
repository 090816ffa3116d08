#!/usr/bin/env python3
"""Reference token ids from llama.cpp for crates/conch-tokenizer's tests.

Writes, under fixtures/tokenizer/:
  vocab/*.gguf        vocabulary-only GGUF files (all metadata, no tensors): extracted from the
                      real SmolLM2 and Gemma 3 models, and copied from llama.cpp's models/ dir
  expected/<vocab>.json  for every string of corpus.json, the ids llama.cpp's `llama-tokenize`
                      gives on the *committed* vocab file, in two modes:
                        "special":  llama-tokenize's defaults: BOS added when the model asks for
                                    it, special-token texts parsed (`--parse-special` default)
                        "plain":    `--no-bos --no-parse-special`
                      (always `--ids --log-disable --no-escape --stdin`, the text on stdin)
  expected/<vocab>.special.json  the BOS id and end-of-generation ids llama.cpp reports
                      when loading the vocab (`--verbose` log)
  hf/<name>/          tokenizer.json + tokenizer_config.json made by transformers from a vocab
                      GGUF, and hf/<name>/expected.json: ids from the Python `tokenizers` library
                      (add_special_tokens on/off; special texts parsed, or not via
                      `encode_special_tokens`) and its decode of them

Run from the repository root, after bench/build-llamacpp.sh has built llama-tokenize:
    /opt/conch-py/bin/python tools/gen_tokenizer_fixtures.py
Pinned: gguf 0.19.0 (Python), llama.cpp from the llama-cpp-python 0.3.36 sdist.
"""
import json
import pathlib
import re
import shutil
import subprocess
import tempfile
import sys

import gguf

ROOT = pathlib.Path(__file__).resolve().parent.parent
LLAMA = ROOT / "bench/work/llama_cpp_python-0.3.36/vendor/llama.cpp"
TOKENIZE = LLAMA / "build/bin/llama-tokenize"
OUT = ROOT / "fixtures/tokenizer"
MODELS = pathlib.Path("/root/.cache/conch/models")

# name -> real model file to strip down to its vocabulary
EXTRACTED = {
    "smollm2": MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf",  # gpt2 BPE, pre "smollm"
    "gemma3": MODELS / "gemma-3-270m-q4_k_m.gguf",  # llama SPM, 262k tokens
}
# name -> llama.cpp vocab file copied as is (about 28 MB of vocab files in all; starcoder/refact
# share smollm's pre-tokenizer and are left out to save space)
COPIED = {
    "llama-bpe": "ggml-vocab-llama-bpe.gguf",  # llama3
    "qwen2": "ggml-vocab-qwen2.gguf",
    "deepseek-llm": "ggml-vocab-deepseek-llm.gguf",
    "gpt-2": "ggml-vocab-gpt-2.gguf",
    "llama-spm": "ggml-vocab-llama-spm.gguf",
}


# pre-tokenizer -> committed vocab it is tried on: llama.cpp applies that pre's splitting rules to
# the vocabulary, so the ids check Conch's pre-tokenizer against llama.cpp's for families whose own
# vocabulary is not reachable offline (DeepSeek-V3's, say). The test overrides the key in memory.
PRE_VARIANTS = {
    "deepseek-v3": "deepseek-llm",
    "starcoder": "gpt-2",
    "gpt-4o": "llama-bpe",
    "falcon": "gpt-2",
    "command-r": "gpt-2",
}


def extract_vocab(src: pathlib.Path, dst: pathlib.Path, overrides: dict | None = None) -> None:
    """Copies every metadata key of `src` into a new GGUF without tensors (string keys in
    `overrides` replaced)."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        main_type = field.types[0]
        sub_type = field.types[-1] if main_type == gguf.GGUFValueType.ARRAY else None
        value = (overrides or {}).get(name, field.contents())
        writer.add_key_value(name, value, main_type, sub_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()


def tokenize(vocab: pathlib.Path, text: str, plain: bool) -> list[int]:
    cmd = [str(TOKENIZE), "-m", str(vocab), "--ids", "--log-disable", "--no-escape", "--stdin"]
    if plain:
        cmd += ["--no-bos", "--no-parse-special"]
    res = subprocess.run(cmd, input=text.encode(), capture_output=True, check=True)
    return json.loads(res.stdout.decode().strip().splitlines()[-1])


def special_ids(vocab: pathlib.Path) -> dict:
    """BOS and end-of-generation ids as llama.cpp's loader logs them."""
    res = subprocess.run([str(TOKENIZE), "-m", str(vocab), "--ids", "--no-escape", "--stdin", "--verbose"],
                         input=b"x", capture_output=True, check=True)
    log = res.stderr.decode(errors="replace")
    bos = re.search(r"print_info: BOS token\s+= (\d+)", log)
    eog = [int(m) for m in re.findall(r"print_info: EOG token\s+= (\d+)", log)]
    return {"bos": int(bos.group(1)) if bos else None, "eog": sorted(eog)}


def hf_fixture(name: str, vocab: pathlib.Path, corpus: list[str]) -> None:
    """A tokenizer.json built by transformers from the vocab GGUF, and the Python tokenizers'
    ids and decodes for the corpus."""
    import tokenizers
    from transformers import AutoTokenizer

    out = OUT / "hf" / name
    out.mkdir(parents=True, exist_ok=True)
    AutoTokenizer.from_pretrained(vocab.parent, gguf_file=vocab.name).save_pretrained(out)
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        (out / extra).unlink(missing_ok=True)
    # minified: the same tokenizer in two thirds of the bytes
    tokenizer_json = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    (out / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    tok = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    literal = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    literal.encode_special_tokens = True
    cases = []
    for text in corpus:
        special = tok.encode(text, add_special_tokens=True).ids
        cases.append({
            "text": text,
            "special": special,
            "plain": literal.encode(text, add_special_tokens=False).ids,
            "decode": tok.decode(special, skip_special_tokens=False),
            "decode_skip": tok.decode(special, skip_special_tokens=True),
        })
    (out / "expected.json").write_text(json.dumps(cases, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"hf/{name}: {len(cases)} strings (tokenizers {tokenizers.__version__})")

    # add_bos_token/add_eos_token in tokenizer_config.json replace the post-processor (transformers 5)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(out / "tokenizer.json", pathlib.Path(tmp) / "tokenizer.json")
        config = json.loads((out / "tokenizer_config.json").read_text())
        config.update(add_bos_token=True, add_eos_token=True)
        (pathlib.Path(tmp) / "tokenizer_config.json").write_text(json.dumps(config))
        both = AutoTokenizer.from_pretrained(tmp)
        flags = [{"text": t, "ids": both(t, add_special_tokens=True)["input_ids"]} for t in corpus[:8]]
    (out / "expected_add_bos_eos.json").write_text(json.dumps(flags, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    (OUT / "vocab").mkdir(parents=True, exist_ok=True)
    (OUT / "expected").mkdir(parents=True, exist_ok=True)
    vocabs = {}
    for name, src in EXTRACTED.items():
        dst = OUT / "vocab" / f"{name}.gguf"
        extract_vocab(src, dst)
        vocabs[name] = dst
    for name, file in COPIED.items():
        dst = OUT / "vocab" / f"{name}.gguf"
        shutil.copyfile(LLAMA / "models" / file, dst)
        vocabs[name] = dst
    corpus = json.loads((OUT / "corpus.json").read_text(encoding="utf-8"))
    only = set(sys.argv[1:])
    for name, path in vocabs.items():
        if only and name not in only:
            continue
        cases = [
            {"text": text, "special": tokenize(path, text, plain=False), "plain": tokenize(path, text, plain=True)}
            for text in corpus
        ]
        out = OUT / "expected" / f"{name}.json"
        out.write_text(json.dumps(cases, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
        print(f"{name}: {len(cases)} strings -> {out.relative_to(ROOT)}")
        special = OUT / "expected" / f"{name}.special.json"
        special.write_text(json.dumps(special_ids(path)) + "\n")
    for name in ("smollm2", "llama-spm"):
        hf_fixture(name, vocabs[name], corpus)
    with tempfile.TemporaryDirectory() as tmp:
        for pre, base in PRE_VARIANTS.items():
            path = pathlib.Path(tmp) / f"{pre}.gguf"
            extract_vocab(vocabs[base], path, {"tokenizer.ggml.pre": pre})
            cases = [{"text": text, "special": tokenize(path, text, plain=False), "plain": tokenize(path, text, plain=True)}
                     for text in corpus]
            out = OUT / "expected" / f"pre-{pre}.json"
            out.write_text(json.dumps({"vocab": base, "pre": pre, "cases": cases}, ensure_ascii=False, indent=0) + "\n",
                           encoding="utf-8")
            print(f"pre {pre} on {base}: {len(cases)} strings -> {out.relative_to(ROOT)}")
    for p in sorted((OUT / "vocab").iterdir()):
        print(f"{p.name}: {p.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
