"""The first run on the embedded model: `medchat ask --json` reasons and answers with the bundled demo
adapter, and names it; `--adapter none` is the bare model (real weights)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from medchat.cli.main import cli
from medchat.store.adapters import DEMO_ADAPTER

pytestmark = pytest.mark.slow


def ask_json(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["ask", "--json", "--model", "smollm2", "--temperature", "0",
                                      "--max-new-tokens", "256", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_ask_json_uses_the_demo_adapter_on_the_embedded_model(embedded_model):
    out = ask_json("What causes gout?")
    assert out["adapter"] == DEMO_ADAPTER
    assert out["reasoning"].strip() and out["answer"].strip() and out["finish_reason"] == "stop"
    bare = ask_json("--adapter", "none", "--max-new-tokens", "8", "What causes gout?")
    assert bare["adapter"] is None
