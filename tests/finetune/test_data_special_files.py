"""A data path that is not a regular file is refused, never read (a FIFO would block forever)."""

from __future__ import annotations

import os
import threading

import pytest

from medchat.errors import DataError
from medchat.finetune.data import load_rows


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_as_dataset_is_refused_not_read(tmp_path):
    fifo = tmp_path / "rows.jsonl"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            load_rows(str(fifo))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():
        with open(fifo, "w"):  # unblock the reader so the test process can end
            pass
        pytest.fail("reading a FIFO as the data set blocked")
    assert isinstance(outcome[0], DataError) and "rows.jsonl is not a regular file" in str(outcome[0])
