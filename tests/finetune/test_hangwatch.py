"""MEDCHAT_HANG_SECONDS: a stalled run prints where each thread waits, prefixed with its rank."""

from __future__ import annotations

import io
import threading
import time

import pytest

from medchat.errors import UsageError
from medchat.finetune import distributed as D
from medchat.finetune import hangwatch as H


def test_the_variables_parse_and_bad_values_name_themselves():
    assert H.seconds_from({}) is None and H.seconds_from({H.ENV: "0"}) is None and H.seconds_from({H.ENV: "90"}) == 90
    with pytest.raises(UsageError, match="MEDCHAT_HANG_SECONDS='soon'"):
        H.seconds_from({H.ENV: "soon"})
    assert D.timeout_seconds({}) == D.TIMEOUT_SECONDS and D.timeout_seconds({D.TIMEOUT_ENV: "120"}) == 120
    with pytest.raises(UsageError, match="MEDCHAT_DIST_TIMEOUT='0'"):
        D.timeout_seconds({D.TIMEOUT_ENV: "0"})


def test_a_stall_prints_every_threads_stack_with_the_rank_and_progress_quiets_it():
    stream = io.StringIO()
    release = threading.Event()

    def waiting_at_a_collective():  # stands for a rank blocked in C with the GIL released
        release.wait(5)

    blocked = threading.Thread(target=waiting_at_a_collective, name="trainer")
    blocked.start()
    watch = H.HangWatch(0.2, prefix="[rank 1] ", stream=stream)
    watch._faulthandler = False  # no file descriptor behind a StringIO; the thread is what is tested
    watch._thread = threading.Thread(target=watch._watch, daemon=True)
    watch._thread.start()
    try:
        watch.beat("step 3")
        time.sleep(0.7)
        text = stream.getvalue()
        assert "[rank 1] medchat: no progress for" in text and "(last: step 3)" in text
        assert "[rank 1] thread trainer (most recent call last):" in text
        assert "in waiting_at_a_collective" in text
        assert all(line.startswith("[rank 1] ") for line in text.splitlines())
        for _ in range(10):  # steps keep coming: nothing more is printed
            watch.beat("step 4")
            time.sleep(0.05)
        printed = stream.getvalue()
        watch.beat("step 5")
        time.sleep(0.1)
        assert stream.getvalue() == printed
    finally:
        watch.stop()
        release.set()
        blocked.join()


def test_off_unless_asked(monkeypatch):
    monkeypatch.delenv(H.ENV, raising=False)
    assert H.start() is None
    H.beat("anything")  # free when off
    H.stop()
