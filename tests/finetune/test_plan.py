"""The plan phase: names and checks that refuse a run before any model loads."""

from __future__ import annotations

import pytest

from medchat.finetune import data as D
from medchat.finetune import plan as P


def test_default_name_is_readable_and_unique(medchat_home):
    name = P.default_name("smollm2", D.DataSource("sample", "sample"))
    assert name.startswith("smollm2-sample-")
    (P.runs_dir() / name).mkdir(parents=True)
    assert P.default_name("smollm2", D.DataSource("sample", "sample")) == name + "-2"


def test_wandb_without_a_login_is_refused_before_anything_loads(monkeypatch):
    import sys
    import types

    from medchat.errors import UsageError

    calls = []

    def login():
        calls.append(1)
        raise RuntimeError("No API key configured. Use `wandb login` to log in.")

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(login=login))
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(UsageError, match="wandb login.*WANDB_MODE=offline"):
        P.check_wandb_login()
    monkeypatch.setenv("WANDB_MODE", "offline")
    P.check_wandb_login()  # logs locally: no key needed, W&B not even asked
    assert calls == [1]
