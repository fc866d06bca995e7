"""Pilot tests of the fine-tuner's workbench over the scripted FakeBackend: compare mode, keeping a
reply as a training row, where an answer came from, and messages typed while the model loads."""

from __future__ import annotations

import threading

import pytest
from ui_helpers import ask, ready, until

from medchat.config import Settings
from medchat.engine.backends.fake import FakeBackend
from medchat.ui.app import make_app
from medchat.ui.widgets.turn import TurnView

pytestmark = pytest.mark.anyio


def slow_loading(backend: FakeBackend):
    """A backend factory that waits for ``loaded`` (the model is 'loading' until then)."""
    loaded = threading.Event()

    def factory(_settings, _progress):
        loaded.wait(10)
        return backend

    return factory, loaded


async def test_a_message_sent_while_loading_waits_and_is_sent_when_ready():
    backend = FakeBackend([["<think>", "why", "</think>", "answer"]])
    factory, loaded = slow_loading(backend)
    app = make_app(Settings(), factory)
    async with app.run_test(size=(100, 30)) as pilot:
        await ask(pilot, "What is a fever?")
        await pilot.pause()
        note = app.screen.query_one("#queued")
        assert "will send when the model is loaded" in str(note.render())
        assert app.screen.query_one("#prompt").text == ""  # taken, not lost
        await ask(pilot, "a second one")  # one message waits at a time; this one stays in the box
        assert app.chat.queued_message == "What is a fever?"
        loaded.set()
        await until(pilot, lambda: any(v.state.finish for v in app.screen.query(TurnView)))
        assert not app.screen.query("#queued")
        (view,) = app.screen.query(TurnView)
        assert view.state.user == "What is a fever?" and view.state.answer == "answer"
        assert [m.content for m in backend.calls[0] if m.role == "user"] == ["What is a fever?"]


async def test_a_message_queued_when_loading_fails_comes_back_to_the_box():
    from medchat.errors import ModelUnavailable

    gate = threading.Event()

    def fail(_settings, _progress):
        gate.wait(10)
        raise ModelUnavailable("gone")

    app = make_app(Settings(), fail)
    async with app.run_test(size=(100, 30)) as pilot:
        await ask(pilot, "kept?")
        await pilot.pause()
        gate.set()
        await until(pilot, lambda: app.load_error is not None)
        await pilot.pause()
        assert "not sent" in str(app.screen.query_one("#queued").render())
        assert app.screen.query_one("#prompt").text == "kept?"


def compare_backend(replies, **kw) -> FakeBackend:
    backend = FakeBackend(replies, known_adapters={"tuned": "fake-model"}, **kw)
    backend.set_adapter("tuned")
    return backend


BASE_REPLY = ["<think>", "base ", "thinks", "</think>", "Base ", "answer."]
TUNED_REPLY = ["<think>", "tuned ", "thinks ", "longer", "</think>", "Tuned ", "answer."]


async def test_compare_mode_answers_with_base_then_adapter_side_by_side_and_saves_both():
    from medchat.store.history import HistoryStore
    from medchat.ui.widgets.compare import CompareView

    backend = compare_backend([BASE_REPLY, TUNED_REPLY, ["plain"]])
    app = make_app(Settings(), lambda _s, _p: backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("f5")
        assert app.chat.compare and "compare" in str(app.chat.status.render())
        await ask(pilot, "What is gout?")
        await until(pilot, lambda: app.screen.query(CompareView) and app.screen.query(CompareView).first().adapter.state.finish)
        (pair,) = app.screen.query(CompareView)
        base, tuned = pair.base, pair.adapter
        assert base.region.y == tuned.region.y and base.region.x < tuned.region.x  # side by side
        assert "base model · fake-model" in str(base.query_one(".column-header").render())
        assert "adapter · tuned" in str(tuned.query_one(".column-header").render())
        assert (base.state.reasoning, base.state.answer) == ("base thinks", "Base answer.")
        assert (tuned.state.reasoning, tuned.state.answer) == ("tuned thinks longer", "Tuned answer.")
        for view in (base, tuned):  # each its own folded reasoning pane and header
            assert view.reasoning_pane.collapsed
            assert str(view.reasoning_pane.query_one(".reasoning-header").render()).startswith("▶ Thought for ")
        assert backend.adapters_used == ["", "tuned"] and backend.calls[0] == backend.calls[1]
        conv_id = app.chat.conversation_id
        await pilot.press("f5")  # off again: one column
        assert not app.chat.compare
        await ask(pilot, "And then?")
        await until(pilot, lambda: app.screen.query(TurnView).last().state.finish)
        assert len(app.screen.query(CompareView)) == 1 and app.screen.query(TurnView).last().column == ""
    with HistoryStore() as store:
        conv = store.load(conv_id)
    assert [t.answer for t in conv.turns] == ["Tuned answer.", "plain"]
    assert conv.base_replies[0].answer == "Base answer." and conv.base_replies[0].adapter == ""
    assert conv.turns[0].adapter == "tuned"
    # Reopened, the compared question shows both columns again.
    app = make_app(Settings(), lambda _s, _p: compare_backend([]))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await app.chat.open_conversation(conv_id)
        await pilot.pause()
        (pair,) = app.screen.query(CompareView)
        assert (pair.base.state.answer, pair.adapter.state.answer) == ("Base answer.", "Tuned answer.")


async def test_escape_during_the_base_reply_stops_both():
    from ui_helpers import GatedBackend

    from medchat.ui.widgets.compare import CompareView

    backend = GatedBackend([BASE_REPLY, TUNED_REPLY], gate_after=2, known_adapters={"tuned": "fake-model"})
    backend.set_adapter("tuned")
    app = make_app(Settings(), lambda _s, _p: backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("f5")
        await ask(pilot, "q")
        await until(pilot, lambda: backend.reached.is_set())
        await pilot.press("escape")
        await until(pilot, lambda: app.screen.query(CompareView).first().adapter.state.finish)
        (pair,) = app.screen.query(CompareView)
        assert pair.base.state.finish == "cancelled" and pair.adapter.state.finish == "cancelled"
        assert len(backend.calls) == 1  # the adapter never ran
        assert app.chat.generating_turn is None


async def test_compare_mode_needs_an_adapter():
    app = make_app(Settings(), lambda _s, _p: FakeBackend([]))
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("f5")
        assert not app.chat.compare


async def test_keep_a_reply_as_a_training_row_edited_named_and_deduplicated():
    import json
    import stat

    from medchat.store import saved_rows
    from medchat.ui.screens.keep_row import KeepRowEditor

    backend = FakeBackend([["<think>", "Urate ", "crystals.", "</think>", "Gout is ", "arthritis."]])
    app = make_app(Settings(), lambda _s, _p: backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await ask(pilot, "What is gout?")
        await until(pilot, lambda: app.screen.query(TurnView) and app.screen.query(TurnView).first().state.finish)
        view = app.screen.query_one(TurnView)
        view.focus()
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, KeepRowEditor))
        editor = app.screen
        # Pre-filled from the turn: the reasoning pane's text, never the answer.
        assert editor.query_one("#row-question").text == "What is gout?"
        assert editor.query_one("#row-reasoning").text == "Urate crystals."
        assert editor.query_one("#row-answer").text == "Gout is arthritis."
        editor.query_one("#row-answer").text = "Gout is an inflammatory arthritis caused by urate crystals."
        editor.query_one("#row-name").value = "gout-fixes"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: not isinstance(app.screen, KeepRowEditor))
        path = saved_rows.file_for("gout-fixes")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert [json.loads(line) for line in path.read_text().splitlines()] == [{
            "Question": "What is gout?", "Complex_CoT": "Urate crystals.",
            "Response": "Gout is an inflammatory arthritis caused by urate crystals.",
        }]
        # Saved again (same question): replaced, not doubled; the editor remembers the file.
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, KeepRowEditor))
        assert app.screen.query_one("#row-name").value == "gout-fixes"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: not isinstance(app.screen, KeepRowEditor))
        assert len(path.read_text().splitlines()) == 1
        said = [n.message for n in app._notifications]
        assert any(m.startswith("Added the row in gout-fixes.jsonl: it now holds 1 row") for m in said)
        assert any(m.startswith("Replaced the row for this question in gout-fixes.jsonl: it now holds 1 row")
                   for m in said)
        # An empty field is refused in the editor, which stays open and says why.
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, KeepRowEditor))
        app.screen.query_one("#row-reasoning").text = ""
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, KeepRowEditor)
        assert "reasoning is empty" in str(app.screen.query_one("#row-hint").render())
        await pilot.press("escape")


async def test_where_did_this_answer_come_from_shows_the_closest_training_rows(tmp_path):
    import json

    from medchat.finetune import data as D
    from medchat.finetune.provenance import nearest_rows
    from medchat.store import adapters as adapter_store
    from medchat.ui.screens.where_from import WhereFrom

    rows = [{"Question": "What is gout?", "Complex_CoT": "Urate crystals deposit in joints.",
             "Response": "Gout is an inflammatory arthritis from urate crystals."},
            {"Question": "What is a fever?", "Complex_CoT": "A raised set point.", "Response": "A high temperature."}]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    folder = adapter_store.store_dir() / "tuned"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    (folder / "medchat.json").write_text(json.dumps({"dataset": {
        "id": str(data), "kind": "file", "revision": D.file_sha256(data), "train_indices": [0, 1]}}))

    backend = compare_backend([["<think>", "Urate crystals deposit in joints.", "</think>",
                                "Gout is an inflammatory arthritis from urate crystals."], ["base"], ["again"]])
    app = make_app(Settings(), lambda _s, _p: backend, find_rows=nearest_rows)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await ask(pilot, "What is gout?")
        await until(pilot, lambda: app.screen.query(TurnView) and app.screen.query(TurnView).first().state.finish)
        app.screen.query_one(TurnView).focus()
        await pilot.press("w")
        await until(pilot, lambda: isinstance(app.screen, WhereFrom) and app.screen.result is not None)
        body = str(app.screen.query_one("#where-body").render())
        assert "1. row 0 · score" in body and "overlap 100%" in body and "What is gout?" in body
        await pilot.press("escape")
        # The data file changed since training: said, not matched.
        data.write_text(data.read_text() + json.dumps(rows[0]) + "\n")
        await pilot.press("w")
        await until(pilot, lambda: isinstance(app.screen, WhereFrom) and app.screen.result is not None)
        assert "changed since training" in str(app.screen.query_one("#where-body").render())
        await pilot.press("escape")
        # In compare mode, the base model's column has no training rows to look in.
        await pilot.press("f5")
        await ask(pilot, "Again?")
        await until(pilot, lambda: app.screen.query(TurnView).last().state.finish)
        base_column = list(app.screen.query(TurnView))[-2]
        assert base_column.adapter == "" and app.screen.query(TurnView).last().adapter == "tuned"
        base_column.focus()
        await pilot.press("w")
        await pilot.pause()
        assert not isinstance(app.screen, WhereFrom)
