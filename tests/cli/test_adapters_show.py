"""`medchat adapters show` for adapters without a report card (no model needed)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from medchat.cli.main import cli
from medchat.store import adapters


@pytest.mark.parametrize("eval_indices, says", [([3], "no report card yet: run `medchat eval --adapter demo`"),
                                                ([], "no report card: trained without held-out rows")])
def test_show_without_a_report_card(eval_indices, says):
    folder = adapters.store_dir() / "demo"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x/base", "r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    (folder / "medchat.json").write_text(json.dumps({"name": "demo", "base_model": {"id": "x/base"},
                                                     "dataset": {"id": "sample", "eval_indices": eval_indices}}))
    shown = CliRunner().invoke(cli, ["adapters", "show", "demo"])
    assert shown.exit_code == 0, shown.output
    assert says in shown.output
