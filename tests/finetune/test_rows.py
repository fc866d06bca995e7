"""Row building: the prompt masked, the completion trained, long rows truncated or dropped."""

from __future__ import annotations

import pytest

from medchat.errors import DataError
from medchat.finetune import rows as R

from .plans import plan
from .test_data import CharTokenizer


def test_rows_mask_the_prompt_and_train_the_completion():
    built = R.build_rows(plan(), CharTokenizer(), lambda m: None)
    row = built.rows[0]
    text = "".join(map(chr, row["input_ids"]))
    start = row["completion_mask"].count(0)
    assert set(row) == {"input_ids", "completion_mask"}  # labels are built by TRL / Unsloth from the mask
    assert text[:start].endswith("### Answer:\n")
    assert text[start:].startswith("<think>\nLess erythropoietin.\n</think>\nReduced EPO production.</s>")
    assert row["completion_mask"] == [0] * start + [1] * (len(text) - start)
    assert built.lengths["rows"] == 2 and built.lengths["truncated"] == 0


@pytest.mark.parametrize("on_long, kept, truncated, dropped", [("truncate", 2, 1, 0), ("drop", 1, 0, 1)])
def test_long_rows_are_truncated_or_dropped_and_counted(on_long, kept, truncated, dropped):
    built = R.build_rows(plan(max_seq_length=600, on_long=on_long), CharTokenizer(), lambda m: None)
    assert (len(built.rows), built.lengths["truncated"], built.lengths["dropped"]) == (kept, truncated, dropped)
    assert all(len(r["input_ids"]) <= 600 for r in built.rows)


def test_every_row_too_long():
    with pytest.raises(DataError):
        R.build_rows(plan(max_seq_length=100), CharTokenizer(), lambda m: None)
