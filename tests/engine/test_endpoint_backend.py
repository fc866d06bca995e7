"""EndpointBackend against a real `medchat serve` (FakeBackend behind it) and against scripted servers
that speak other dialects (vLLM's ``reasoning`` field, inline ``<think>`` tags, plain JSON answers)."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from medchat.chatformat.messages import Message
from medchat.config import GenerationSettings
from medchat.engine.backends.endpoint import EndpointBackend, normalize_base_url
from medchat.engine.events import AnswerDelta, GenerationDone, GenerationFailed, ReasoningDelta
from medchat.engine.session import ChatSession, stream_events
from medchat.errors import AdapterError, BackendError, UsageError
from medchat.server import ServerConfig
from medchat.server.background import serve_in_thread

sys.path.insert(0, str(Path(__file__).parent.parent / "server"))
from serve_fakes import ANSWER, REASONING, EchoBackend, RepeatingFakeBackend  # noqa: E402

HI = [Message("user", "hi")]


def run(backend, messages=HI, settings=None, cancel=None):
    return list(stream_events(backend, messages, settings or GenerationSettings(), cancel))


@pytest.fixture
def served():
    backend = RepeatingFakeBackend(known_adapters={"med-lora": "fake-model"})
    backend.set_adapter("med-lora")
    with serve_in_thread(backend, config=ServerConfig(api_key="k")) as server:
        yield server


def test_streams_reasoning_and_answer_from_medchat_serve(served):
    endpoint = EndpointBackend(served.base_url, api_key="k", model="auto")
    assert endpoint.info.backend == "endpoint" and endpoint.info.model == "med-lora"  # first listed
    events = run(endpoint)
    done = events[-1]
    assert isinstance(done, GenerationDone)
    assert (done.reasoning, done.answer) == (REASONING, ANSWER)
    assert done.stats.finish_reason == "stop"
    assert done.stats.prompt_tokens > 0 and done.stats.completion_tokens == 6
    kinds = [type(e) for e in events[:-1]]
    assert kinds.index(AnswerDelta) > kinds.index(ReasoningDelta)


def test_sampling_settings_travel_to_the_server(served, monkeypatch):
    seen = []
    original = served.backend.stream

    def spy(messages, settings, cancel, continue_final=False):
        seen.append(settings)
        return original(messages, settings, cancel, continue_final)

    monkeypatch.setattr(served.backend, "stream", spy)
    endpoint = EndpointBackend(served.base_url, api_key="k", model="fake-model")
    run(endpoint, settings=GenerationSettings(temperature=0.1, top_p=0.7, top_k=9, max_new_tokens=33, seed=4))
    s = seen[0]
    assert (s.temperature, s.top_p, s.top_k, s.max_new_tokens, s.seed) == (0.1, 0.7, 9, 33, 4)


def test_set_adapter_switches_the_served_model_name(served):
    endpoint = EndpointBackend(served.base_url, api_key="k", model="fake-model")
    run(endpoint)
    assert served.backend.info.adapter == ""
    endpoint.set_adapter("med-lora")
    assert endpoint.info.adapter == "med-lora"
    run(endpoint)
    assert served.backend.info.adapter == "med-lora"
    endpoint.set_adapter(None)
    run(endpoint)
    assert served.backend.info.adapter == ""
    with pytest.raises(AdapterError, match="does not serve an adapter named 'other'"):
        endpoint.set_adapter("other")
    with pytest.raises(AdapterError, match="--lora-modules"):
        endpoint.set_adapter("./adapters/mine")


def test_compare_asks_for_the_base_model_then_the_adapter_by_their_served_names(served, monkeypatch):
    from medchat.engine.compare import BaseSide

    names = []
    original = served.backend.stream

    def spy(messages, settings, cancel, continue_final=False):
        names.append(served.backend.info.adapter)
        return original(messages, settings, cancel, continue_final)

    monkeypatch.setattr(served.backend, "stream", spy)
    endpoint = EndpointBackend(served.base_url, api_key="k", model="fake-model")
    endpoint.set_adapter("med-lora")
    base = BaseSide(endpoint)
    assert base.info.adapter == "" and base.info.model == "fake-model"
    assert isinstance(run(base)[-1], GenerationDone) and isinstance(run(endpoint)[-1], GenerationDone)
    assert names == ["", "med-lora"] and endpoint.model == "med-lora"  # the adapter's name again after


def test_a_chat_session_sends_only_answers_back(served):
    endpoint = EndpointBackend(served.base_url, api_key="k", model="fake-model")
    session = ChatSession(endpoint, system_prompt="sys")
    list(session.send("first"))
    list(session.send("second"))
    sent = served.backend.calls[-1]
    assert [(m.role, m.content) for m in sent] == [
        ("system", "sys"), ("user", "first"), ("assistant", ANSWER), ("user", "second"),
    ]


def test_wrong_key_unknown_model_and_unreachable_server_fail_fast_with_one_line(served):
    with pytest.raises(BackendError, match="401 unauthorized"):
        EndpointBackend(served.base_url, api_key="wrong")
    with pytest.raises(BackendError, match="does not serve 'gpt-9'; it serves: med-lora, fake-model"):
        EndpointBackend(served.base_url, api_key="k", model="gpt-9")
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(BackendError, match="connection refused") as err:
        EndpointBackend(f"http://127.0.0.1:{port}/v1")
    assert time.monotonic() - start < 3
    assert "\n" not in str(err.value)


def test_cancel_closes_the_stream_and_the_server_stops_generating():
    backend = EchoBackend(words=500, delay=0.02)
    with serve_in_thread(backend) as server:
        endpoint = EndpointBackend(server.base_url)
        cancel = threading.Event()
        events = []
        start = time.monotonic()
        for event in stream_events(endpoint, HI, GenerationSettings(), cancel):
            events.append(event)
            if len(events) == 3:
                cancel.set()
        assert time.monotonic() - start < 5
        assert isinstance(events[-1], GenerationDone) and events[-1].stats.finish_reason == "cancelled"
        deadline = time.monotonic() + 5
        while not backend.cancels[0].is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert backend.cancels[0].is_set()


def test_server_error_mid_stream_becomes_generation_failed(served, monkeypatch):
    served.backend.replies.append(["<think>", "partial"])
    real = served.backend.stream

    def failing(messages, settings, cancel, continue_final=False):
        yield from real(messages, settings, cancel, continue_final)
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(served.backend, "stream", failing)
    events = run(EndpointBackend(served.base_url, api_key="k"))
    assert isinstance(events[-1], GenerationFailed)
    assert "out of memory" in events[-1].error and events[-1].reasoning == "partial"


# -- other servers' dialects ------------------------------------------------------------------

class Scripted(BaseHTTPRequestHandler):
    """Answers /models with one model and /chat/completions with ``self.server.script``."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._send(200, "application/json", json.dumps({"data": [{"id": "remote", "max_model_len": 4096}]}).encode())

    def do_POST(self):
        self.server.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        status, ctype, body = self.server.script
        self._send(status, ctype, body)

    def _send(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.end_headers()  # HTTP/1.0: the body ends when the connection closes
        self.wfile.write(body)


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.bodies = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def sse(*deltas, finish="stop", usage=None):
    out = []
    for delta in deltas:
        out.append("data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}) + "\n\n")
    out.append("data: " + json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}) + "\n\n")
    if usage:
        out.append("data: " + json.dumps({"choices": [], "usage": usage}) + "\n\n")
    out.append(": keep-alive comment\n\ndata: [DONE]\n\n")
    return (200, "text/event-stream", "".join(out).encode())


def url(server):
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def test_vllm_reasoning_field_feeds_the_reasoning_pane(scripted):
    scripted.script = sse({"role": "assistant"}, {"reasoning": "Think "}, {"reasoning": "hard."},
                          {"content": "\n\nDone."}, usage={"prompt_tokens": 11, "completion_tokens": 4})
    endpoint = EndpointBackend(url(scripted))
    assert endpoint.info.context_length == 4096
    done = run(endpoint)[-1]
    assert (done.reasoning, done.answer) == ("Think hard.", "Done.")
    assert (done.stats.prompt_tokens, done.stats.completion_tokens) == (11, 4)


def test_inline_think_tags_in_content_are_split_by_the_engine(scripted):
    scripted.script = sse({"content": "<thi"}, {"content": "nk>Hmm, "}, {"content": "ok.</think>"},
                          {"content": "Answer."}, finish="length")
    done = run(EndpointBackend(url(scripted)))[-1]
    assert (done.reasoning, done.answer) == ("Hmm, ok.", "Answer.")
    assert done.stats.finish_reason == "length"


def test_a_server_that_ignores_stream_true_still_works(scripted):
    completion = {"choices": [{"message": {"role": "assistant", "content": "<think>r</think>a"}, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    scripted.script = (200, "application/json", json.dumps(completion).encode())
    done = run(EndpointBackend(url(scripted)))[-1]
    assert (done.reasoning, done.answer) == ("r", "a")


def test_a_stream_cut_off_mid_reply_is_a_failure_not_a_finished_answer(scripted):
    # The server died mid-reply: no finish_reason, no [DONE]. The partial text stays, marked failed.
    chunk = "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "<think>half a tho"}}]}) + "\n\n"
    scripted.script = (200, "text/event-stream", chunk.encode())
    failed = run(EndpointBackend(url(scripted)))[-1]
    assert isinstance(failed, GenerationFailed) and "before the reply was finished" in failed.error
    assert failed.reasoning == "half a tho"
    only_done = "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "ok"}}]}) + "\n\ndata: [DONE]\n\n"
    scripted.script = (200, "text/event-stream", only_done.encode())  # [DONE] alone also ends a reply
    assert run(EndpointBackend(url(scripted)))[-1].answer == "ok"


def test_http_errors_become_one_line(scripted):
    scripted.script = (500, "text/html", b"<html>\nInternal Server Error\n</html>")
    failed = run(EndpointBackend(url(scripted)))[-1]
    assert isinstance(failed, GenerationFailed) and "HTTP 500" in failed.error and "\n" not in failed.error
    scripted.script = (400, "application/json", json.dumps({"error": {"message": "prompt too long"}}).encode())
    failed = run(EndpointBackend(url(scripted)))[-1]
    assert failed.error.endswith("HTTP 400: prompt too long")


def test_continue_final_asks_the_server_to_continue(scripted):
    scripted.script = sse({"content": "more"})
    endpoint = EndpointBackend(url(scripted))
    list(stream_events(endpoint, [Message("user", "q"), Message("assistant", "part")], GenerationSettings(),
                       continue_final=True))
    body = scripted.bodies[-1]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["model"] == "remote" and body["stream"] is True


@pytest.mark.parametrize("given,expected", [
    ("127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
    ("http://localhost:8000", "http://localhost:8000/v1"),
    ("http://localhost:8000/", "http://localhost:8000/v1"),
    ("https://host.example/openai/v1/", "https://host.example/openai/v1"),
])
def test_base_url_normalisation(given, expected):
    assert normalize_base_url(given) == expected


@pytest.mark.parametrize("bad", ["ftp://host/v1", "http://", "http://host:99999/v1", "http://[::1", "http://[::1/v1"])
def test_bad_urls_are_usage_errors(bad):
    with pytest.raises(UsageError):
        normalize_base_url(bad)
