"""`medchat finetune` refuses bad requests with one line, before any model loads (no model needed)."""

from __future__ import annotations

import pytest

from medchat.cli.finetune import flags_from
from medchat.cli.main import main

DATA = "tests/finetune/data"


def run(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(["finetune", *args])
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args, code, message", [
    (["--dataset", f"{DATA}/bad_missing_key.jsonl"], 5, "row 2: missing key 'Complex_CoT'"),
    (["--dataset", f"{DATA}/empty.jsonl"], 5, "no rows"),
    (["--dataset", "./nowhere.jsonl"], 5, "does not exist"),
    (["--dataset", "sample", "--push-to-hub", "me/medbot", "--offline"], 2, "cannot --push-to-hub me/medbot: offline"),
    (["--dataset", "sample", "--push-to-hub", "nouser"], 2, "needs USER/REPO"),
    (["--dataset", "sample", "--samples", "5", "--first", "5"], 2, "not both"),
    (["--dataset", "sample", "--name", "../escape"], 4, "not allowed"),
    (["--dataset", "sample", "--eval-rows", "81"], 5, "leaves no rows"),
    (["--dataset", "sample", "--recipe", "Z"], 2, "unknown recipe"),
    (["--resume", "nothing-here"], 2, "no unfinished run named 'nothing-here'"),
])
def test_refused_before_any_model_loads(capsys, args, code, message):
    got, err = run(capsys, *args)
    assert got == code, err
    assert message in err and err.count("medchat: error:") == 1 and "Traceback" not in err
    assert "loading" not in err  # refused before any model load


def test_report_to_needs_its_package(capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    code, err = run(capsys, "--dataset", "sample", "--report-to", "wandb")
    assert code == 2 and "pip install 'medchat[wandb]'" in err


def test_flags_map_to_settings_keys():
    flat = flags_from({"first": 500, "epochs": 1.0, "lora_r": 64, "rslora": True, "merge": False,
                       "target_modules": "q_proj,v_proj", "dataset": "sample"})
    assert flat == {"finetune.samples": 500, "finetune.select": "first", "finetune.max_steps": 0,
                    "finetune.lora_r": 64, "finetune.use_rslora": True, "finetune.merge": False,
                    "finetune.target_modules": "q_proj,v_proj", "finetune.dataset": "sample", "finetune.epochs": 1.0}
