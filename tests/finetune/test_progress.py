"""The progress display: steady tokens/s without the warm-up step, a bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

import pytest

from medchat.finetune import progress as P


class Terminal(io.StringIO):
    """A stream that says it is a terminal (what a user's stderr is)."""

    def isatty(self) -> bool:
        return True


def h100_run() -> P.RateMeter:
    """The run that showed "1,982 tok/s" on its last step: 45 s of compilation in step 1, then
    10,600 tok/s (4,096 tokens a step)."""
    meter = P.RateMeter()
    seconds = 45.0
    meter.add(seconds, 4096)
    for step in range(2, 31):
        seconds += 4096 / 10_600
        meter.add(seconds, 4096 * step)
    return meter


def test_the_live_rate_leaves_the_compilation_step_out():
    meter = h100_run()
    rate, per_step = meter.recent()
    assert rate == pytest.approx(10_600)
    assert per_step == pytest.approx(4096 / 10_600)
    seconds, tokens = meter.marks[-1]
    assert tokens / seconds < 2_700  # the whole-run average the old line showed
    assert meter.steady() == pytest.approx(10_600, rel=1e-3)


def test_compilation_reaching_into_the_next_steps_does_not_set_the_rate():
    # An 8-step H200 run: step 1 compiled for ~100 s and steps 2-3 still ran slow; the old line read
    # 1,036 tok/s at step 8 while the run trained at 10,760 tok/s.
    meter = P.RateMeter()
    seconds, tokens = 0.0, 0
    for dt in (100.0, 9.0, 3.0, 0.65, 0.65, 0.65, 0.65, 0.65):
        seconds, tokens = seconds + dt, tokens + 7_000
        meter.add(seconds, tokens)
    rate, per_step = meter.recent()
    assert rate == pytest.approx(7_000 / 0.65) and per_step == pytest.approx(0.65)


def test_the_live_rate_follows_recent_steps():
    meter = P.RateMeter(window=5)
    seconds = 0.0
    for step in range(1, 21):
        seconds += 1.0 if step <= 10 else 0.5  # twice as fast from step 11
        meter.add(seconds, 1000 * step)
    assert meter.recent()[0] == pytest.approx(2000)


def test_no_rate_before_a_steady_step():
    meter = P.RateMeter()
    assert meter.recent() == (None, None) and meter.steady() is None
    meter.add(45.0, 4096)
    assert meter.recent() == (None, None)
    assert "… tok/s ETA …" in P.Status(1, 30, loss=2.5).text()


def test_status_line():
    status = P.Status(10, 60, loss=1.23456, lr=1e-3, tokens_per_second=10_600.4, eta_seconds=62)
    assert f"{status.head()} {status.text()}" == "step 10/60 loss 1.235 lr 1.0e-03 10,600 tok/s ETA 1m02s"


def test_plain_lines_outside_a_terminal():
    out = io.StringIO()
    display = P.make_display(out)
    assert isinstance(display, P.PlainLines)
    display.start(3, 0)
    display.update(P.Status(1, 3), logged=False)  # not a logging step: nothing
    display.update(P.Status(2, 3, loss=2.0, lr=1e-3, tokens_per_second=500.0, eta_seconds=1), logged=True)
    display.update(P.Status(3, 3, loss=1.5, lr=1e-3, tokens_per_second=500.0, eta_seconds=0), logged=True)
    display.close()
    lines = out.getvalue().splitlines()
    assert lines == ["step 2/3 loss 2.000 lr 1.0e-03 500 tok/s ETA 1s", "step 3/3 loss 1.500 lr 1.0e-03 500 tok/s ETA 0s"]
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()


def test_a_bar_on_a_terminal(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    out = Terminal()
    display = P.make_display(out)
    assert isinstance(display, P.LiveBar)
    display.start(3, 0)
    for step in (1, 2, 3):
        display.update(P.Status(step, 3, loss=2.0 / step, lr=1e-3, tokens_per_second=500.0, eta_seconds=3 - step), logged=True)
    display.close()
    display.close()  # closing twice (end of training, then the trainer's finally) is harmless
    text = out.getvalue()
    assert "step 3/3" in text and "loss 0.667" in text and "500 tok/s" in text and "\x1b" in text


def test_one_place_decides_whether_anything_is_shown(monkeypatch):
    assert isinstance(P.make_display(Terminal(), show=False), P.Silent)
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(P.make_display(Terminal()), P.PlainLines)
