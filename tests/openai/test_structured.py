"""Structured output, tool calls and logprobs as the official `openai` client sees them.

Run through tests/openai/run.sh (a running `conch serve` at CONCH_BASE_URL). The fixture model
has random weights, so only what constrained decoding guarantees is checked: the JSON always
parses and satisfies the schema, forced calls name the forced function with valid arguments.
"""

import json
import os

import openai
import pytest

client = openai.OpenAI(base_url=os.environ["CONCH_BASE_URL"], api_key="unused")
MODEL = client.models.list().data[0].id
MESSAGES = [{"role": "user", "content": "Describe a person as JSON."}]

# Bounded (short strings, small integers, few items, no extra keys) so a random model finishes.
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 3},
        "email": {"type": ["string", "null"], "maxLength": 10},
    },
    "required": ["name", "age", "role", "tags", "email"],
    "additionalProperties": False,
}
PERSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string", "maxLength": 6}},
            "required": ["tz"],
            "additionalProperties": False,
        },
    },
}


def check_person(person):
    """Checks PERSON by hand (the client test environment has no JSON Schema validator)."""
    assert isinstance(person, dict)
    assert set(person) == set(PERSON["required"])
    assert isinstance(person["name"], str) and len(person["name"]) <= 8
    assert isinstance(person["age"], int) and not isinstance(person["age"], bool) and 0 <= person["age"] <= 120
    assert person["role"] in ("admin", "user", "guest")
    assert isinstance(person["tags"], list) and len(person["tags"]) <= 3
    assert all(isinstance(t, str) and len(t) <= 4 for t in person["tags"])
    assert person["email"] is None or (isinstance(person["email"], str) and len(person["email"]) <= 10)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_json_schema_output_parses_and_validates(seed):
    out = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, response_format=PERSON_FORMAT, temperature=1.0, seed=seed, max_tokens=600
    )
    choice = out.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    check_person(json.loads(choice.message.content))


def test_json_schema_streaming_matches_schema():
    stream = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, response_format=PERSON_FORMAT, temperature=1.0, seed=7, max_tokens=600, stream=True
    )
    text, reasons = "", []
    for chunk in stream:
        for c in chunk.choices:
            text += c.delta.content or ""
            if c.finish_reason:
                reasons.append(c.finish_reason)
    assert reasons == ["stop"]
    check_person(json.loads(text))


def test_json_object_output_is_an_object():
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Reply in JSON."}],
        response_format={"type": "json_object"},
        temperature=1.0,
        seed=3,
        max_tokens=1500,
    )
    choice = out.choices[0]
    if choice.finish_reason == "length":
        pytest.skip("the random fixture model wrote a JSON value longer than max_tokens")
    assert choice.finish_reason == "stop"
    assert isinstance(json.loads(choice.message.content), dict)


def test_unsupported_schema_is_a_bad_request():
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}}}
    with pytest.raises(openai.BadRequestError, match="pattern"):
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            response_format={"type": "json_schema", "json_schema": {"name": "bad", "schema": schema}},
            max_tokens=10,
        )


def check_weather_call(call):
    assert call.type == "function"
    assert isinstance(call.id, str) and call.id
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city", "unit"}
    assert isinstance(arguments["city"], str) and len(arguments["city"]) <= 12
    assert arguments["unit"] in ("celsius", "fahrenheit")


def test_named_tool_choice_returns_that_call():
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=1.0,
        seed=5,
        max_tokens=300,
    )
    choice = out.choices[0]
    # OpenAI reports "stop" for a forced named call and "tool_calls" when the model chose.
    assert choice.finish_reason in ("stop", "tool_calls")
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    check_weather_call(calls[0])


def test_required_tool_choice_calls_one_of_the_tools():
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather or time?"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice="required",
        temperature=1.0,
        seed=6,
        max_tokens=300,
    )
    calls = out.choices[0].message.tool_calls
    assert calls is not None and len(calls) >= 1
    for call in calls:
        arguments = json.loads(call.function.arguments)
        if call.function.name == "get_weather":
            check_weather_call(call)
        else:
            assert call.function.name == "get_time"
            assert set(arguments) == {"tz"} and isinstance(arguments["tz"], str)


def test_named_tool_choice_streams_call_deltas():
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=1.0,
        seed=8,
        max_tokens=300,
        stream=True,
    )
    calls = {}
    for chunk in stream:
        for c in chunk.choices:
            for delta in c.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                if delta.id:
                    entry["id"] = delta.id
                if delta.function and delta.function.name:
                    entry["name"] += delta.function.name
                if delta.function and delta.function.arguments:
                    entry["arguments"] += delta.function.arguments
    assert list(calls) == [0]
    call = calls[0]
    assert call["id"] and call["name"] == "get_weather"
    arguments = json.loads(call["arguments"])
    assert arguments["unit"] in ("celsius", "fahrenheit")


def test_chat_logprobs_shape():
    n_top = 3
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hello there"}],
        temperature=0,
        max_tokens=6,
        logprobs=True,
        top_logprobs=n_top,
        extra_body={"ignore_eos": True},
    )
    choice = out.choices[0]
    content = choice.logprobs.content
    assert len(content) == out.usage.completion_tokens == 6
    # Token bytes, not token strings, join exactly (a token may hold part of a character).
    joined = bytes(b for t in content for b in t.bytes)
    assert joined.decode("utf-8", errors="replace") == choice.message.content
    for t in content:
        assert t.logprob <= 0.0
        assert isinstance(t.bytes, list) and all(0 <= b < 256 for b in t.bytes)
        assert len(t.top_logprobs) == n_top
        lps = [top.logprob for top in t.top_logprobs]
        assert lps == sorted(lps, reverse=True)
        # Greedy decoding picks the most likely token.
        assert t.top_logprobs[0].token == t.token
        assert abs(t.top_logprobs[0].logprob - t.logprob) < 1e-4


def test_completion_logprobs_shape():
    out = client.completions.create(
        model=MODEL, prompt="hello world", temperature=0, max_tokens=5, logprobs=2, extra_body={"ignore_eos": True}
    )
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    assert all(x <= 0.0 for x in lp.token_logprobs)
    # Alternatives are keyed by token text: tokens sharing a text (lone bytes of a character
    # decode alike) share an entry.
    assert all(1 <= len(top) <= 2 for top in lp.top_logprobs)
    assert lp.text_offset == sorted(lp.text_offset)
