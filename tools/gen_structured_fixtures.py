#!/usr/bin/env python3
"""Assistant tool-call replies as each family's own chat template renders them, for
crates/conch-structured's tool-call parser tests.

For every template in fixtures/templates/ that renders tool calls, and several assistant
messages (one call, two calls, text before a call, arguments with nesting/unicode/escapes),
renders the conversation [user] with the generation prompt and [user, assistant] without it
through transformers' own renderer; the text the second adds after the first is the reply the
model would generate. Writes fixtures/structured/tool_calls.json with, per case, the template,
the reply, the template's eos token (the server stops there; the test cuts the reply at it),
and the calls and content that went in — the expected parse.

Run from the repository root:
    /opt/conch-py/bin/python tools/gen_structured_fixtures.py
Pinned: transformers 5.x (see tools/requirements.txt), jinja2 >= 3.1.6.
"""
import copy
import json
import pathlib

import jinja2
import transformers
from transformers.utils import chat_template_utils

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "fixtures/templates"
OUT = ROOT / "fixtures/structured/tool_calls.json"

# template file -> (bos_token, eos_token), as in tools/gen_template_fixtures.py
TEMPLATES = {
    "qwen2.5-instruct.jinja": ("", "<|im_end|>"),
    "qwen3.jinja": ("", "<|im_end|>"),
    "llama-3.2-instruct.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistral-7b-instruct-v0.3.jinja": ("<s>", "</s>"),
    "deepseek-v3.1.jinja": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "gpt-oss.jinja": ("<|startoftext|>", "<|return|>"),
}

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "Local time",
                                      "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}},
]

CALL_SETS = {
    "one_call": [("get_weather", {"city": "Paris", "unit": "celsius"})],
    "two_calls": [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "Europe/Paris"})],
    "nested_unicode": [("get_weather", {"city": "São Paulo \"SP\"", "opts": {"days": [1, 2.5], "note": "中文 😀", "ok": True, "none": None}})],
    "no_arguments": [("get_time", {})],
}
# Templates that render only the first of several calls in one message.
SINGLE_CALL = {"gpt-oss.jinja"}
# Templates that keep an assistant message's text next to its tool calls.
KEEPS_CONTENT = {"qwen2.5-instruct.jinja", "qwen3.jinja"}


def render(source, bos, eos, messages, add_generation_prompt):
    rendered, _ = chat_template_utils.render_jinja_template(
        conversations=[copy.deepcopy(messages)],
        tools=copy.deepcopy(TOOLS),
        chat_template=source,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos,
        eos_token=eos,
    )
    return rendered[0]


def main() -> None:
    cases = []
    user = {"role": "user", "content": "Weather and time in Paris?"}
    for name, (bos, eos) in TEMPLATES.items():
        source = (TEMPLATES_DIR / name).read_text(encoding="utf-8")
        variants = [
            (case, calls, "") for case, calls in CALL_SETS.items() if len(calls) == 1 or name not in SINGLE_CALL
        ]
        if name in KEEPS_CONTENT:
            variants.append(("content_then_call", CALL_SETS["one_call"], "Let me check that for you."))
        for case, calls, content in variants:
            assistant = {
                "role": "assistant",
                "content": content,
                "tool_calls": [
                    {"id": f"call{i}2345"[:9].ljust(9, "0"), "type": "function", "function": {"name": n, "arguments": a}}
                    for i, (n, a) in enumerate(calls)
                ],
            }
            try:
                prompt = render(source, bos, eos, [user], True)
                full = render(source, bos, eos, [user, assistant], False)
            except jinja2.exceptions.TemplateError as e:
                print(f"{name} {case}: skipped, template error: {e}")
                continue
            if not full.startswith(prompt):
                print(f"{name} {case}: skipped, the reply does not extend the generation prompt")
                continue
            reply = full[len(prompt):]
            cases.append({
                "template": name,
                "case": case,
                "eos_token": eos,
                "reply": reply,
                "content": content,
                "tool_calls": [{"name": n, "arguments": a} for n, a in calls],
            })
            print(f"{name} {case}: {reply!r}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(cases, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(cases)} cases; transformers {transformers.__version__}, jinja2 {jinja2.__version__}")


if __name__ == "__main__":
    main()
