"""Pure pieces of the server: stop strings, the FIFO gate, chat templates for plain prompt styles."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medchat.chatformat.messages import Message
from medchat.server.gate import FifoGate, QueueFull
from medchat.server.stop import StopMatcher


def run_stop(stops, chunks):
    matcher = StopMatcher(stops)
    out = "".join(matcher.feed(c) for c in chunks) + matcher.flush()
    return out, matcher.stopped


@pytest.mark.parametrize("stops,chunks,expected", [
    ([], ["a", "b"], ("ab", False)),
    (["STOP"], ["abc", "ST", "OP", "def"], ("abc", True)),
    (["STOP"], ["abcST"], ("abcST", False)),  # a held partial match that never completes is sent
    (["\n\n", "END"], ["one\n", "\ntwo"], ("one", True)),
    (["aab"], ["aa", "ab"], ("a", True)),
])
def test_stop_matcher(stops, chunks, expected):
    assert run_stop(stops, chunks) == expected


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="abS T\nOP", max_size=40),
       stops=st.lists(st.text(alphabet="abST\nOP", min_size=1, max_size=4), max_size=3),
       cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=6))
def test_stop_matcher_is_independent_of_chunking(text, stops, cuts):
    points = sorted({min(c, len(text)) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)])]
    whole = run_stop(stops, [text])
    assert run_stop(stops, chunks) == whole
    hits = [(text.find(s) + len(s), text.find(s)) for s in stops if s in text]  # earliest complete stop
    assert whole == ((text[: min(hits)[1]], True) if hits else (text, False))


def test_gate_serves_in_arrival_order_and_skips_those_who_left():
    gate = FifoGate()
    order: list[int] = []
    never = threading.Event()
    assert gate.acquire(never)
    left = threading.Event()

    def worker(i: int, cancel: threading.Event) -> None:
        if gate.acquire(cancel):
            order.append(i)
            gate.release()

    threads = []
    for i in range(5):
        cancel = left if i == 2 else threading.Event()
        t = threading.Thread(target=worker, args=(i, cancel))
        t.start()
        threads.append(t)
        while gate.waiting < i + 1:
            time.sleep(0.005)
    left.set()  # client 2 goes away while queued
    while gate.waiting > 4:
        time.sleep(0.005)
    gate.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 3, 4]


def test_gate_refuses_beyond_its_queue_limit():
    gate = FifoGate(max_waiting=1)
    never = threading.Event()
    assert gate.acquire(never)
    waiter = threading.Thread(target=gate.acquire, args=(never,), daemon=True)
    waiter.start()
    while gate.waiting < 1:
        time.sleep(0.005)
    with pytest.raises(QueueFull):
        gate.acquire(never)
    gate.release()
    waiter.join(5)
    gate.release()


@pytest.mark.parametrize("style", ["r1-medical", "task-query-answer", "medical-qa"])
def test_exported_chat_template_renders_like_medchat(style):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from medchat.chatformat.prompt import PROMPT_STYLES, render_plain
    from medchat.export.merged import chat_template_for_style

    template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
        chat_template_for_style(style)
    )
    for convo in (
        [Message("user", "Chest pain for 30 minutes?")],
        [Message("system", "Ignored."), Message("user", "Q1 "), Message("assistant", "A1"), Message("user", "Q2 — ünïcode \"quoted\"")],
    ):
        rendered = template.render(messages=[m.__dict__ for m in convo], add_generation_prompt=True)
        assert rendered == render_plain(PROMPT_STYLES[style], convo)


def test_chat_template_style_keeps_the_tokenizer_template():
    from medchat.export.merged import chat_template_for_style

    assert chat_template_for_style("chat_template") is None


@pytest.mark.parametrize("given,expected", [
    ("unsloth/DeepSeek-R1-Distill-Llama-8B-unsloth-bnb-4bit", "unsloth/DeepSeek-R1-Distill-Llama-8B"),
    ("unsloth/Llama-3.2-3B-Instruct-bnb-4bit", "unsloth/Llama-3.2-3B-Instruct"),
    ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"),
])
def test_export_merges_into_the_16_bit_original_of_a_4_bit_build(given, expected):
    from medchat.export.merged import sixteen_bit_original

    assert sixteen_bit_original(given) == expected


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FIELDS = ["model", "messages", "stream", "stream_options", "temperature", "top_p", "top_k", "max_tokens",
          "max_completion_tokens", "seed", "stop", "n", "tools", "logprobs", "response_format",
          "continue_final_message", "presence_penalty", "repetition_penalty"]


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6),
       messages=st.one_of(st.none(), st.lists(st.dictionaries(st.sampled_from(["role", "content"]),
                                                               st.sampled_from(["user", "robot", "assistant"]) | JSON,
                                                               max_size=2), max_size=3)))
def test_any_json_request_is_accepted_or_refused_with_a_4xx(body, messages):
    """Whatever a client sends, validation answers a ChatRequest or an ApiError (4xx), never a crash."""
    import json as _json

    from medchat.config import GenerationSettings
    from medchat.server.protocol import ApiError, ModelTable, parse_chat_request

    if messages is not None:
        body["messages"] = messages
    raw = _json.dumps(body).encode()
    try:
        request = parse_chat_request(raw, ModelTable({"m": None}, "m"), GenerationSettings(), 4096)
    except ApiError as err:
        assert 400 <= err.status < 500 and err.message
        return
    request.generation.validate()
    assert request.messages and 1 <= request.generation.max_new_tokens <= 4096


def test_think_budget_per_request():
    import json as _json

    import pytest as _pytest

    from medchat.config import GenerationSettings
    from medchat.server.protocol import ApiError, ModelTable, parse_chat_request

    def parse(**extra):
        raw = _json.dumps({"messages": [{"role": "user", "content": "hi"}], **extra}).encode()
        return parse_chat_request(raw, ModelTable({"m": None}, "m"), GenerationSettings(), 4096)

    assert parse(think_budget=256).generation.think_budget == 256
    assert parse().generation.think_budget == -1  # the server's default: no limit
    with _pytest.raises(ApiError):
        parse(think_budget=-5)
