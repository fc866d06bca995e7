"""The typed adapter manifest: one reader and writer; manifests of earlier releases still load."""

from __future__ import annotations

import json

import pytest

from medchat.errors import AdapterError
from medchat.store.manifest import FORMAT, Manifest, read_manifest, write_manifest


def write(folder, data):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "medchat.json").write_text(json.dumps(data))
    return folder


def test_round_trip_keeps_every_field_and_unknown_keys(tmp_path):
    m = Manifest.model_validate({
        "name": "demo", "base_model": {"id": "x/base", "name": "base"}, "prompt_style": "r1-medical",
        "dataset": {"id": "sample", "train_indices": [0, 2], "eval_indices": [1]},
        "losses": {"first_train": 3.5, "final_train": 2.0, "history": [[1, 3.5], [2, 2.0]]},
        "from_a_newer_release": {"kept": True},
    })
    write_manifest(tmp_path, m)
    again = read_manifest(tmp_path)
    assert again == m
    assert again.losses.history == [(1, 3.5), (2, 2.0)]
    assert json.loads((tmp_path / "medchat.json").read_text())["from_a_newer_release"] == {"kept": True}
    assert (tmp_path / "medchat.json").stat().st_mode & 0o777 == 0o600


def test_earliest_manifests_with_a_bare_base_model_string_still_load(tmp_path):
    m = read_manifest(write(tmp_path, {"base_model": "x/base", "prompt_style": "chat_template"}))
    assert m.base_model.id == "x/base" and m.format == 1 and m.dataset.eval_indices == []


def test_missing_manifest_is_none_and_a_bad_one_is_one_line_naming_the_key(tmp_path):
    assert read_manifest(tmp_path) is None
    write(tmp_path, {"dataset": {"rows_used": "many"}})
    with pytest.raises(AdapterError, match=r"medchat.json: key 'dataset.rows_used'"):
        read_manifest(tmp_path)
    (tmp_path / "medchat.json").write_text("[1, 2]")
    with pytest.raises(AdapterError, match="not a manifest"):
        read_manifest(tmp_path)
    (tmp_path / "medchat.json").write_text("{truncated")
    with pytest.raises(AdapterError, match="unreadable"):
        read_manifest(tmp_path)


def test_a_newer_format_is_refused_not_misread(tmp_path):
    write(tmp_path, {"format": FORMAT + 1})
    with pytest.raises(AdapterError, match="upgrade medchat"):
        read_manifest(tmp_path)
