"""`medchat history list|export|rm` over a stored conversation."""

from __future__ import annotations

import json
import stat

from click.testing import CliRunner

from medchat.cli.main import cli
from medchat.store.history import HistoryStore, StoredTurn


def test_history_commands(tmp_path):
    with HistoryStore() as store:
        cid = store.new_conversation("What is gout?", model="smollm2")
        store.save_turn(cid, 0, StoredTurn("What is gout?", "uric acid…", "A form of arthritis.", "stop", model="smollm2"))
    runner = CliRunner()
    listed = runner.invoke(cli, ["history", "list"])
    assert listed.exit_code == 0 and listed.output.startswith(f"{cid}\t") and "What is gout?" in listed.output
    md = runner.invoke(cli, ["history", "export", str(cid)])
    assert md.exit_code == 0 and "<details>" in md.output and "A form of arthritis." in md.output
    out = tmp_path / "gout.json"
    assert runner.invoke(cli, ["history", "export", str(cid), "--format", "json", "-o", str(out)]).exit_code == 0
    assert json.loads(out.read_text())["turns"][0]["reasoning"] == "uric acid…"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert runner.invoke(cli, ["history", "rm", str(cid)]).exit_code == 0
    missing = runner.invoke(cli, ["history", "export", str(cid)])
    assert missing.exit_code != 0 and "no conversation with id" in str(missing.exception)
