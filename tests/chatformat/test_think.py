"""The reasoning splitter: a pure state machine, checked on fixed cases and every chunking."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from medchat.chatformat.think import ReasoningSplitter, split_text
from medchat.engine.events import AnswerDelta, ReasoningDelta


def run(chunks, start_in_reasoning=False):
    s = ReasoningSplitter(start_in_reasoning)
    events = [e for c in chunks for e in s.feed(c)] + s.close()
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    return reasoning, answer, s


def test_reasoning_then_answer():
    assert split_text("<think>\nWhy: low iron.\n</think>\n\nAnaemia.") == ("Why: low iron.\n", "Anaemia.", True)


def test_tags_split_across_chunks_like_smollm_tokens():
    r, a, _ = run(["<", "think", ">", "\nstep one", " step two</", "think", ">", "\nDone."])
    assert (r, a) == ("step one step two", "Done.")


def test_prefilled_think_template_emits_only_the_closing_tag():
    r, a, _ = run(["Hmm, ", "iron.", "</think>", "\n\nAnswer."], start_in_reasoning=True)
    assert (r, a) == ("Hmm, iron.", "Answer.")


def test_no_tags_is_all_answer():
    assert split_text("Just an answer <b>bold</b> 3 < 4.") == ("", "Just an answer <b>bold</b> 3 < 4.", True)


def test_unclosed_think_stays_reasoning_and_is_reported():
    r, a, s = run(["<think>long thought", " that never ends"])
    assert (r, a) == ("long thought that never ends", "")
    assert s.in_reasoning


def test_stray_closing_tag_in_answer_is_dropped():
    assert split_text("<think>a</think>Answer</think> more") == ("a", "Answer more", True)


def test_nested_open_tag_inside_reasoning_is_dropped():
    assert split_text("<think>a <think>b</think>c") == ("a b", "c", True)


def test_partial_tag_held_back_then_released_as_text_on_close():
    s = ReasoningSplitter()
    assert s.feed("Answer <thi") == [AnswerDelta("Answer ")]
    assert s.close() == [AnswerDelta("<thi")]


def test_tokens_are_attributed_even_when_text_is_held_back():
    s = ReasoningSplitter()
    events = s.feed("<", tokens=1) + s.feed("think", tokens=1) + s.feed(">x", tokens=1)
    assert sum(e.tokens for e in events) == 3


SAMPLES = [
    "<think>\nThe patient has chest pain.\n</think>\n\nCall emergency services.",
    "Plain answer with < and > and </thin and <thinking> words.",
    "<think>unclosed reasoning <thi",
    "pre <think> a </think> b </think> c <think> d",
    "</think>answer after a stray close",
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES) | st.text(alphabet="<>/thinkab \n", max_size=40), st.data(), st.booleans())
def test_every_chunking_gives_the_same_texts(text, data, prefilled):
    cuts = sorted(data.draw(st.sets(st.integers(min_value=1, max_value=max(len(text) - 1, 1)), max_size=12)))
    chunks = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)]) if text[i:j]]
    whole = run([text], prefilled)
    pieces = run(chunks, prefilled)
    assert pieces[:2] == whole[:2]
    assert pieces[2].in_reasoning == whole[2].in_reasoning


def test_every_single_split_index_gives_the_same_texts():
    for text in SAMPLES:
        whole = run([text])[:2]
        for i in range(1, len(text)):
            assert run([text[:i], text[i:]])[:2] == whole, (text, i)
