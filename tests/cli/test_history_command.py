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
    assert runner.invoke(cli, ["history", "rm", str(cid), "--yes"]).exit_code == 0
    missing = runner.invoke(cli, ["history", "export", str(cid)])
    assert missing.exit_code != 0 and "no conversation with id" in str(missing.exception)


def saved_conversation() -> int:
    with HistoryStore() as store:
        cid = store.new_conversation("What is gout?", model="smollm2")
        store.save_turn(cid, 0, StoredTurn("What is gout?", "", "A form of arthritis.", "stop"))
    return cid


def conversation_ids() -> list[int]:
    with HistoryStore() as store:
        return [c.id for c in store.list()]


def test_history_rm_asks_first_like_adapters_rm():
    cid = saved_conversation()
    runner = CliRunner()
    declined = runner.invoke(cli, ["history", "rm", str(cid)], input="n\n")
    assert declined.exit_code == 1 and "What is gout?" in declined.output and conversation_ids() == [cid]
    accepted = runner.invoke(cli, ["history", "rm", str(cid)], input="y\n")
    assert accepted.exit_code == 0 and conversation_ids() == []
    cid = saved_conversation()
    assert runner.invoke(cli, ["history", "rm", "-y", str(cid)]).exit_code == 0 and conversation_ids() == []


def test_an_id_beyond_64_bits_is_an_unknown_conversation():
    saved_conversation()
    for command in ("export", "rm"):
        result = CliRunner().invoke(cli, ["history", command, "99999999999999999999", "--yes"][: 4 if command == "rm" else 3])
        assert result.exit_code != 0 and "no conversation with id 99999999999999999999" in str(result.exception)


def test_export_into_a_missing_folder_is_refused_not_created(tmp_path):
    cid = saved_conversation()
    target = tmp_path / "missing" / "dir" / "x.md"
    result = CliRunner().invoke(cli, ["history", "export", str(cid), "-o", str(target)])
    assert result.exit_code != 0 and "does not exist" in str(result.exception)
    assert not (tmp_path / "missing").exists()
