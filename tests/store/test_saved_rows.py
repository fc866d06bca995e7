"""Replies kept as training rows: medical-o1 JSONL, private, one row per question, read back by finetune."""

from __future__ import annotations

import json
import stat

import pytest

from medchat import paths
from medchat.errors import DataError, UsageError
from medchat.store import saved_rows as sr


def test_rows_are_medical_o1_private_and_deduplicated_by_question():
    path, count, replaced = sr.save_row(sr.Row(" What is gout? ", "Urate.", "Arthritis."))
    assert path == paths.data_dir() / "rows" / "saved.jsonl" and (count, replaced) == (1, False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    sr.save_row(sr.Row("What is a fever?", "Heat.", "A raised temperature."))
    _, count, replaced = sr.save_row(sr.Row("what is  GOUT?", "Urate crystals.", "An arthritis."))
    assert (count, replaced) == (2, True)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [
        {"Question": "What is a fever?", "Complex_CoT": "Heat.", "Response": "A raised temperature."},
        {"Question": "what is  GOUT?", "Complex_CoT": "Urate crystals.", "Response": "An arthritis."},
    ]
    assert sr.list_files() == [("saved", path, 2)]


@pytest.mark.parametrize("row, name, message", [
    (sr.Row("q", "", "a"), "saved", "the reasoning is empty"),
    (sr.Row("q", "r", " "), "saved", "the answer is empty"),
    (sr.Row("q", "r", "a"), "../out", "row file name"),
])
def test_refused_rows_write_nothing(row, name, message):
    with pytest.raises(UsageError, match=message):
        sr.save_row(row, name)
    assert not sr.rows_dir().exists()


def test_finetune_reads_saved_and_saved_name():
    from medchat.finetune.data import load_dataset

    sr.save_row(sr.Row("What is gout?", "Urate.", "Arthritis."), "mine")
    data = load_dataset("saved:mine")
    assert data.shape == "medical-o1" and data.source.kind == "file"
    assert data.source.id == str(sr.file_for("mine").resolve())
    assert (data.examples[0].question, data.examples[0].reasoning, data.examples[0].answer) == (
        "What is gout?", "Urate.", "Arthritis.")
    with pytest.raises(DataError, match="no saved rows"):
        load_dataset("saved")
