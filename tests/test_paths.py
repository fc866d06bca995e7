"""User paths: private folders all the way down, and one clear error where they cannot be made."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from medchat import paths
from medchat.errors import MedchatError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_folder_created_on_the_way_is_private(medchat_home):
    paths.ensure_private_dir(paths.adapters_dir())
    paths.atomic_write_text(paths.config_file(), "")
    for folder in (medchat_home, paths.data_dir(), paths.adapters_dir(), paths.config_dir()):
        assert mode(folder) == 0o700, folder


def test_an_existing_folder_keeps_its_mode(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    paths.ensure_private_dir(shared / "mine")
    assert mode(shared) == 0o755 and mode(shared / "mine") == 0o700


def test_a_file_in_the_way_is_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("MEDCHAT_HOME", str(tmp_path / "a-file" / "home"))
    with pytest.raises(MedchatError, match=r"a-file is a file, not a folder; MEDCHAT_HOME is .*a folder you can write"):
        paths.ensure_private_dir(paths.data_dir())


def test_a_folder_that_cannot_be_created_is_one_clear_error(monkeypatch, tmp_path):
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(MedchatError, match="cannot create the folder .*: Permission denied; MEDCHAT_HOME is"):
        paths.atomic_write_text(paths.config_file(), "")


def test_a_folder_the_user_named_gets_no_medchat_home_hint(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(MedchatError) as err:
        paths.atomic_write_text(tmp_path / "a-file" / "out" / "x.md", "")
    assert "a-file is a file, not a folder" in str(err.value) and "MEDCHAT_HOME" not in str(err.value)
