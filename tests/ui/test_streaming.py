"""The worker→UI hand-over: batching without holding text back, and the pacing of UI takes."""

from __future__ import annotations

from medchat.engine.events import AnswerDelta, GenerationDone, ReasoningDelta
from medchat.ui.streaming import Chunk, StreamBuffer, StreamReady, TakePacer, pump


def test_buffer_joins_runs_of_one_kind_and_signals_once_per_take():
    posted = []
    buffer = StreamBuffer(7, posted.append)
    events = [ReasoningDelta("a", 1), ReasoningDelta("b", 1), AnswerDelta("c", 1), AnswerDelta("d", 2),
              GenerationDone("ab", "cd")]
    assert pump(events, buffer) == events[-1]
    assert len(posted) == 1 and isinstance(posted[0], StreamReady) and posted[0].turn_id == 7
    items = buffer.take()
    assert [(i.kind, i.text, i.tokens) for i in items[:2]] == [("reasoning", "ab", 2), ("answer", "cd", 3)]
    assert isinstance(items[2], GenerationDone)
    buffer.put(AnswerDelta("e", 1))  # after a take, the next item signals again
    assert len(posted) == 2 and [i.text for i in buffer.take() if isinstance(i, Chunk)] == ["e"]


def test_pacer_spaces_takes_by_the_cost_of_drawing():
    cpu, wall = [0.0], [100.0]
    pacer = TakePacer(min_interval=0.03, max_interval=0.5, duty=0.1, first_cost=0.01,
                      cpu=lambda: cpu[0], wall=lambda: wall[0])
    pacer.reset()
    assert abs(pacer.wait() - 0.1) < 1e-9  # the first take waits too: a take costs ~10 ms, at 10 %
    wall[0] += 0.1
    assert pacer.wait() == 0
    pacer.took()
    cpu[0] += 0.001  # cheap drawing: the interval shrinks towards the minimum
    wall[0] += 0.05
    pacer.took()
    assert 0.03 <= pacer.interval < 0.1
    for _ in range(10):  # 40 ms of UI CPU per take: at 10 % duty, takes 0.4 s apart
        cpu[0] += 0.04
        wall[0] += 0.4
        pacer.took()
    assert 0.35 < pacer.interval <= 0.4
    assert 0 < pacer.wait() <= pacer.interval
    cpu[0] += 5.0  # a huge frame never stalls the stream for more than max_interval
    pacer.took()
    assert pacer.interval == 0.5
    pacer.reset()  # the next reply starts afresh (its first take does not pay for the last one's)
    assert abs(pacer.wait() - 0.1) < 1e-9


def test_pacer_counts_all_ui_time_since_the_reply_started():
    cpu, wall = [0.0], [0.0]
    pacer = TakePacer(min_interval=0.1, max_interval=1.0, duty=0.05, first_cost=0.001,
                      cpu=lambda: cpu[0], wall=lambda: wall[0])
    pacer.reset()
    assert pacer.wait() == 0.1  # never sooner than min_interval
    cpu[0] += 0.03  # the UI was busy before its first take (timers, a resize…): that counts
    wall[0] += 0.1
    pacer.took()
    assert abs(pacer.interval - (0.5 * 0.1 + 0.5 * 0.03 / 0.05)) < 1e-9


def test_pump_hands_over_bare_text_and_runs_continue_across_takes():
    posted = []
    buffer = StreamBuffer(1, posted.append)
    taken = []

    def events():
        yield ReasoningDelta("a", 1)
        yield ReasoningDelta("b", 1)
        taken.append(buffer.take())  # the UI takes mid-run
        yield ReasoningDelta("c", 1)
        yield ReasoningDelta("d", 1)
        yield AnswerDelta("e", 1)
        yield GenerationDone("abcd", "e")

    done = pump(events(), buffer)
    assert isinstance(done, GenerationDone)
    # After a run's first event, its tokens wait as plain strings (not tracked by the collector).
    assert all(type(e) is str for e in list(buffer.events)[:2])
    taken.append(buffer.take())
    first, second = taken
    assert [(i.kind, i.text, i.tokens) for i in first] == [("reasoning", "ab", 2)]
    assert [(i.kind, i.text, i.tokens) for i in second[:2]] == [("reasoning", "cd", 2), ("answer", "e", 1)]
    assert second[2] is done
    assert len(posted) == 2  # once before the first take, once after it


def test_pump_without_a_final_event_returns_none():
    buffer = StreamBuffer(1, lambda message: None)
    assert pump(iter([AnswerDelta("x", 1)]), buffer) is None
    assert pump(iter([]), StreamBuffer(2, lambda message: None)) is None


def test_markdown_chunks_split_only_at_paragraph_breaks_outside_code_fences():
    from medchat.ui.widgets.streaming_markdown import split_chunks, split_point

    assert split_point("abc\n\ndef", "") == 5
    assert split_point("no break", "") == -1
    assert split_point("```\ncode\n\nmore\n```\n\nafter", "") == len("```\ncode\n\nmore\n```\n\n")
    assert split_point("still code\n\n```\n\nout", "```py\n") == len("still code\n\n```\n\n")
    text = "".join(f"para {i} " * 30 + "\n\n" for i in range(40)) + "```\n" + "x = 1\n\n" * 50 + "```\n"
    chunks = split_chunks(text, size=500)
    assert "".join(chunks) == text and len(chunks) > 5
    assert all(c.count("```") % 2 == 0 for c in chunks)  # never cut inside a fence
    assert split_chunks("") == [""]
