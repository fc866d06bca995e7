"""Pilot tests of the chat app over the scripted FakeBackend (no model is loaded)."""

from __future__ import annotations

import json

import pytest
from ui_helpers import GatedBackend, app_with, ask, idle, make_adapter, ready, until

from medchat import paths
from medchat.config import GenerationSettings
from medchat.engine.backends.fake import FakeBackend
from medchat.errors import ModelUnavailable
from medchat.store.history import HistoryStore, StoredTurn
from medchat.ui.widgets.turn import TurnView

pytestmark = pytest.mark.anyio

THINKING = ["<think>", "First, ", "consider ", "the **vitals**.\n\n", "Then ", "the history.", "</think>"]
ANSWER = ["It ", "is ", "*hypertension*."]


def turns(app) -> list[TurnView]:
    return list(app.screen.query(TurnView))


async def test_reasoning_then_answer_stream_into_their_panes():
    backend = FakeBackend([THINKING + ANSWER])
    app = app_with(backend)
    order: list[str] = []
    original = TurnView.add

    async def spy(self, kind, text, tokens):
        order.append(kind)
        await original(self, kind, text, tokens)

    TurnView.add = spy
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await ask(pilot, "What is high blood pressure called?")
            await idle(pilot)
            (view,) = turns(app)
            assert view.reasoning_md.source == "First, consider the **vitals**.\n\nThen the history."
            assert view.answer_md.source == "It is *hypertension*."
            assert view.reasoning_pane.collapsed  # folded away once the answer started
            header = str(view.reasoning_pane.query_one(".reasoning-header").render())
            assert header.startswith("▶ Thought for ") and "tokens" in header
            assert "tok/s" in str(view.query_one(".turn-status").render())
            # Never re-opened: all reasoning chunks came before the first answer chunk.
            assert order and order[0] == "reasoning" and "reasoning" not in order[order.index("answer"):]
            await pilot.press("ctrl+t")  # one key opens the reasoning again
            assert not view.reasoning_pane.collapsed
    finally:
        TurnView.add = original


async def test_panes_fill_progressively_while_streaming():
    backend = GatedBackend([THINKING + ANSWER], gate_after=3)
    app = app_with(backend)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await ask(pilot, "q")
        await until(pilot, lambda: backend.reached.is_set() and turns(app) and turns(app)[0].state.reasoning)
        await pilot.pause(0.1)
        (view,) = turns(app)
        assert view.state.reasoning.startswith("First, consider")
        assert view.state.answer == "" and not view.reasoning_pane.collapsed
        assert "Thinking…" in str(view.reasoning_pane.query_one(".reasoning-header").render())
        backend.gate.set()
        await idle(pilot)
        assert view.answer_md.source == "It is *hypertension*."


async def test_prefilled_think_template_starts_in_reasoning():
    # The chat template already wrote "<think>": the model's output has only the closing tag.
    backend = FakeBackend([["Weigh ", "the ", "options.", "</think>", "Answer ", "here."]], opens_in_reasoning=True)
    app = app_with(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        await ask(pilot, "q")
        await idle(pilot)
        (view,) = turns(app)
        assert view.reasoning_md.source == "Weigh the options."
        assert view.answer_md.source == "Answer here."


async def test_escape_stops_and_keeps_the_partial_reply():
    chunks = ["<think>", "thinking ", "done", "</think>"] + [f"word{i} " for i in range(200)]
    backend = FakeBackend([chunks], delay=0.02)
    app = app_with(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        await ask(pilot, "long question")
        await until(pilot, lambda: turns(app) and "word3" in turns(app)[0].state.answer)
        await pilot.press("escape")
        await idle(pilot)
        (view,) = turns(app)
        assert view.state.finish == "cancelled"
        assert "word3" in view.answer_md.source and "word199" not in view.answer_md.source
        assert "Stopped" in str(view.query_one(".turn-status").render())
        assert app.chat.session.turns[-1].finish_reason == "cancelled"
        with HistoryStore() as store:
            saved = store.load(store.list()[0].id).turns[0]
        assert saved.finish_reason == "cancelled" and "word3" in saved.answer


async def test_escape_before_the_model_starts_still_stops_it():
    # The model starts a couple of frames after Enter (the new turn is drawn first): Esc in between
    # must stop the reply, not be lost.
    backend = FakeBackend([[f"word{i} " for i in range(200)]], delay=0.01)
    app = app_with(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        await app.chat.send("question")
        app.chat.action_stop()  # what Esc does, before any frame is drawn
        await idle(pilot)
        (view,) = turns(app)
        assert view.state.finish == "cancelled"
        assert "word199" not in view.answer_md.source


async def test_regenerate_replaces_the_last_answer():
    backend = FakeBackend([["first answer"], ["second answer"]])
    app = app_with(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        await ask(pilot, "question")
        await idle(pilot)
        await pilot.press("ctrl+r")
        await idle(pilot)
        (view,) = turns(app)
        assert view.answer_md.source == "second answer"
        assert [m.content for m in backend.calls[1]] == [m.content for m in backend.calls[0]]
        with HistoryStore() as store:
            conv = store.load(store.list()[0].id)
        assert [t.answer for t in conv.turns] == ["second answer"]


async def test_second_turn_sends_answers_only():
    backend = FakeBackend([THINKING + ANSWER, ["fine"]])
    app = app_with(backend, system_prompt="sys")
    async with app.run_test() as pilot:
        await ready(pilot)
        await ask(pilot, "one")
        await idle(pilot)
        await ask(pilot, "two")
        await idle(pilot)
        sent = [(m.role, m.content) for m in backend.calls[1]]
        assert sent == [("system", "sys"), ("user", "one"), ("assistant", "It is *hypertension*."), ("user", "two")]
        assert len(turns(app)) == 2


async def test_cut_off_inside_reasoning_is_marked_and_can_continue():
    backend = FakeBackend([["<think>", "a ", "b ", "c ", "d ", "</think>", "x"], ["e ", "</think>", "final"]])
    app = app_with(backend, generation=GenerationSettings(max_new_tokens=4))
    async with app.run_test() as pilot:
        await ready(pilot)
        await ask(pilot, "q")
        await idle(pilot)
        (view,) = turns(app)
        assert view.state.finish == "length_in_reasoning"
        assert "cut off while thinking" in str(view.reasoning_pane.query_one(".reasoning-header").render())
        assert "Ctrl+O continues" in str(view.query_one(".turn-status").render())
        assert not view.reasoning_pane.collapsed
        await pilot.press("ctrl+o")
        await idle(pilot)
        assert backend.calls[1][-1].role == "assistant"  # the partial reply is continued, not restarted
        assert view.state.finish == "stop"
        assert view.reasoning_md.source.startswith("a b c") and "e" in view.reasoning_md.source
        assert view.answer_md.source == "final"


async def test_red_flag_notice_appears_above_the_answer_without_blocking_it():
    backend = FakeBackend([["Please ", "call ", "for ", "help."], ["Sure."]])
    app = app_with(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        await ask(pilot, "I have crushing chest pain and I am short of breath")
        await idle(pilot)
        await ask(pilot, "What is a normal blood pressure?")
        await idle(pilot)
        first, second = turns(app)
        notice = first.query_one(".red-flag")
        assert "heart attack" in str(notice.render()) and "emergency number" in str(notice.render())
        children = list(first.children)
        assert children.index(notice) < children.index(first.answer_md)
        assert first.answer_md.source == "Please call for help."
        assert not second.query(".red-flag")
        assert "not medical advice" in str(app.screen.query_one("#disclaimer").render())


async def test_generation_errors_appear_in_the_transcript_and_the_app_stays_usable():
    backend = FakeBackend([RuntimeError("device lost"), MemoryError(), ["works again"]])
    app = app_with(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        await ask(pilot, "one")
        await idle(pilot)
        await ask(pilot, "two")
        await idle(pilot)
        await ask(pilot, "three")
        await idle(pilot)
        first, second, third = turns(app)
        assert "generation failed: RuntimeError: device lost" in str(first.query_one(".turn-status").render())
        assert "out of memory" in str(second.query_one(".turn-status").render())
        assert third.answer_md.source == "works again"


async def test_adapter_switch_and_refusal():
    make_adapter("med", "fake-model")
    make_adapter("other", "meta-llama/Llama-3.2-1B")
    backend = FakeBackend([["ok"]], known_adapters={"med": "fake-model", "other": "meta-llama/Llama-3.2-1B"})
    app = app_with(backend)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot)
        await pilot.press("f2")
        await until(pilot, lambda: app.screen.__class__.__name__ == "AdapterPicker")
        await pilot.press("down", "enter")  # rows: base model, med, other
        await until(pilot, lambda: backend.info.adapter == "med" and not app.chat.switching_adapter)
        await pilot.pause()
        assert "adapter: med" in str(app.chat.status.render())
        assert app.chat.query(".divider")
        await pilot.press("f2")
        await until(pilot, lambda: app.screen.__class__.__name__ == "AdapterPicker")
        await pilot.press("down", "down", "enter")
        await until(pilot, lambda: not app.chat.switching_adapter and app.screen is app.chat)
        await pilot.pause()
        assert backend.info.adapter == "med"  # refused: the previous adapter stays
        messages = [n.message for n in app._notifications]
        assert any("trained for meta-llama/Llama-3.2-1B" in m and "Still using med" in m for m in messages)
        refusal = app.chat.query(".divider.error").last()
        assert "Adapter not switched" in str(refusal.render()) and "Still using med" in str(refusal.render())
        # And back to the bare base model.
        await pilot.press("f2")
        await until(pilot, lambda: app.screen.__class__.__name__ == "AdapterPicker")
        await pilot.press("up", "up", "up", "enter")
        await until(pilot, lambda: backend.info.adapter == "" and not app.chat.switching_adapter)


async def test_history_reopen_continues_the_conversation():
    with HistoryStore() as store:
        cid = store.new_conversation("old question", model="fake-model")
        store.save_turn(cid, 0, StoredTurn("old question", "old reasoning", "old answer", "stop", model="fake-model",
                                           reasoning_tokens=5, reasoning_seconds=2.0))
    backend = FakeBackend([["new answer"]])
    app = app_with(backend, system_prompt="sys")
    async with app.run_test() as pilot:
        await ready(pilot)
        await pilot.press("f3")
        await until(pilot, lambda: app.screen.__class__.__name__ == "HistoryBrowser")
        await pilot.press("enter")
        await until(pilot, lambda: len(turns(app)) == 1)
        await pilot.pause()
        (old,) = turns(app)
        assert old.reasoning_md.source == "old reasoning" and old.answer_md.source == "old answer"
        assert "Thought for 2 s · 5 tokens" in str(old.reasoning_pane.query_one(".reasoning-header").render())
        await ask(pilot, "follow-up")
        await idle(pilot)
        assert [m.content for m in backend.calls[0]] == ["sys", "old question", "old answer", "follow-up"]
    with HistoryStore() as store:
        assert [t.answer for t in store.load(cid).turns] == ["old answer", "new answer"]


async def test_export_from_the_history_browser(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backend = FakeBackend([THINKING + ANSWER])
    app = app_with(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        await ask(pilot, "What is it?")
        await idle(pilot)
        await pilot.press("f3")
        await until(pilot, lambda: app.screen.__class__.__name__ == "HistoryBrowser")
        await pilot.press("m", "j")
        await pilot.pause()
    md = (tmp_path / "medchat-conversation-1.md").read_text()
    assert "<details>\n<summary>Reasoning" in md and "Then the history." in md
    assert md.index("</details>") < md.index("It is *hypertension*.")
    data = json.loads((tmp_path / "medchat-conversation-1.json").read_text())
    assert data["turns"][0]["reasoning"].endswith("Then the history.")
    assert data["turns"][0]["answer"] == "It is *hypertension*."


async def test_quit_mid_answer_saves_the_partial_turn():
    chunks = [f"w{i} " for i in range(500)]
    backend = FakeBackend([chunks], delay=0.01)
    app = app_with(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        await ask(pilot, "q")
        await until(pilot, lambda: turns(app) and "w5" in turns(app)[0].state.answer)
        await pilot.press("ctrl+q")
    with HistoryStore() as store:
        saved = store.load(store.list()[0].id).turns[0]
    assert saved.finish_reason == "cancelled" and saved.answer.startswith("w0 w1")


async def test_no_history_keeps_nothing():
    app = app_with(FakeBackend([["a"]]), history=False)
    async with app.run_test() as pilot:
        await ready(pilot)
        await ask(pilot, "q")
        await idle(pilot)
    assert not paths.history_db().exists()


async def test_prompt_keys_newline_send_and_copy():
    backend = FakeBackend([["copied answer"]])
    app = app_with(backend)
    async with app.run_test() as pilot:
        await ready(pilot)
        prompt = app.screen.query_one("#prompt")
        prompt.focus()
        await pilot.press("a", "ctrl+j", "b")
        assert prompt.text == "a\nb"
        await pilot.press("enter")
        await idle(pilot)
        assert prompt.text == ""
        assert turns(app)[0].state.user == "a\nb"
        await pilot.press("f4")
        assert app.clipboard == "copied answer"
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert not turns(app) and app.screen.query("#welcome")


async def test_every_chat_action_is_in_the_command_palette_and_themes_apply():
    app = app_with(FakeBackend([]))
    async with app.run_test() as pilot:
        await ready(pilot)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"New chat", "Stop", "Regenerate", "Continue", "Choose adapter", "History", "Copy answer",
                "Toggle reasoning", "Theme"} <= titles
        app.theme = "textual-light"
        await pilot.pause()
        app.theme = "nord"
        await pilot.pause()


async def test_load_failure_is_shown_and_quitting_exits_non_zero():
    def fail(_settings, progress):
        progress("looking for the model")
        raise ModelUnavailable("model 'nope' is not cached and --offline is set")

    from medchat.config import Settings
    from medchat.ui.app import make_app

    app = make_app(Settings(model="nope"), fail)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.load_error is not None)
        await pilot.pause()
        error = app.screen.query_one(".loading-error")
        assert "not cached" in str(error.render())
        await ask(pilot, "hello?")  # the app stays responsive; sending is refused politely
        await pilot.press("ctrl+q")
    assert app.return_code == ModelUnavailable.exit_code


def test_run_chat_raises_the_load_error(monkeypatch):
    from medchat.config import Settings
    from medchat.ui import app as app_module

    class Quick(app_module.MedchatApp):
        def run(self, *a, **k):
            self.load_error = ModelUnavailable("gone")

    monkeypatch.setattr(app_module, "MedchatApp", Quick)
    monkeypatch.setattr(app_module, "check_can_start", lambda resume: None)  # pytest's stdout is no tty
    with pytest.raises(ModelUnavailable):
        app_module.run_chat(Settings(), lambda _settings, _progress: None)


PARAGRAPHS = [f"Paragraph {i}: " + "word " * 80 + "\n\n" for i in range(60)]  # a long reasoning


async def long_reasoning_turn(pilot, app) -> TurnView:
    """Ask one question of ``app`` (whose backend replies with PARAGRAPHS of reasoning); its finished turn."""
    await ready(pilot)
    await ask(pilot, "q")
    await idle(pilot)
    (view,) = turns(app)
    return view


async def test_long_reasoning_streams_in_chunks_and_renders_exactly():
    app = app_with(FakeBackend([["<think>"] + PARAGRAPHS + ["</think>", "Short answer."]]))
    async with app.run_test() as pilot:
        view = await long_reasoning_turn(pilot, app)
        body = view.reasoning_md
        assert len(body.chunks) > 5  # closed chunks stay laid out; only the last one streams
        assert body.source == "".join(PARAGRAPHS)
        assert "".join(chunk.source for chunk in body.chunks) == body.source
        assert view.answer_md.source == "Short answer."


async def test_closed_chunks_keep_a_fixed_height_are_hidden_off_screen_and_follow_resizes():
    app = app_with(FakeBackend([["<think>"] + PARAGRAPHS + ["</think>"]]))  # no answer: the reasoning stays open
    async with app.run_test(size=(100, 30)) as pilot:
        view = await long_reasoning_turn(pilot, app)
        boxes = view.reasoning_md.boxes
        await until(pilot, lambda: all(box.pinned for box in boxes) and not boxes[0].markdown.display)
        assert boxes[-1].markdown.display  # the end is on screen (the scroll box follows the stream)
        shown = [box for box in boxes if box.markdown.display]
        assert all(box.pinned == box.markdown.outer_size.height for box in shown)
        wide = sum(box.pinned for box in boxes)

        await pilot.resize_terminal(60, 30)  # narrower: every chunk wraps onto more lines
        await until(pilot, lambda: all(box.pinned for box in boxes) and sum(b.pinned for b in boxes) > wide)
        shown = [box for box in boxes if box.markdown.display]
        assert all(box.pinned == box.markdown.outer_size.height for box in shown)

        view.query_one(".reasoning-scroll").scroll_home(animate=False)
        await until(pilot, lambda: boxes[0].markdown.display)
        await pilot.pause()
        assert boxes[0].pinned == boxes[0].markdown.outer_size.height


async def test_reopened_reasoning_shows_its_closed_chunks():
    app = app_with(FakeBackend([["<think>"] + PARAGRAPHS + ["</think>", "Short answer."]]))
    async with app.run_test(size=(100, 30)) as pilot:
        view = await long_reasoning_turn(pilot, app)
        assert view.reasoning_pane.collapsed
        view.action_toggle_reasoning()
        boxes = view.reasoning_md.boxes
        box = view.query_one(".reasoning-scroll")
        await until(pilot, lambda: box.size.height > 0 and any(b.markdown.display for b in boxes))
        await pilot.pause()
        top = box.scroll_y
        # Whatever part of the reasoning is in view is displayed, with its real height.
        y = 0
        for b in boxes:
            if y + b.outer_size.height > top and y < top + box.size.height:
                assert b.markdown.display
            y += b.outer_size.height


async def test_model_fallback_note_stays_in_the_transcript():
    from medchat.config import Settings
    from medchat.ui.app import make_app

    note = "auto picked r1-qwen-1.5b, but it is not cached and offline; using the embedded smollm2 model instead"

    def factory(_settings, progress):
        progress("loading smollm2 on cpu (transformers)")
        progress(note)
        return FakeBackend([["Fine."], ["Again."]])

    app = make_app(Settings(), factory)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.pause(0.1)

        def notes() -> list[str]:
            return [str(w.render()) for w in app.screen.query(".load-note")]

        assert notes() == [note]  # the warning stays; ordinary progress lines go with the loading view
        assert any(n.message == note for n in app._notifications)
        await ask(pilot, "q")
        await idle(pilot)
        assert notes() == [note]
        transcript = app.chat.transcript
        assert transcript.children[0].has_class("load-note")  # at the top, above the conversation
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert notes() == [note]  # a new chat keeps it


async def test_adapter_switch_after_stop_waits_for_the_stopping_reply():
    import threading

    make_adapter("med", "fake-model")

    class SlowToStop(FakeBackend):
        """Its current token takes a while: Esc is only seen once ``release`` is set."""

        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            self.reached, self.release, self.streaming = threading.Event(), threading.Event(), False
            self.switched_while_streaming = False

        def stream(self, messages, settings, cancel, continue_final=False):
            self.streaming = True
            try:
                for i, item in enumerate(super().stream(messages, settings, cancel, continue_final)):
                    if i == 3:
                        self.reached.set()
                        self.release.wait(10)
                    yield item
            finally:
                self.streaming = False

        def set_adapter(self, adapter):
            self.switched_while_streaming |= self.streaming
            super().set_adapter(adapter)

    backend = SlowToStop([["<think>", "a ", "b ", "c ", "d", "</think>", "answer"]], known_adapters={"med": "fake-model"})
    app = app_with(backend)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot)
        await ask(pilot, "q")
        await until(pilot, backend.reached.is_set)
        await pilot.press("escape")
        await pilot.press("f2")  # not refused: the switch waits for the stopping reply
        await until(pilot, lambda: app.screen.__class__.__name__ == "AdapterPicker")
        await pilot.press("down", "enter")
        await until(pilot, lambda: app.screen is app.chat)
        await pilot.pause(0.1)
        assert app.chat.switching_adapter and backend.info.adapter == ""  # queued, not yet switched
        assert not any("Stop the reply first" in n.message for n in app._notifications)
        backend.release.set()
        await until(pilot, lambda: backend.info.adapter == "med" and not app.chat.switching_adapter)
        await idle(pilot)
        assert not backend.switched_while_streaming
        assert "adapter: med" in str(app.chat.status.render())
        assert "Stopped" in str(turns(app)[0].query_one(".turn-status").render())


async def test_adapter_picker_is_refused_while_a_reply_streams():
    make_adapter("med", "fake-model")
    backend = GatedBackend([["<think>", "a ", "b ", "c", "</think>", "x"]], gate_after=2, known_adapters={"med": "fake-model"})
    app = app_with(backend)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot)
        await ask(pilot, "q")
        await until(pilot, backend.reached.is_set)
        await pilot.press("f2")
        await pilot.pause()
        assert app.screen is app.chat
        assert any("Stop the reply first" in n.message for n in app._notifications)
        backend.gate.set()
        await idle(pilot)


@pytest.mark.parametrize("width", [60, 100, 120, 160])
async def test_disclaimer_is_never_cut_off(width):
    from textual.geometry import Region

    from medchat.ui.screens.chat import DISCLAIMER_LINE

    app = app_with(FakeBackend([]))
    async with app.run_test(size=(width, 30)) as pilot:
        await ready(pilot)
        await pilot.pause()
        line = app.chat.query_one("#disclaimer")
        strips = line.render_lines(Region(0, 0, line.size.width, line.size.height))
        shown = " ".join(" ".join(s.text.split()) for s in strips)
        assert "…" not in shown
        assert " ".join(shown.split()) == DISCLAIMER_LINE  # every word, on one or more lines
        assert line.size.height == (1 if width >= 120 else 2)  # wraps on narrow terminals


async def test_the_demo_adapter_is_named_and_explained():
    """On the embedded model the chat runs the bundled demo adapter: the status bar names it and the
    welcome says plainly that it demonstrates the format, not medical knowledge."""
    import dataclasses

    from medchat.store.adapters import DEMO_ADAPTER

    backend = FakeBackend([["ok"]])
    backend.info = dataclasses.replace(backend.info, adapter=DEMO_ADAPTER)
    app = app_with(backend)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: bool(app.chat.query("#welcome")))
        assert f"adapter: {DEMO_ADAPTER} (format demo)" in str(app.chat.status.render())
        welcome = str(app.chat.query_one("#welcome").render())
        assert "demonstrates the format, not medical knowledge" in welcome and "--adapter none" in welcome
