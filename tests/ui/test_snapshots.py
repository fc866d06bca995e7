"""Snapshot tests (pytest-textual-snapshot): fixed terminal size, frozen clocks, scripted backend.

Update after an intended change with `pytest tests/ui/test_snapshots.py --snapshot-update`, and look at
the SVGs under tests/ui/__snapshots__/ before committing them.
"""

from __future__ import annotations

from ui_helpers import GatedBackend, app_with, ask, idle, make_adapter, ready, until

from medchat.engine.backends.fake import FakeBackend

SIZE = (100, 32)
REASONING = [
    "<think>", "The patient is 58 ", "with crushing chest pain ", "radiating to the left arm.\n\n",
    "Sweating and nausea ", "suggest an acute coronary syndrome.", "</think>",
]
ANSWER = [
    "**Most likely:** acute myocardial infarction.\n\n", "First steps:\n\n", "1. Call emergency services\n",
    "2. Aspirin 300 mg chewed, unless allergic\n", "3. 12-lead ECG within 10 minutes\n",
]
QUESTION = "My dad (58) has crushing chest pain radiating to his left arm and is sweating. Diagnosis?"


async def ready_steady(pilot):
    """Ready, with the message box's cursor not blinking (a blink would make snapshots flaky)."""
    await ready(pilot)
    pilot.app.screen.query_one("#prompt").cursor_blink = False


def test_empty_chat(snap_compare, frozen_clocks):
    app = app_with(FakeBackend([]), model="fake-model")

    async def run_before(pilot):
        await ready_steady(pilot)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_mid_reasoning(snap_compare, frozen_clocks):
    backend = GatedBackend([REASONING + ANSWER], gate_after=4)
    app = app_with(backend, model="fake-model")

    async def run_before(pilot):
        await ready_steady(pilot)
        await ask(pilot, "Why is the sky blue?")
        await until(pilot, lambda: backend.reached.is_set())
        await until(pilot, lambda: "radiating" in pilot.app.chat._last_view().reasoning_md.source)
        await pilot.pause(0.1)

    try:
        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
    finally:
        backend.gate.set()


def test_finished_turn(snap_compare, frozen_clocks):
    app = app_with(FakeBackend([REASONING + ANSWER]), model="fake-model")

    async def run_before(pilot):
        await ready_steady(pilot)
        await ask(pilot, QUESTION)
        await idle(pilot)
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_adapter_picker(snap_compare, frozen_clocks):
    make_adapter("med-r1-lora", "HuggingFaceTB/SmolLM2-135M-Instruct", rows=500, loss=1.482)
    make_adapter("cardio-qa", "HuggingFaceTB/SmolLM2-135M-Instruct", rows=1200, loss=0.973,
                 created="2026-11-21T18:30:00",
                 evaluations=[{"benchmark_name": "medqa", "rows": 500, "base": {"accuracy": 0.412},
                               "adapter": {"accuracy": 0.478}, "paired": {"mcnemar_p": 0.031}}])
    app = app_with(FakeBackend([]), model="fake-model")

    async def run_before(pilot):
        await ready_steady(pilot)
        await pilot.press("f2")
        await until(pilot, lambda: pilot.app.screen.__class__.__name__ == "AdapterPicker")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
