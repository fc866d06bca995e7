"""`medchat serve` on uvicorn: bounded connections, concurrent clients, shutdown, hostile input."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from serve_fakes import ANSWER, REASONING, EchoBackend, RepeatingFakeBackend, echo_expected

from medchat.server import ServerConfig
from medchat.server.background import serve_in_thread

USER = [{"role": "user", "content": "What is 6 x 7?"}]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=30)


def wait_for(predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def post(server, body: bytes, **headers) -> httpx.Response:
    return httpx.post(server.base_url + "/chat/completions", content=body, timeout=10,
                      headers={"Content-Type": "application/json", **headers})


# -- the official client ----------------------------------------------------------------------------

def test_openai_client_streaming_and_not(fake_server_url):
    reply = client(fake_server_url).chat.completions.create(model="fake-model", messages=USER)
    assert (reply.choices[0].message.reasoning_content, reply.choices[0].message.content) == (REASONING, ANSWER)
    chunks = list(client(fake_server_url).chat.completions.create(model="fake-model", messages=USER, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == REASONING
    assert "".join(d.content or "" for d in deltas) == ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_four_concurrent_streams_each_get_their_own_reply():
    backend = EchoBackend(words=20, delay=0.005)

    def one(question: str) -> tuple[str, str]:
        reasoning, answer = [], []
        for chunk in client(server.base_url).chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": question}], stream=True
        ):
            for choice in chunk.choices:
                reasoning.append(getattr(choice.delta, "reasoning_content", None) or "")
                answer.append(choice.delta.content or "")
        return "".join(reasoning), "".join(answer)

    with serve_in_thread(backend) as server:
        questions = ["alpha", "beta", "gamma", "delta"]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(one, questions))
    assert results == [echo_expected(q, 20) for q in questions]


def test_invalid_json_is_a_400_in_the_openai_shape(fake_server):
    reply = post(fake_server, b'{"model": "fake-model", "messages": [')
    assert reply.status_code == 400 and reply.headers["content-type"] == "application/json"
    assert reply.json()["error"]["code"] == "invalid_json"
    with pytest.raises(openai.BadRequestError) as err:  # a wrong type through the official client
        client(fake_server.base_url).chat.completions.create(model="fake-model", messages=USER,
                                                              extra_body={"max_tokens": "many"})
    assert err.value.body["param"] == "max_tokens" and err.value.body["code"] == "invalid_type"


@pytest.mark.parametrize("body,param", [
    (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "messages[0].content"),  # lone surrogate
    (b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "a\\udfff"}]}]}', "messages[0].content[0].text"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud83d"]}', "stop"),
    (b'{"model": "\\ud800", "messages": [{"role": "user", "content": "hi"}]}', "model"),
])
def test_text_that_is_not_unicode_is_a_400_naming_the_field(fake_server, body, param):
    reply = post(fake_server, body)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == param


@pytest.mark.parametrize("body", [
    b"[" * 100_000,
    b'{"messages": [{"role": "user", "content": ' + b"[" * 5000 + b"]" * 5000 + b"}]}",
    b'{"messages": [{"role": "user", "content": "hi"}], "metadata": ' + b"[" * 900 + b"]" * 900 + b"}",
])
def test_deeply_nested_json_is_never_a_500(fake_server, body):
    reply = post(fake_server, body)
    assert 200 <= reply.status_code < 500, reply.text
    if reply.status_code >= 400:
        assert set(reply.json()["error"]) == {"message", "type", "param", "code"}


def test_a_chunked_request_body_is_read(fake_server):
    body = json.dumps({"model": "fake-model", "messages": USER}).encode()
    reply = httpx.post(fake_server.base_url + "/chat/completions", content=iter([body[:10], body[10:]]), timeout=10)
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == ANSWER


def test_a_chunked_body_past_the_limit_is_413(fake_server):
    from medchat.server.app import MAX_BODY

    pieces = iter([b"x" * (1024 * 1024)] * (MAX_BODY // (1024 * 1024) + 1))
    reply = httpx.post(fake_server.base_url + "/chat/completions", content=pieces, timeout=30)
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large"


def test_queue_full_is_a_503_in_the_openai_shape():
    backend = EchoBackend(words=200, delay=0.01)  # about 4 s per reply
    with serve_in_thread(backend, config=ServerConfig(max_waiting=1)) as server:
        running = threading.Thread(target=lambda: post(server, json.dumps({"messages": USER}).encode()), daemon=True)
        running.start()
        assert wait_for(lambda: len(backend.calls) == 1)
        queued = threading.Thread(target=lambda: post(server, json.dumps({"messages": USER}).encode()), daemon=True)
        queued.start()
        assert wait_for(lambda: server.gate.waiting == 1)
        reply = post(server, json.dumps({"messages": USER}).encode())
        assert reply.status_code == 503 and reply.json()["error"]["code"] == "queue_full"
        assert httpx.get(server.base_url.removesuffix("/v1") + "/health", timeout=5).json()["waiting"] == 1
        server.cancel_all()


def test_log_requests_writes_one_line_per_request():
    lines: list[str] = []
    with serve_in_thread(RepeatingFakeBackend(), config=ServerConfig(log=lines.append)) as server:
        client(server.base_url).chat.completions.create(model="fake-model", messages=USER)
        httpx.get(server.base_url + "/nope", timeout=5)
    assert lines[0].startswith('127.0.0.1 "POST /v1/chat/completions" 200 ') and lines[0].endswith("s")
    assert lines[1].startswith('127.0.0.1 "GET /v1/nope" 404 ')


# -- connections that do nothing ------------------------------------------------------------------

def idle_sockets(server, n: int) -> list[socket.socket]:
    return [socket.create_connection(server.server_address, timeout=10) for _ in range(n)]


def test_many_idle_connections_do_not_keep_a_request_out(fake_server):
    """More idle connections than the server's connection limit (128 by default): the ones idle
    longest are closed to make room, so a real client is still answered."""
    idle = idle_sockets(fake_server, 300)
    try:
        reply = client(fake_server.base_url).chat.completions.create(model="fake-model", messages=USER)
        assert reply.choices[0].message.content == ANSWER
        stream = client(fake_server.base_url).chat.completions.create(model="fake-model", messages=USER, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == ANSWER
    finally:
        for sock in idle:
            sock.close()


def test_more_idle_connections_than_select_can_watch():
    """1,100 idle sockets (past select()'s 1,024 file descriptors, which stopped the old server)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2600  # both ends of every connection live in this process
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    try:
        with serve_in_thread(EchoBackend(words=30, delay=0.02)) as server:  # replies take about 1 s
            idle = idle_sockets(server, 1100)
            try:
                stream = client(server.base_url).chat.completions.create(
                    model="fake-model", messages=[{"role": "user", "content": "q"}], stream=True
                )
                answer = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
                assert answer == echo_expected("q", 30)[1]  # whole: not taken for a client that left
            finally:
                for sock in idle:
                    sock.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("sent", [b"", b"GET /health HTTP/1.1\r\nHost: x\r\n"], ids=["nothing", "half a request head"])
def test_a_connection_that_never_completes_a_request_is_closed(sent):
    with serve_in_thread(RepeatingFakeBackend(), config=ServerConfig(header_timeout_s=0.3)) as server:
        with socket.create_connection(server.server_address, timeout=10) as sock:
            sock.sendall(sent)
            start = time.monotonic()
            assert sock.recv(1024) == b""  # closed by the server, not by our timeout
            assert time.monotonic() - start < 9


def test_an_idle_keep_alive_connection_is_closed_after_keep_alive_s():
    with serve_in_thread(RepeatingFakeBackend(), config=ServerConfig(keep_alive_s=1)) as server:
        with socket.create_connection(server.server_address, timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while not reply.endswith(b"}"):  # the head, then the JSON body
                reply += sock.recv(65536)
            assert b" 200 " in reply.split(b"\r\n")[0]
            assert sock.recv(1024) == b""  # then, quiet for keep_alive_s, the server closes it


# -- stopping ---------------------------------------------------------------------------------------

def test_a_stream_open_at_shutdown_ends_with_an_error_event():
    backend = EchoBackend(words=400, delay=0.02)
    with serve_in_thread(backend) as server:
        with httpx.stream("POST", server.base_url + "/chat/completions", timeout=10,
                          json={"messages": USER, "stream": True}) as reply:
            lines = reply.iter_lines()
            assert next(lines).startswith("data: {")
            server.cancel_all()  # what Ctrl+C does first
            events = [line[6:] for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "shutting_down"
    assert backend.cancels[0].is_set()


SERVE_FAKE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {fakes!r})
    from serve_fakes import EchoBackend
    from medchat.server import ServerConfig
    from medchat.server.run import serve_backend

    say = lambda line: print("medchat: " + line, file=sys.stderr, flush=True)
    serve_backend(EchoBackend(words=2000, delay=0.01), "127.0.0.1", 0, ServerConfig(), say)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_the_server_with_one_line_even_mid_stream(sig):
    code = SERVE_FAKE.format(fakes=str(Path(__file__).parent))
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        first = proc.stderr.readline()
        url = first.split(" at ")[1].split(" ")[0]
        with httpx.stream("POST", url + "/chat/completions", timeout=30,
                          json={"messages": USER, "stream": True}) as reply:
            lines = reply.iter_lines()
            assert next(lines).startswith("data: {")  # a generation is under way
            proc.send_signal(sig)
            tail = [line for line in lines if line.startswith("data: ")]
        assert tail[-1] == "data: [DONE]" and "shutting_down" in tail[-2]
        assert proc.wait(timeout=30) == 0
        assert proc.stderr.read().splitlines() == ["medchat: stopped serving"]
    finally:
        proc.kill()
        proc.wait()


# -- imports ----------------------------------------------------------------------------------------

def test_the_cli_imports_no_server_or_http_library():
    code = ("import sys, medchat.cli.main, medchat.engine.backends, medchat.engine.backends.endpoint, medchat.server.gate\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'fastapi', 'starlette', 'uvicorn', 'httpx', 'httpcore', 'openai', 'h11', 'anyio'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
