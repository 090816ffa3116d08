#!/usr/bin/env python3
"""Reference chat-template renders from transformers for crates/conch-tokenizer's tests.

Reads the templates in fixtures/templates/*.jinja (sources in fixtures/templates/SOURCES.md),
renders each over several conversations with transformers' own renderer
(`transformers.utils.chat_template_utils.render_jinja_template`, what `apply_chat_template(...,
tokenize=False)` calls), and writes fixtures/templates/expected.json: one case per render with the
inputs and either the expected text or the message of the exception the template raised.

`strftime_now` is pinned to FIXED_NOW (the Rust test pins the same instant).

Run from the repository root:
    /opt/conch-py/bin/python tools/gen_template_fixtures.py
Pinned: transformers 5.x (see tools/requirements.txt), jinja2 >= 3.1.6.
"""
import copy
import datetime as dt
import json
import pathlib

import jinja2
import transformers
from transformers.utils import chat_template_utils

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIR = ROOT / "fixtures/templates"
FIXED_NOW = dt.datetime(2025, 3, 7, 14, 30, 0)


class _PinnedClock(dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXED_NOW


chat_template_utils.datetime = _PinnedClock

# template file -> (bos_token, eos_token) from the model's tokenizer_config.json
TEMPLATES = {
    "smollm2-instruct.jinja": ("<|im_start|>", "<|im_end|>"),
    "gemma-3-it.jinja": ("<bos>", "<eos>"),
    "qwen2.5-instruct.jinja": ("", "<|im_end|>"),
    "qwen3.jinja": ("", "<|im_end|>"),
    "llama-3.2-instruct.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistral-7b-instruct-v0.3.jinja": ("<s>", "</s>"),
    "deepseek-v3.1.jinja": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "gpt-oss.jinja": ("<|startoftext|>", "<|return|>"),
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current local time for a timezone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
    },
}

SYSTEM_USER = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
MULTI_TURN = [
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello! How can I help you today?"},
    {"role": "user", "content": "Tell me a joke about cats.\n\nKeep it short."},
    {"role": "assistant", "content": "  Why did the cat sit on the computer? To keep an eye on the mouse!  "},
    {"role": "user", "content": "Another one?"},
]
NON_ASCII = [
    {"role": "system", "content": "Réponds en français, s'il te plaît. 🙂"},
    {"role": "user", "content": "你好！Что такое «тест»? Ça va? 👨‍👩‍👧"},
    {"role": "assistant", "content": "Très bien — 谢谢！"},
    {"role": "user", "content": "<b>tags</b> & \"quotes\" \\ backslash\ttab"},
]
BAD_ORDER = [
    {"role": "user", "content": "one"},
    {"role": "user", "content": "two"},
]


def tool_chat(arguments_as_string: bool):
    args = {"city": "Paris", "unit": "celsius"}
    return [
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "What's the weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call12345",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps(args) if arguments_as_string else args},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "{\"temp\": 18, \"sky\": \"cloudy\"}"},
        {"role": "assistant", "content": "It is 18 °C and cloudy in Paris."},
        {"role": "user", "content": "Thanks!"},
    ]


REASONING = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4", "reasoning_content": "Simple arithmetic: 2 plus 2 is 4."},
    {"role": "user", "content": "And 3+3?"},
]


def cases_for(name: str):
    cases = [
        ("system_user", SYSTEM_USER, None, True, None),
        ("system_user_no_prompt", SYSTEM_USER, None, False, None),
        ("multi_turn", MULTI_TURN, None, True, None),
        ("multi_turn_no_prompt", MULTI_TURN, None, False, None),
        ("non_ascii", NON_ASCII, None, True, None),
        ("bad_order", BAD_ORDER, None, True, None),
    ]
    if name not in ("smollm2-instruct.jinja", "gemma-3-it.jinja"):
        string_args = name == "deepseek-v3.1.jinja"
        cases.append(("tools_defined", SYSTEM_USER, [WEATHER_TOOL, TIME_TOOL], True, None))
        cases.append(("tool_call_and_result", tool_chat(string_args), [WEATHER_TOOL], True, None))
    if name == "qwen3.jinja":
        cases.append(("reasoning", REASONING, None, True, None))
        cases.append(("no_thinking", SYSTEM_USER, None, True, {"enable_thinking": False}))
    if name == "gpt-oss.jinja":
        cases.append(("reasoning_high", REASONING, None, True, {"reasoning_effort": "high"}))
    if name == "llama-3.2-instruct.jinja":
        cases.append(("date_string", SYSTEM_USER, None, True, {"date_string": "01 Jan 2030"}))
    if name == "deepseek-v3.1.jinja":
        cases.append(("thinking", REASONING, None, True, {"thinking": True}))
    return cases


def main() -> None:
    out = []
    for name, (bos, eos) in TEMPLATES.items():
        source = (DIR / name).read_text(encoding="utf-8")
        for case, messages, tools, agp, extra in cases_for(name):
            kwargs = dict(extra or {})
            record = {
                "template": name,
                "case": case,
                "bos_token": bos,
                "eos_token": eos,
                "messages": messages,
                "tools": tools,
                "add_generation_prompt": agp,
                "extra_context": extra,
            }
            try:
                rendered, _ = chat_template_utils.render_jinja_template(
                    conversations=[copy.deepcopy(messages)],
                    tools=copy.deepcopy(tools),
                    chat_template=source,
                    add_generation_prompt=agp,
                    bos_token=bos,
                    eos_token=eos,
                    **kwargs,
                )
                record["expected"] = rendered[0]
            except jinja2.exceptions.TemplateError as e:
                record["error"] = str(e)
            out.append(record)
            print(f"{name} {case}: {'error: ' + record['error'] if 'error' in record else len(record['expected'])}")
    (DIR / "expected.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"transformers {transformers.__version__}, jinja2 {jinja2.__version__}, fixed now {FIXED_NOW}")


if __name__ == "__main__":
    main()
