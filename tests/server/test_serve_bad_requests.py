"""Every bad request gets a 4xx JSON error in the OpenAI shape: never a 500, never a dropped connection."""

from __future__ import annotations

import http.client
import json
import socket

import pytest
from serve_fakes import RepeatingFakeBackend

from medchat.server import ServerConfig
from medchat.server.background import serve_in_thread

OK_MESSAGES = [{"role": "user", "content": "hi"}]


def chat(**fields):
    return json.dumps({"model": "fake-model", "messages": OK_MESSAGES, **fields}).encode()


# (case id, method, path, body, status, error code)
CASES = [
    ("invalid json", "POST", "/v1/chat/completions", b'{"model": ', 400, "invalid_json"),
    ("empty body", "POST", "/v1/chat/completions", b"", 400, "invalid_json"),
    ("not utf-8", "POST", "/v1/chat/completions", b"\xff\xfe{}", 400, "invalid_json"),
    ("body is an array", "POST", "/v1/chat/completions", b"[]", 400, "invalid_type"),
    ("unknown model", "POST", "/v1/chat/completions", chat(model="gpt-9"), 404, "model_not_found"),
    ("model not a string", "POST", "/v1/chat/completions", chat(model=5), 400, "invalid_type"),
    ("messages missing", "POST", "/v1/chat/completions", b'{"model": "fake-model"}', 400, "missing_required_parameter"),
    ("messages null", "POST", "/v1/chat/completions", chat(messages=None), 400, "missing_required_parameter"),
    ("messages empty", "POST", "/v1/chat/completions", chat(messages=[]), 400, "empty_array"),
    ("messages a string", "POST", "/v1/chat/completions", chat(messages="hi"), 400, "invalid_type"),
    ("message not an object", "POST", "/v1/chat/completions", chat(messages=[1]), 400, "invalid_type"),
    ("unknown role", "POST", "/v1/chat/completions", chat(messages=[{"role": "robot", "content": "x"}]), 400, "invalid_role"),
    ("tool role", "POST", "/v1/chat/completions", chat(messages=[{"role": "tool", "content": "x"}]), 400, "invalid_role"),
    ("role missing", "POST", "/v1/chat/completions", chat(messages=[{"content": "x"}]), 400, "invalid_type"),
    ("content a number", "POST", "/v1/chat/completions", chat(messages=[{"role": "user", "content": 5}]), 400, "invalid_type"),
    ("user content null", "POST", "/v1/chat/completions", chat(messages=[{"role": "user", "content": None}]), 400, "invalid_type"),
    ("image part", "POST", "/v1/chat/completions",
     chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), 400, "unsupported_content"),
    ("max_tokens negative", "POST", "/v1/chat/completions", chat(max_tokens=-1), 400, "invalid_value"),
    ("max_tokens zero", "POST", "/v1/chat/completions", chat(max_tokens=0), 400, "invalid_value"),
    ("max_tokens huge", "POST", "/v1/chat/completions", chat(max_tokens=10**12), 400, "invalid_value"),
    ("max_completion_tokens huge", "POST", "/v1/chat/completions", chat(max_completion_tokens=10**30), 400, "invalid_value"),
    ("max_tokens a string", "POST", "/v1/chat/completions", chat(max_tokens="100"), 400, "invalid_type"),
    ("max_tokens a boolean", "POST", "/v1/chat/completions", chat(max_tokens=True), 400, "invalid_type"),
    ("max_tokens fractional", "POST", "/v1/chat/completions", chat(max_tokens=1.5), 400, "invalid_type"),
    ("temperature a string", "POST", "/v1/chat/completions", chat(temperature="hot"), 400, "invalid_type"),
    ("temperature negative", "POST", "/v1/chat/completions", chat(temperature=-0.1), 400, "invalid_value"),
    ("temperature too high", "POST", "/v1/chat/completions", chat(temperature=3), 400, "invalid_value"),
    ("top_p zero", "POST", "/v1/chat/completions", chat(top_p=0), 400, "invalid_value"),
    ("top_p above one", "POST", "/v1/chat/completions", chat(top_p=1.5), 400, "invalid_value"),
    ("top_k below -1", "POST", "/v1/chat/completions", chat(top_k=-2), 400, "invalid_value"),
    ("seed negative", "POST", "/v1/chat/completions", chat(seed=-5), 400, "invalid_value"),
    ("stream not boolean", "POST", "/v1/chat/completions", chat(stream="yes"), 400, "invalid_type"),
    ("stream_options not object", "POST", "/v1/chat/completions", chat(stream=True, stream_options="x"), 400, "invalid_type"),
    ("n above one", "POST", "/v1/chat/completions", chat(n=2), 400, "invalid_value"),
    ("too many stops", "POST", "/v1/chat/completions", chat(stop=list("abcde")), 400, "invalid_value"),
    ("stop not strings", "POST", "/v1/chat/completions", chat(stop=[1]), 400, "invalid_type"),
    ("tools", "POST", "/v1/chat/completions", chat(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "unsupported_parameter"),
    ("logprobs", "POST", "/v1/chat/completions", chat(logprobs=True), 400, "unsupported_parameter"),
    ("json response_format", "POST", "/v1/chat/completions", chat(response_format={"type": "json_object"}), 400, "unsupported_parameter"),
    ("continue without assistant last", "POST", "/v1/chat/completions", chat(continue_final_message=True), 400, "invalid_value"),
    ("GET on completions", "GET", "/v1/chat/completions", None, 405, "method_not_allowed"),
    ("POST on models", "POST", "/v1/models", b"{}", 405, "method_not_allowed"),
    ("unknown route", "POST", "/v1/completions-typo", b"{}", 404, "not_found"),
    ("unknown method", "OPTIONS", "/v1/models", None, 501, None),
]


@pytest.fixture(scope="module")
def server():
    with serve_in_thread(RepeatingFakeBackend(), config=ServerConfig()) as srv:
        yield srv


def request(server, method, path, body, headers=None):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=5)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), json.loads(resp.read())
    finally:
        conn.close()


def assert_error_shape(payload):
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]
    assert isinstance(payload["error"]["type"], str)


@pytest.mark.parametrize("case,method,path,body,status,code", CASES, ids=[c[0] for c in CASES])
def test_bad_request(server, case, method, path, body, status, code):
    got_status, content_type, payload = request(server, method, path, body)
    assert (got_status, content_type) == (status, "application/json")
    assert_error_shape(payload)
    if code:
        assert payload["error"]["code"] == code


def test_errors_name_the_bad_field(server):
    _, _, payload = request(server, "POST", "/v1/chat/completions", chat(max_tokens=-1))
    assert payload["error"]["param"] == "max_tokens"
    assert "max_tokens" in payload["error"]["message"]
    _, _, payload = request(server, "POST", "/v1/chat/completions", chat(messages=[OK_MESSAGES[0], {"role": "robot", "content": ""}]))
    assert payload["error"]["param"] == "messages[1].role"


def test_oversized_body_is_413_and_the_connection_is_closed_cleanly(server):
    status, _, payload = request(server, "POST", "/v1/chat/completions", b"x" * 16,
                                 headers={"Content-Length": str(64 * 1024 * 1024)})
    assert status == 413
    assert_error_shape(payload)


def test_garbage_request_line_gets_a_json_error(server):
    with socket.create_connection(server.server_address[:2], timeout=5) as sock:
        sock.sendall(b"HELLO\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):  # the server closes the connection after the error
            reply += chunk
        reply = reply.decode()
    head, _, body = reply.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.") and " 400 " in head.splitlines()[0]
    assert_error_shape(json.loads(body))


def test_missing_key_is_401_in_openai_shape():
    with serve_in_thread(RepeatingFakeBackend(), config=ServerConfig(api_key="k")) as srv:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "k"}):
            status, _, payload = request(srv, "GET", "/v1/models", None, headers)
            assert status == 401
            assert_error_shape(payload)
        status, _, _ = request(srv, "GET", "/v1/models", None, {"Authorization": "Bearer k"})
        assert status == 200


def test_server_still_answers_after_all_bad_requests(server):
    status, _, payload = request(server, "POST", "/v1/chat/completions", chat())
    assert status == 200 and payload["choices"][0]["message"]["content"] == "The answer is 42."


def test_http_1_0_client_gets_a_stream_that_ends_with_the_connection(server):
    body = chat(stream=True)
    with socket.create_connection(server.server_address[:2], timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, stream = reply.decode().partition("\r\n\r\n")
    assert " 200 " in head.splitlines()[0] and "chunked" not in head.lower()
    events = [line[6:] for line in stream.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text == "The answer is 42."


def test_prompt_longer_than_the_context_window_is_400_and_the_default_budget_shrinks_to_fit():
    backend = RepeatingFakeBackend()
    backend.info = type(backend.info)(**{**backend.info.__dict__, "context_length": 50})
    seen = []
    original = backend.stream
    backend.stream = lambda m, s, c, continue_final=False: (seen.append(s), original(m, s, c, continue_final))[1]
    with serve_in_thread(backend, config=ServerConfig()) as srv:
        long_prompt = [{"role": "user", "content": "word " * 60}]
        status, _, payload = request(srv, "POST", "/v1/chat/completions", chat(messages=long_prompt))
        assert status == 400 and payload["error"]["code"] == "context_length_exceeded"
        status, _, payload = request(srv, "POST", "/v1/chat/completions", chat(max_tokens=49))
        assert status == 400 and payload["error"]["param"] == "max_tokens"
        status, _, _ = request(srv, "POST", "/v1/chat/completions", chat())  # default budget 1200
        assert status == 200 and seen[-1].max_new_tokens == 50 - 5  # FakeBackend counts "hi" as 5 tokens
