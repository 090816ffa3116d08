"""The server as the official `openai` client sees it. Run through tests/openai/run.sh."""

import os
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

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
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, top_logprobs=2)
    too_long = [{"role": "user", "content": "word " * 100_000}]
    with pytest.raises(openai.BadRequestError, match="context"):
        client.chat.completions.create(model=MODEL, messages=too_long)


def test_logprobs():
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, logprobs=True, top_logprobs=3, **GREEDY)
    content = out.choices[0].logprobs.content
    assert len(content) == 12
    for entry in content:
        assert entry.logprob <= 0.0
        assert len(entry.top_logprobs) == 3
        # Greedy decoding takes the most likely token.
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob, abs=1e-6)
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
    streamed = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, logprobs=True, stream=True, **GREEDY
    )
    tokens = [e.token for chunk in streamed for c in chunk.choices if c.logprobs for e in c.logprobs.content]
    assert tokens == [e.token for e in content]


def metric(name):
    base = os.environ["CONCH_BASE_URL"].removesuffix("/v1")
    text = urllib.request.urlopen(f"{base}/metrics").read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_disconnect_mid_stream_then_normal_service():
    stream = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, max_tokens=100_000, temperature=0,
        extra_body={"ignore_eos": True},
    )
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, **GREEDY)
    assert out.usage.completion_tokens == 12
    # The dropped sequence is gone (cancelled, or finished if the socket buffers took it all).
    for _ in range(100):
        if metric("conch_active_sequences") == 0:
            break
        time.sleep(0.05)
    assert metric("conch_active_sequences") == 0


def test_concurrent_requests_match_one_at_a_time():
    prompts = [[{"role": "user", "content": f"Tell me about the number {i}"}] for i in range(6)]

    def ask(messages):
        return client.chat.completions.create(model=MODEL, messages=messages, **GREEDY).choices[0].message.content

    alone = [ask(m) for m in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(ask, prompts))
    assert together == alone
