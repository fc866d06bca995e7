"""The UI's side of a streaming reply: takes of the live reply without holding text back, and their pacing."""

from __future__ import annotations

import time
from collections import deque

from medchat.engine.events import GenerationDone
from medchat.engine.session import LiveReply
from medchat.ui.streaming import ReplyReader, TakePacer


def test_reader_takes_what_arrived_since_the_last_take_reasoning_first():
    reply = LiveReply()
    reader = ReplyReader(reply)
    assert reader.take() == []  # nothing yet: an empty take
    reply.reasoning += ["a", "b"]
    reply.reasoning_tokens += 2
    assert reader.take() == [("reasoning", "ab", 2)]
    assert reader.take() == []
    reply.reasoning.append("c")
    reply.reasoning_tokens += 1
    reply.answer += ["d", "e"]
    reply.answer_tokens += 3
    assert reader.take() == [("reasoning", "c", 1), ("answer", "de", 3)]
    reply.answer.append("f")  # its counter not raised yet: the text comes now, the token later
    assert reader.take() == [("answer", "f", 0)]
    reply.answer_tokens += 1
    reply.answer.append("g")
    reply.answer_tokens += 1
    assert reader.take() == [("answer", "g", 2)]


def test_reader_beside_a_live_generation_sees_the_whole_reply_in_order():
    import threading

    from medchat.engine.backends.fake import FakeBackend
    from medchat.engine.session import ChatSession

    n = 300
    script = ["<think>"] + [f"r{i} " for i in range(n)] + ["</think>"] + [f"a{i} " for i in range(n)]
    session = ChatSession(FakeBackend([script], delay=0.0005))
    events = session.send("q")
    reader = ReplyReader(session.live)
    final = []
    worker = threading.Thread(target=lambda: final.append(deque(events, maxlen=1)[0]))
    worker.start()
    taken = []
    while worker.is_alive():
        taken += reader.take()
        time.sleep(0.001)
    worker.join()
    taken += reader.take()  # the last take, when the reply has ended
    done = final[0]
    assert isinstance(done, GenerationDone)
    kinds = [kind for kind, _, _ in taken]
    assert kinds.count("reasoning") > 1 and kinds.count("answer") > 1  # taken while it streamed
    assert kinds == sorted(kinds, key=["reasoning", "answer"].index)  # no reasoning after the answer
    assert "".join(t for k, t, _ in taken if k == "reasoning") == done.reasoning
    assert "".join(t for k, t, _ in taken if k == "answer") == done.answer
    assert sum(tokens for _, _, tokens in taken) == 2 * n


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
