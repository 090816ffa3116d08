"""The server as the official `openai` client sees it. Run through tests/openai/run.sh."""

import os

import openai
import pytest

client = openai.OpenAI(base_url=os.environ["CONCH_BASE_URL"], api_key="unused")
MODEL = client.models.list().data[0].id
MESSAGES = [{"role": "user", "content": "Hello there"}]
GREEDY = dict(temperature=0, max_tokens=12, extra_body={"ignore_eos": True})


def test_chat_non_streaming_and_streaming_agree():
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, **GREEDY)
    choice = whole.choices[0]
    assert choice.finish_reason == "length"
    assert whole.usage.completion_tokens == 12
    stream = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}, **GREEDY
    )
    text, reasons, usage = "", [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            if c.finish_reason:
                reasons.append(c.finish_reason)
    assert text == choice.message.content
    assert reasons == ["length"]
    assert usage.total_tokens == whole.usage.total_tokens


def test_n_choices():
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=2, seed=1, **{**GREEDY, "temperature": 1.0})
    assert sorted(c.index for c in out.choices) == [0, 1]
    assert out.usage.completion_tokens == 24


def test_completions_and_stop():
    longer = {**GREEDY, "max_tokens": 40}
    full = client.completions.create(model=MODEL, prompt="hello world", **longer).choices[0].text
    if len(full) < 4:
        pytest.skip("the fixture produced too little text for a stop string")
    stop = full[len(full) // 2 :][:2]
    cut = client.completions.create(model=MODEL, prompt="hello world", stop=[stop], **longer).choices[0]
    assert cut.text == full[: full.index(stop)]
    assert cut.finish_reason == "stop"


def test_errors_are_raised_as_openai_errors():
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError, match="not supported"):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, logprobs=True)
