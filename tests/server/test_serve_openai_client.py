"""The official `openai` client against `medchat serve` (FakeBackend) on loopback."""

from __future__ import annotations

import json
import urllib.request

import openai
import pytest
from serve_fakes import ANSWER, REASONING, RepeatingFakeBackend

from medchat.server import ServerConfig
from medchat.server.background import serve_in_thread

USER = [{"role": "user", "content": "What is 6 x 7?"}]


def client(url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=10)


def test_non_streaming_puts_reasoning_and_answer_in_their_own_fields(fake_server_url):
    reply = client(fake_server_url).chat.completions.create(model="fake-model", messages=USER)
    message = reply.choices[0].message
    assert message.content == ANSWER
    assert message.reasoning_content == REASONING
    assert message.reasoning == REASONING  # the newer vLLM name, for clients that read that one
    assert reply.choices[0].finish_reason == "stop"
    assert reply.object == "chat.completion"
    assert reply.usage.completion_tokens == 6
    assert reply.usage.completion_tokens_details.reasoning_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_deltas_carry_reasoning_content_then_content(fake_server_url):
    stream = client(fake_server_url).chat.completions.create(
        model="fake-model", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    answer = "".join(d.content or "" for d in deltas)
    assert (reasoning, answer) == (REASONING, ANSWER)
    assert "".join(getattr(d, "reasoning", None) or "" for d in deltas) == REASONING
    # Reasoning strictly before the answer; no delta mixes the two fields.
    kinds = [("r" if getattr(d, "reasoning_content", None) else "a") for d in deltas if d.content or getattr(d, "reasoning_content", None)]
    assert kinds == sorted(kinds, reverse=True)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    assert len({c.id for c in chunks}) == 1


def test_models_and_health(fake_server_url):
    models = client(fake_server_url).models.list()
    assert [m.id for m in models.data] == ["fake-model"]
    with urllib.request.urlopen(fake_server_url.replace("/v1", "/health"), timeout=5) as resp:
        assert resp.status == 200 and json.load(resp)["status"] == "ok"


def test_retrieve_one_model(fake_server_url):
    api = client(fake_server_url)
    assert api.models.retrieve("fake-model").id == "fake-model"
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve("gpt-9")


def test_sampling_fields_reach_the_backend_as_generation_settings(fake_server, monkeypatch):
    seen = []
    original = fake_server.backend.stream

    def spy(messages, settings, cancel, continue_final=False):
        seen.append(settings)
        return original(messages, settings, cancel, continue_final)

    monkeypatch.setattr(fake_server.backend, "stream", spy)
    client(fake_server.base_url).chat.completions.create(
        model="fake-model", messages=USER, temperature=0.2, top_p=0.5, max_tokens=7, seed=3,
        extra_body={"top_k": 5},
    )
    s = seen[0]
    assert (s.temperature, s.top_p, s.max_new_tokens, s.seed, s.top_k) == (0.2, 0.5, 7, 3, 5)


def test_max_tokens_ends_with_finish_reason_length(fake_server_url):
    reply = client(fake_server_url).chat.completions.create(model="fake-model", messages=USER, max_tokens=2)
    assert reply.choices[0].finish_reason == "length"


def test_stop_string_ends_the_answer_before_it(fake_server_url):
    reply = client(fake_server_url).chat.completions.create(model="fake-model", messages=USER, stop=[" is"])
    assert reply.choices[0].message.content == "The answer"
    assert reply.choices[0].finish_reason == "stop"
    stream = client(fake_server_url).chat.completions.create(
        model="fake-model", messages=USER, stop=" is", stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "The answer"


def test_only_answers_of_earlier_turns_reach_the_model(fake_server):
    client(fake_server.base_url).chat.completions.create(
        model="fake-model",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": "Hello.", "reasoning_content": "greet back"},
            {"role": "user", "content": "Bye"},
        ],
    )
    sent = fake_server.backend.calls[-1]
    assert [(m.role, m.content) for m in sent] == [
        ("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."), ("user", "Bye"),
    ]


def test_api_key_required_when_set():
    with serve_in_thread(RepeatingFakeBackend(), config=ServerConfig(api_key="s3cret")) as server:
        with pytest.raises(openai.AuthenticationError) as err:
            client(server.base_url, "wrong").models.list()
        assert err.value.status_code == 401
        assert err.value.body["code"] == "invalid_api_key"
        reply = client(server.base_url, "s3cret").chat.completions.create(model="fake-model", messages=USER)
        assert reply.choices[0].message.content == ANSWER
        # /health stays open for load balancers and probes.
        with urllib.request.urlopen(server.base_url.replace("/v1", "/health"), timeout=5) as resp:
            assert resp.status == 200


def test_adapter_and_base_model_are_both_served_and_switched_per_request():
    backend = RepeatingFakeBackend(known_adapters={"med-lora": "fake-model"})
    backend.set_adapter("med-lora")
    with serve_in_thread(backend) as server:
        api = client(server.base_url)
        assert [m.id for m in api.models.list().data] == ["med-lora", "fake-model"]
        api.chat.completions.create(model="fake-model", messages=USER)
        assert backend.info.adapter == ""
        reply = api.chat.completions.create(model="med-lora", messages=USER)
        assert backend.info.adapter == "med-lora" and reply.model == "med-lora"


def test_backend_failure_before_output_is_a_json_error_not_a_dropped_connection(fake_server):
    from medchat.errors import BackendError

    fake_server.backend.replies.append(BackendError("the model crashed"))
    with pytest.raises(openai.InternalServerError) as err:
        client(fake_server.base_url).chat.completions.create(model="fake-model", messages=USER, stream=True)
    assert "the model crashed" in str(err.value)
    # ...and the server keeps serving.
    assert client(fake_server.base_url).chat.completions.create(model="fake-model", messages=USER).choices


def test_failure_mid_stream_arrives_as_an_error_event(fake_server):
    class Boom(Exception):
        pass

    backend = fake_server.backend
    real_stream = backend.stream

    def failing(messages, settings, cancel, continue_final=False):
        for i, item in enumerate(real_stream(messages, settings, cancel, continue_final)):
            if i == 3:
                raise Boom("out of memory")
            yield item

    backend.stream = failing
    stream = client(fake_server.base_url).chat.completions.create(model="fake-model", messages=USER, stream=True)
    with pytest.raises(openai.APIError) as err:
        list(stream)
    assert "out of memory" in str(err.value)


def test_server_system_prompt_fills_in_only_when_the_client_sends_none():
    backend = RepeatingFakeBackend()
    with serve_in_thread(backend, config=ServerConfig(system_prompt="Be a careful clinician.")) as server:
        api = client(server.base_url)
        api.chat.completions.create(model="fake-model", messages=USER)
        assert [(m.role, m.content) for m in backend.calls[-1]][0] == ("system", "Be a careful clinician.")
        api.chat.completions.create(model="fake-model", messages=[{"role": "system", "content": "Mine."}, *USER])
        assert [m.content for m in backend.calls[-1] if m.role == "system"] == ["Mine."]
