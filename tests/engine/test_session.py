"""ChatSession and stream_events over the scripted backend."""

from __future__ import annotations

import threading
import time

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


def test_live_reply_shows_deltas_mid_stream_to_another_thread_and_the_turn_is_exact_at_the_end():
    n = 200
    script = ["<think>"] + [f"r{i} " for i in range(n)] + ["</think>"] + [f"a{i} " for i in range(n)]
    session = ChatSession(FakeBackend([script], delay=0.001), GenerationSettings(max_new_tokens=10_000))
    events = session.send("q")
    live = session.live  # there before the generation starts
    assert live.reasoning == [] and live.answer == []
    seen: list[tuple[str, str]] = []  # what a reader saw mid-stream, as the UI reads it
    final = []
    worker = threading.Thread(target=lambda: final.extend(events))
    worker.start()
    while worker.is_alive():
        m = len(live.answer)  # answer first: all reasoning is appended before any answer
        k = len(live.reasoning)
        seen.append(("".join(live.reasoning[:k]), "".join(live.answer[:m])))
        if m:
            assert live.reasoning_tokens == n  # the reasoning was complete once the answer started
        time.sleep(0.002)
    worker.join()
    done = final[-1]
    assert isinstance(done, GenerationDone)
    full_reasoning, full_answer = " ".join(f"r{i}" for i in range(n)), " ".join(f"a{i}" for i in range(n))
    assert any(0 < len(r.split()) < n and not a for r, a in seen)  # part of the reasoning, mid-stream
    assert any(0 < len(a.split()) < n for _, a in seen)  # and part of the answer
    for reasoning, answer in seen:  # every sight is a prefix of the reply
        assert full_reasoning.startswith(reasoning.strip()) and full_answer.startswith(answer.strip())
        assert not answer or reasoning.strip() == full_reasoning
    turn = session.turns[-1]
    assert (turn.reasoning, turn.answer) == (done.reasoning, done.answer) == ("".join(live.reasoning), "".join(live.answer))
    assert (live.reasoning_tokens, live.answer_tokens) == (n, n)


def test_a_consumer_that_stops_early_keeps_every_delta_it_was_given():
    script = ["<think>", "r1 ", "r2", "</think>", "a1 ", "a2 ", "a3"]
    session = ChatSession(FakeBackend([script]))
    events = session.send("q")
    for event in events:
        if isinstance(event, AnswerDelta) and event.text.strip() == "a2":
            break
    events.close()  # the consumer gives up mid-answer: what it was given is kept
    turn = session.turns[-1]
    assert (turn.reasoning, turn.answer) == ("r1 r2", "a1 a2 ")
    assert turn.stats is None and not turn.error


def test_a_failure_keeps_the_partial_text():
    class Breaks(FakeBackend):
        def stream(self, *args, **kwargs):
            yield from super().stream(*args, **kwargs)
            raise BackendError("server went away")

    session = ChatSession(Breaks([["<think>", "half a ", "thought", "</think>", "and an ans"]]))
    events = list(session.send("q"))
    failed = events[-1]
    assert isinstance(failed, GenerationFailed) and failed.error == "server went away"
    turn = session.turns[-1]
    assert (turn.reasoning, turn.answer, turn.error) == ("half a thought", "and an ans", "server went away")
    assert "".join(session.live.answer) == "and an ans"


def test_continue_keeps_the_earlier_text_and_the_live_reply_holds_only_the_new_deltas():
    b = FakeBackend([["<think>", "part one"], [" part two", "</think>", "Answer"]])
    s = ChatSession(b, GenerationSettings(max_new_tokens=2))
    list(s.send("Q"))
    s.generation = GenerationSettings()
    list(s.continue_last())
    assert "".join(s.live.reasoning) == " part two" and "".join(s.live.answer) == "Answer"
    assert (s.turns[-1].reasoning, s.turns[-1].answer) == ("part one part two", "Answer")


def test_compare_answers_the_same_prompt_without_then_with_the_adapter():
    b = FakeBackend([["<think>", "b-why", "</think>", "base answer"], ["<think>", "a-why", "</think>", "adapter answer"],
                     ["second"]], known_adapters={"ad": "fake-model"})
    b.set_adapter("ad")
    s = ChatSession(b)
    base_events = list(s.send_compare("Q"))
    assert isinstance(base_events[-1], GenerationDone) and b.info.adapter == "ad"  # switched back on after
    list(s.answer_last())
    turn = s.turns[-1]
    assert (turn.base.reasoning, turn.base.answer) == ("b-why", "base answer")
    assert (turn.reasoning, turn.answer) == ("a-why", "adapter answer")
    assert b.adapters_used == ["", "ad"] and b.calls[0] == b.calls[1]  # same prompt, adapter off then on
    list(s.send("Q2"))  # the conversation goes on with the adapter's answers only
    assert [m.content for m in b.calls[-1] if m.role == "assistant"] == ["adapter answer"]
