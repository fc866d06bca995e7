"""The thinking budget in the chat engine's own decode loops (fast decoder and transformers generate),
on the embedded model with a prompt that opens <think>: the reasoning stops at the budget, </think> is
written by the engine, and the model answers."""

from __future__ import annotations

import pytest

from medchat.chatformat.messages import Message
from medchat.config import GenerationSettings, load_settings
from medchat.engine.events import GenerationDone
from medchat.engine.session import stream_events

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("decoder", ["fast", "generate"])
def test_budget_closes_the_reasoning_and_the_model_answers(embedded_model, decoder):
    from medchat.engine.backends import open_local

    backend = open_local(load_settings({"model": "smollm2", "decoder": decoder, "device": "cpu"}), lambda _m: None)
    assert (decoder == "fast") == (backend.info.decoder != "transformers generate (decoder = generate)")
    backend.prompt_style = "r1-medical"  # the prompt ends inside <think>
    msgs = [Message("user", "Why does iron deficiency cause anaemia?")]
    for budget in (3, 0):
        gen = GenerationSettings(temperature=0.0, max_new_tokens=24, think_budget=budget)
        done = list(stream_events(backend, msgs, gen))[-1]
        assert isinstance(done, GenerationDone)
        assert done.answer.strip() and done.stats.finish_reason != "length_in_reasoning"
        assert len(done.reasoning.split()) <= budget + 1
    unlimited = list(stream_events(backend, msgs, GenerationSettings(temperature=0.0, max_new_tokens=24)))[-1]
    assert unlimited.stats.finish_reason == "length_in_reasoning"  # without a budget it is still thinking
    backend.close()
