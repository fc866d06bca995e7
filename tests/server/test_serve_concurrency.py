"""Many clients, one model: queued, uninterleaved, and a client that leaves cancels only its own reply."""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
from serve_fakes import EchoBackend, echo_expected

from medchat.server.background import serve_in_thread


def stream_one(url: str, question: str) -> tuple[str, str, str]:
    api = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=30)
    reasoning, answer, finish = [], [], None
    for chunk in api.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": question}], stream=True
    ):
        for choice in chunk.choices:
            reasoning.append(getattr(choice.delta, "reasoning_content", None) or "")
            answer.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    return "".join(reasoning), "".join(answer), finish


def test_16_concurrent_streaming_clients_each_get_their_own_complete_answer():
    backend = EchoBackend(delay=0.002)
    with serve_in_thread(backend) as server:
        questions = [f"q{i:02d}" for i in range(16)]
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda q: stream_one(server.base_url, q), questions))
        for q, (reasoning, answer, finish) in zip(questions, results):
            assert (reasoning, answer) == echo_expected(q), f"{q} got another client's text"
            assert finish == "stop"
        assert len(backend.calls) == 16
        assert server.gate.waiting == 0
        # Alive afterwards.
        assert stream_one(server.base_url, "after")[1] == echo_expected("after")[1]


def open_stream(server, question: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": question}]}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    return conn, conn.getresponse()


def wait_for(predicate, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_a_client_that_disconnects_mid_stream_cancels_its_generation():
    backend = EchoBackend(words=400, delay=0.02)  # about 16 s if nobody cancels
    with serve_in_thread(backend) as server:
        conn, resp = open_stream(server, "long")
        assert resp.status == 200
        first = resp.readline()  # the first SSE event: the reply has started streaming
        assert first.startswith(b"data: {") and json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
        conn.sock.close()  # the client goes away
        conn.close()
        assert wait_for(lambda: backend.cancels and backend.cancels[0].is_set())
        # The model is free again at once for the next client.
        start = time.monotonic()
        backend.words = 3
        assert stream_one(server.base_url, "next")[1] == echo_expected("next", 3)[1]
        assert time.monotonic() - start < 5


def test_a_client_that_leaves_while_queued_never_starts_a_generation():
    backend = EchoBackend(words=60, delay=0.02)  # the first request holds the model for about 2.5 s
    with serve_in_thread(backend) as server:
        first = threading.Thread(target=stream_one, args=(server.base_url, "first"))
        first.start()
        assert wait_for(lambda: len(backend.calls) == 1)
        conn, _ = None, None
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
        body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "queued"}]}
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        assert wait_for(lambda: server.gate.waiting == 1)
        conn.close()  # leave without reading anything
        assert wait_for(lambda: server.gate.waiting == 0)
        first.join()
        assert [c[-1].content for c in backend.calls] == ["first"]


def test_non_streaming_client_that_disconnects_cancels_too():
    backend = EchoBackend(words=400, delay=0.02)
    with serve_in_thread(backend) as server:
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
        body = {"model": "fake-model", "messages": [{"role": "user", "content": "long"}]}
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        assert wait_for(lambda: len(backend.calls) == 1)
        conn.close()
        assert wait_for(lambda: backend.cancels[0].is_set())
