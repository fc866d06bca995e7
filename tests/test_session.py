"""ChatSession and stream_events over the scripted backend."""

from __future__ import annotations

import threading

import pytest

from medchat.config import GenerationSettings
from medchat.engine.backends.fake import FakeBackend
from medchat.engine.events import AnswerDelta, GenerationDone, GenerationFailed, ReasoningDelta
from medchat.engine.session import ChatSession, stream_events
from medchat.errors import BackendError, MedchatError


def collect(events):
    events = list(events)
    return events, events[-1]


def test_events_in_order_and_done_carries_full_texts():
    b = FakeBackend([["<think>", "a", " b", "</think>", "Ans", "wer"]])
    events, done = collect(stream_events(b, [], GenerationSettings()))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["ReasoningDelta", "ReasoningDelta", "AnswerDelta", "AnswerDelta", "GenerationDone"]
    assert (done.reasoning, done.answer) == ("a b", "Answer")
    assert done.stats.completion_tokens == 6 and done.stats.finish_reason == "stop"
    assert done.stats.reasoning_seconds is not None


def test_prefilled_template_starts_in_reasoning():
    b = FakeBackend([["thinking", "</think>", "answer"]], opens_in_reasoning=True)
    _, done = collect(stream_events(b, [], GenerationSettings()))
    assert (done.reasoning, done.answer) == ("thinking", "answer")


def test_budget_running_out_inside_reasoning_is_marked():
    b = FakeBackend([["<think>", "a", "b", "c", "d"]])
    _, done = collect(stream_events(b, [], GenerationSettings(max_new_tokens=3)))
    assert done.stats.finish_reason == "length_in_reasoning"


def test_backend_error_becomes_failed_event_with_partial_text():
    b = FakeBackend([BackendError("server went away")])
    _, last = collect(stream_events(b, [], GenerationSettings()))
    assert isinstance(last, GenerationFailed) and last.error == "server went away"


def test_out_of_memory_is_recognised():
    class OutOfMemoryError(RuntimeError):
        pass

    b = FakeBackend([OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")])
    _, last = collect(stream_events(b, [], GenerationSettings()))
    assert last.out_of_memory and "out of memory" in last.error


def test_history_sends_answers_only_never_reasoning():
    b = FakeBackend([["<think>secret chain</think>First answer"], ["Second"]])
    s = ChatSession(b, system_prompt="Be careful.")
    list(s.send("Q1"))
    list(s.send("Q2"))
    sent = b.calls[-1]
    assert [(m.role, m.content) for m in sent] == [
        ("system", "Be careful."), ("user", "Q1"), ("assistant", "First answer"), ("user", "Q2")]
    assert s.turns[0].reasoning == "secret chain"


def test_regenerate_replaces_last_reply():
    b = FakeBackend([["one"], ["two"]])
    s = ChatSession(b)
    list(s.send("Q"))
    list(s.regenerate())
    assert len(s.turns) == 1 and s.turns[0].answer == "two"
    assert [m.role for m in b.calls[-1]] == ["user"]


def test_continue_after_budget_ran_out_in_reasoning():
    b = FakeBackend([["<think>", "part one"], [" part two", "</think>", "Answer"]])
    s = ChatSession(b, GenerationSettings(max_new_tokens=2))
    list(s.send("Q"))
    assert s.turns[-1].can_continue
    s.generation = GenerationSettings()
    list(s.continue_last())
    turn = s.turns[-1]
    assert (turn.reasoning, turn.answer) == ("part one part two", "Answer")
    assert b.calls[-1][-1].role == "assistant" and b.calls[-1][-1].content.startswith("<think>")
    assert turn.stats.completion_tokens == 5


def test_continue_refused_when_nothing_was_cut():
    s = ChatSession(FakeBackend([["done"]]))
    list(s.send("Q"))
    with pytest.raises(MedchatError):
        s.continue_last()


def test_cancel_from_another_thread_stops_promptly():
    b = FakeBackend([[f"w{i} " for i in range(1000)]], delay=0.005)
    s = ChatSession(b)
    seen = []
    stream = s.send("Q")
    timer = threading.Timer(0.1, s.cancel)
    timer.start()
    for e in stream:
        seen.append(e)
    done = seen[-1]
    assert isinstance(done, GenerationDone) and done.stats.finish_reason == "cancelled"
    assert 0 < done.stats.completion_tokens < 1000
    assert s.turns[-1].answer  # the partial output stays
    assert sum(isinstance(e, AnswerDelta) for e in seen) == done.stats.completion_tokens
    assert not any(isinstance(e, ReasoningDelta) for e in seen)


def test_turn_text_follows_the_stream_and_survives_a_consumer_that_stops_early():
    from medchat.engine.session import FLUSH_EVERY

    n = 3 * FLUSH_EVERY
    script = ["<think>"] + [f"r{i} " for i in range(n)] + ["</think>"] + [f"a{i} " for i in range(n)]
    session = ChatSession(FakeBackend([script, script]), GenerationSettings(max_new_tokens=10_000))
    events = session.send("q")
    for event in events:
        turn = session.turns[-1]
        if isinstance(event, AnswerDelta):  # reasoning is complete once the answer starts
            assert turn.reasoning.strip() == " ".join(f"r{i}" for i in range(n))
            break
    events.close()  # the consumer gives up mid-answer: what it was given is kept
    assert session.turns[-1].answer == "a0 "
    events = session.regenerate()
    *_, done = events
    assert (session.turns[-1].reasoning, session.turns[-1].answer) == (done.reasoning, done.answer)
    assert done.answer.split() == [f"a{i}" for i in range(n)]
