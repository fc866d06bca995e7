"""The SQLite conversation store and its Markdown/JSON exports."""

from __future__ import annotations

import json
import stat

import pytest

from medchat import paths
from medchat.engine.backends.fake import FakeBackend
from medchat.engine.session import ChatSession, turns_for_session
from medchat.errors import MedchatError
from medchat.store.history import (
    IN_PROGRESS,
    HistoryStore,
    StoredTurn,
    export,
    export_json,
    export_markdown,
    stored_from_turn,
    title_from,
)


def test_database_is_private_and_in_the_data_dir():
    with HistoryStore() as store:
        store.new_conversation("hello")
    db = paths.history_db()
    assert db.is_file()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


def test_save_list_load_delete():
    with HistoryStore() as store:
        a = store.new_conversation("What is hypertension?\nPlease be brief", model="smollm2")
        store.save_turn(a, 0, StoredTurn("What is hypertension?", "thinking", "High blood pressure.", "stop", model="smollm2"))
        b = store.new_conversation("second")
        store.save_turn(b, 0, StoredTurn("q", answer="a", finish_reason="stop", adapter="med-lora"))
        listed = store.list()
        assert [c.id for c in listed] == [b, a]  # most recent first
        assert listed[1].title == "What is hypertension? Please be brief"
        assert listed[1].turns == 1 and listed[0].adapter == "med-lora"
        conv = store.load(a)
        assert conv.turns[0].reasoning == "thinking"
        store.delete(a)
        assert [c.id for c in store.list()] == [b]
        with pytest.raises(MedchatError, match="no conversation with id"):
            store.load(a)


def test_partial_turn_is_replaced_and_regenerate_drops_later_turns():
    with HistoryStore() as store:
        cid = store.new_conversation("q1")
        store.save_turn(cid, 0, StoredTurn("q1", "half", "", IN_PROGRESS))
        store.save_turn(cid, 0, StoredTurn("q1", "half done", "answer", "stop"))
        store.save_turn(cid, 1, StoredTurn("q2", "", "a2", "stop"))
        store.save_turn(cid, 0, StoredTurn("q1", "", "regenerated", "stop"))
        turns = store.load(cid).turns
        assert [t.answer for t in turns] == ["regenerated"]


def test_history_survives_reopening_the_file():
    with HistoryStore() as store:
        cid = store.new_conversation("persist me")
        store.save_turn(cid, 0, StoredTurn("persist me", answer="ok", finish_reason="stop"))
    with HistoryStore() as store:
        assert store.load(cid).turns[0].answer == "ok"


def test_round_trip_through_a_session_never_sends_reasoning_back():
    backend = FakeBackend([["<think>", "secret reasoning", "</think>", "The answer."]])
    session = ChatSession(backend, system_prompt="sys")
    list(session.send("first question"))
    with HistoryStore() as store:
        cid = store.new_conversation("first question")
        store.save_turn(cid, 0, stored_from_turn(session.turns[0], model="fake-model"))
        conv = store.load(cid)
    assert conv.turns[0].reasoning == "secret reasoning"
    assert conv.turns[0].finish_reason == "stop"
    reopened = ChatSession(FakeBackend([["ok"]]), system_prompt="sys", turns=turns_for_session(conv))
    list(reopened.send("follow-up"))
    sent = reopened.backend.calls[-1]
    assert [m.content for m in sent] == ["sys", "first question", "The answer.", "follow-up"]
    assert all("secret" not in m.content for m in sent)


def _conversation():
    with HistoryStore() as store:
        cid = store.new_conversation("Chest pain", model="smollm2", adapter="med")
        store.save_turn(
            cid, 0,
            StoredTurn("I have chest pain and shortness of breath", "Consider <ACS> & PE.", "Call an ambulance.",
                       "stop", model="smollm2", adapter="med", reasoning_tokens=12, reasoning_seconds=3.2),
        )
        store.save_turn(cid, 1, StoredTurn("and then?", "still thinking", "", "length_in_reasoning", model="smollm2"))
        store.save_turn(cid, 2, StoredTurn("boom", "", "", "error", error="out of memory while generating"))
        return store.load(cid)


def test_markdown_export():
    md = export_markdown(_conversation())
    assert md.startswith("# Chest pain\n")
    assert "medical information, not medical advice" in md
    assert "<details>\n<summary>Reasoning (3 s, 12 tokens)</summary>\n\nConsider &lt;ACS&gt; &amp; PE.\n\n</details>" in md
    assert "<details open" not in md  # collapsed
    assert "Call an ambulance." in md
    assert "**Emergency notice:**" in md
    assert "cut off while still reasoning" in md
    assert "> **Error:** out of memory while generating" in md
    assert md.index("## 1. You") < md.index("<details>") < md.index("Call an ambulance.") < md.index("## 2. You")


def test_json_export():
    data = json.loads(export_json(_conversation()))
    assert data["format"] == "medchat-conversation"
    assert data["title"] == "Chest pain"
    assert data["turns"][0]["reasoning"] == "Consider <ACS> & PE."
    assert data["turns"][0]["answer"] == "Call an ambulance."
    assert data["turns"][1]["finish_reason"] == "length_in_reasoning"
    with pytest.raises(MedchatError, match="unknown export format"):
        export(_conversation(), "pdf")


def test_title_is_one_short_line():
    assert title_from("a\n b   c") == "a b c"
    assert len(title_from("x" * 200)) == 60


def test_compared_questions_keep_the_base_reply_beside_the_adapters():
    with HistoryStore() as store:
        cid = store.new_conversation("q", model="m", adapter="lora")
        store.save_turn(cid, 0, StoredTurn("q", "a-why", "adapter says", "stop", model="m", adapter="lora"))
        store.save_base_reply(cid, 0, StoredTurn("q", "b-why", "base says", "stop", model="m"))
        store.save_turn(cid, 1, StoredTurn("q2", "", "more", "stop", model="m", adapter="lora"))
        conv = store.load(cid)
        assert conv.base_replies[0].answer == "base says" and 1 not in conv.base_replies
        turns = turns_for_session(conv)
        assert turns[0].base.answer == "base says" and turns[1].base is None
        md = export_markdown(conv)
        assert md.index("### medchat · base model (m)") < md.index("base says") < md.index(
            "### medchat · adapter (m + lora)") < md.index("adapter says")
        assert json.loads(export_json(conv))["base_replies"]["0"]["answer"] == "base says"
        store.save_turn(cid, 0, StoredTurn("q", "", "redone", "stop", model="m"))  # later positions go; this one stays
        assert store.load(cid).base_replies[0].answer == "base says"
