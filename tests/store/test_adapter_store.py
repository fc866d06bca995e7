"""The adapter store's write side and the `medchat adapters` commands (no model needed)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from medchat.cli.main import cli
from medchat.errors import AdapterError
from medchat.store import adapters


def fake_adapter(folder, manifest=None, report=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x/base", "r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    if manifest is not None:
        (folder / "medchat.json").write_text(json.dumps(manifest))  # as some medchat release wrote it
    if report is not None:
        adapters.write_report(folder, report)
    return folder


def own_adapters():
    return [a for a in adapters.list_adapters() if not a.bundled]


MANIFEST = {
    "name": "demo", "created": "2026-11-22T17:00:00+0000", "prompt_style": "chat_template",
    "base_model": {"id": "HuggingFaceTB/SmolLM2-135M-Instruct", "name": "smollm2"},
    "dataset": {"id": "sample", "kind": "sample", "rows_used": 16, "rows_total": 81, "eval_indices": [1, 2]},
    "settings": {"finetune": {"lora_r": 16, "target_modules": ["q_proj"]}},
    "training": {"steps": 3, "seconds": 12.0, "tokens_per_second": 100.0},
    "losses": {"first_train": 3.4, "final_train": 2.9},
}
REPORT = {"max_new_tokens": 32, "prompt_style": "chat_template", "summary": {
    "base": {"rows": 2, "share_closed": 0.0, "mc_rows": 1, "accuracy": 0.0},
    "adapter": {"rows": 2, "share_closed": 0.5, "mc_rows": 1, "accuracy": 1.0}}}


def test_atomic_save_lists_only_complete_adapters():
    tmp = adapters.begin_save("demo")
    assert tmp.name.startswith(".tmp-demo-") and tmp.parent == adapters.store_dir()
    assert own_adapters() == []  # a half-written adapter is never listed
    fake_adapter(tmp, MANIFEST)
    final = adapters.commit_save(tmp, "demo")
    assert final == adapters.store_dir() / "demo" and not tmp.exists()
    [summary] = own_adapters()
    assert (summary.name, summary.rows, summary.final_loss) == ("demo", 16, 2.9)
    assert oct(final.stat().st_mode & 0o777) == "0o700"


def test_commit_refuses_incomplete_and_existing():
    tmp = adapters.begin_save("demo")
    with pytest.raises(AdapterError, match="incomplete"):
        adapters.commit_save(tmp, "demo")
    fake_adapter(adapters.store_dir() / "demo")
    with pytest.raises(AdapterError, match="already exists"):
        adapters.begin_save("demo")
    adapters.abort_save(tmp)
    assert not tmp.exists()


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 65, "sp ace"])
def test_bad_names(name):
    with pytest.raises(AdapterError, match="not allowed"):
        adapters.validate_name(name)


def test_remove_adapter():
    fake_adapter(adapters.store_dir() / "demo", MANIFEST)
    adapters.remove_adapter("demo")
    assert not (adapters.store_dir() / "demo").exists()
    assert adapters.stale_temporaries() == []
    with pytest.raises(AdapterError, match="no adapter named 'demo'"):
        adapters.remove_adapter("demo")


def test_adapters_commands():
    runner = CliRunner()
    assert "no adapters yet" in runner.invoke(cli, ["adapters", "list"]).output
    fake_adapter(adapters.store_dir() / "demo", MANIFEST, REPORT)
    listed = runner.invoke(cli, ["adapters", "list"])
    assert listed.exit_code == 0 and "demo" in listed.output and "2.900" in listed.output
    shown = runner.invoke(cli, ["adapters", "show", "demo"])
    assert shown.exit_code == 0
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in shown.output
    assert "closes </think> then answers" in shown.output and "50%" in shown.output
    as_json = json.loads(runner.invoke(cli, ["adapters", "show", "demo", "--json"]).output)
    assert as_json["manifest"]["name"] == "demo" and as_json["report"]["summary"]["adapter"]["accuracy"] == 1.0
    path = runner.invoke(cli, ["adapters", "path", "demo"])
    assert path.output.strip() == str((adapters.store_dir() / "demo").resolve())
    assert runner.invoke(cli, ["adapters", "rm", "demo", "--yes"]).exit_code == 0
    assert not (adapters.store_dir() / "demo").exists()


def test_rm_unknown_deletes_nothing():
    fake_adapter(adapters.store_dir() / "keep", MANIFEST)
    result = CliRunner().invoke(cli, ["adapters", "rm", "keep", "missing", "--yes"])
    assert result.exit_code != 0
    assert (adapters.store_dir() / "keep").exists()


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A bundled-adapters folder holding one fake demo adapter."""
    root = tmp_path / "bundled"
    fake_adapter(root / adapters.DEMO_ADAPTER, MANIFEST)
    monkeypatch.setattr(adapters, "bundled_dir", lambda: root)
    return root / adapters.DEMO_ADAPTER


def test_bundled_adapters_are_found_listed_and_read_only(shipped):
    assert adapters.resolve_adapter(adapters.DEMO_ADAPTER) == shipped.resolve()
    [listed] = adapters.list_adapters()
    assert listed.bundled and listed.name == adapters.DEMO_ADAPTER
    runner = CliRunner()
    out = runner.invoke(cli, ["adapters", "list"]).output
    assert f"{adapters.DEMO_ADAPTER} (bundled)" in out and "no adapters yet" in out
    rm = runner.invoke(cli, ["adapters", "rm", adapters.DEMO_ADAPTER, "--yes"])
    assert rm.exit_code != 0 and "bundled with medchat and read-only" in str(rm.exception) and shipped.exists()
    # a stored adapter of the same name wins over the bundled one
    mine = fake_adapter(adapters.store_dir() / adapters.DEMO_ADAPTER, MANIFEST)
    assert adapters.resolve_adapter(adapters.DEMO_ADAPTER) == mine.resolve()
    assert [a.bundled for a in adapters.list_adapters()] == [False]


def test_default_adapter(shipped, monkeypatch):
    embedded = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert adapters.default_adapter("", embedded, embedded) == adapters.DEMO_ADAPTER
    assert adapters.default_adapter("", "other/model", embedded) == ""
    assert adapters.default_adapter("none", embedded, embedded) == ""
    assert adapters.default_adapter("NONE", embedded, embedded) == ""
    assert adapters.default_adapter("mine", embedded, embedded) == "mine"
    monkeypatch.setattr(adapters, "bundled_dir", lambda: shipped.parent / "missing")
    assert adapters.default_adapter("", embedded, embedded) == ""  # not installed: the bare model
    with pytest.raises(AdapterError, match="reserved"):
        adapters.validate_name("none")


def test_the_shipped_demo_adapter():
    """The package ships the demo adapter: small, with the command that made it and its report card."""
    from medchat.store.manifest import read_manifest

    path = adapters.bundled_adapter(adapters.DEMO_ADAPTER)
    assert path is not None
    assert (path / "adapter_model.safetensors").stat().st_size < 6 * 2**20  # 16-bit LoRA weights: 4.9 MB
    manifest = read_manifest(path)
    assert manifest.base_model.id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert manifest.command.startswith("medchat finetune --model smollm2 --dataset sample ")
    report = adapters.read_report(path)
    assert report["adapter"]["closed_rate"] >= 0.8  # the goal: reason, close </think>, answer
    assert report["adapter"]["rows"] >= 10 and report["base"]["closed_rate"] == 0.0


def leftover(name: str, age: float = 0.0, locked_file: bool = False):
    """A `.tmp-*` folder as a killed save leaves it: some weights, maybe its (released) lock file."""
    import os
    import time

    folder = adapters.store_dir() / name
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 2048)
    if locked_file:
        (folder / adapters.SAVE_LOCK).touch()
    stamp = time.time() - age
    os.utime(folder, (stamp, stamp))
    return folder


def test_clean_removes_leftovers_of_killed_saves_but_not_saves_in_use():
    from filelock import FileLock

    dead = leftover(".tmp-demo-k1ll3d00", locked_file=True)  # its process is gone: lock file, no lock
    legacy = leftover(".tmp-old-abcdefgh", age=2 * adapters.STALE_AFTER)  # an older release's, no lock file
    trash = leftover(".rm-gone-abcdefgh", age=2 * adapters.STALE_AFTER)
    fresh = leftover(".tmp-new-abcdefgh")  # just created, its lock not taken yet
    other = leftover(".tmp-busy-abcdefgh", locked_file=True)
    held = FileLock(str(other / adapters.SAVE_LOCK), timeout=0)  # as another process writing it would
    held.acquire()
    mine = adapters.begin_save("mine")  # this process's own save (begin_save cleans first)
    try:
        assert not dead.exists() and not legacy.exists() and not trash.exists()
        assert fresh.exists() and other.exists() and mine.exists()
        result = CliRunner().invoke(cli, ["adapters", "clean"])
        assert result.exit_code == 0 and "3 in use" in result.output
        assert fresh.exists() and other.exists() and mine.exists()
    finally:
        held.release()
    result = CliRunner().invoke(cli, ["adapters", "clean"])
    assert "removed .tmp-busy-abcdefgh" in result.output and not other.exists()
    fake_adapter(mine, MANIFEST)
    final = adapters.commit_save(mine, "mine")
    assert not (final / adapters.SAVE_LOCK).exists()  # the lock never becomes part of the adapter
    assert [p.name for p in adapters.stale_temporaries()] == [fresh.name]


def test_list_points_at_clean():
    leftover(".tmp-demo-k1ll3d00", locked_file=True)
    result = CliRunner().invoke(cli, ["adapters", "list"])
    assert "1 unfinished save(s)" in result.output and "medchat adapters clean" in result.output
    assert "removed .tmp-demo-k1ll3d00 (0.0 MB)" in CliRunner().invoke(cli, ["adapters", "clean"]).output
    assert "nothing to clean" in CliRunner().invoke(cli, ["adapters", "clean"]).output
