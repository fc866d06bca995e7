"""The run's phases around training, with the model and trainer faked: Ctrl+C outside training, --restart,
one process per run, and what the adapter records as its base (no real model needed)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from medchat.errors import Interrupted, UsageError
from medchat.finetune import checkpoints as C
from medchat.finetune import load, rows, train
from medchat.finetune import run as R
from medchat.finetune.plan import make_plan, runs_dir
from medchat.finetune.rows import Built
from medchat.models.catalog import ResolvedModel
from medchat.store import adapters
from tests.finetune.plans import plan as make_test_plan


class FakeModel:
    """Stands in for the peft model; ``save_pretrained`` can be made to act like a Ctrl+C."""

    def __init__(self, on_save=None):
        self.peft_config = {"default": SimpleNamespace(base_model_name_or_path="/home/me/.cache/smollm2",
                                                       target_modules=["q_proj"])}
        self.base = SimpleNamespace(config=SimpleNamespace(name_or_path="/home/me/.cache/smollm2"))
        self.on_save = on_save

    def get_base_model(self):
        return self.base

    def save_pretrained(self, folder, **kwargs):
        if self.on_save:
            self.on_save(folder)


def fake_phases(monkeypatch, *, load_model=None, train_fn=None, model=None, resume=False):
    def prepare(settings, **kw):
        p = make_test_plan()
        p.resolved = ResolvedModel("smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct", "/home/me/.cache/smollm2")
        p.resume = resume
        return p

    monkeypatch.setattr(R, "prepare", prepare)
    monkeypatch.setattr(load, "load_model", load_model or (lambda plan, say: (model or FakeModel(), object())))
    monkeypatch.setattr(rows, "build_rows", lambda plan, tok, say: Built([{"input_ids": [1], "completion_mask": [1]}], {}, {}))
    monkeypatch.setattr(rows, "describe_lengths", lambda lengths: "lengths")
    monkeypatch.setattr(train, "train", train_fn or (lambda *a: (object(), train.TrainResult(3, [(3, 2.0)], 1.0, 10, None, False))))


def ctrl_c(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_while_the_trainer_is_set_up_names_the_resume_command(monkeypatch):
    fake_phases(monkeypatch, train_fn=ctrl_c)
    with pytest.raises(Interrupted, match="medchat finetune --resume demo"):
        R.run_finetune(make_test_plan().settings, say=lambda m: None)
    assert C.exists(runs_dir() / "demo")


def test_ctrl_c_while_the_adapter_is_saved_names_the_resume_command_and_leaves_no_leftover(monkeypatch):
    fake_phases(monkeypatch, model=FakeModel(on_save=ctrl_c))
    with pytest.raises(Interrupted, match="medchat finetune --resume demo"):
        R.run_finetune(make_test_plan().settings, say=lambda m: None)
    assert adapters.stale_temporaries() == [] and [a for a in adapters.list_adapters() if not a.bundled] == []


def test_ctrl_c_while_loading_a_new_run_is_a_plain_interrupt_but_a_resumed_one_names_resume(monkeypatch):
    fake_phases(monkeypatch, load_model=ctrl_c)
    with pytest.raises(KeyboardInterrupt):  # nothing to resume yet: `medchat: interrupted`
        R.run_finetune(make_test_plan().settings, say=lambda m: None)
    assert not (runs_dir() / "demo").exists()  # nothing to resume, nothing left
    (runs_dir() / "demo").mkdir(parents=True)
    (runs_dir() / "demo" / C.RUN_STATE).write_text("{}")
    fake_phases(monkeypatch, load_model=ctrl_c, resume=True)
    with pytest.raises(Interrupted, match="--resume demo"):
        R.run_finetune(make_test_plan().settings, say=lambda m: None)


def test_the_adapter_records_the_hub_id_not_the_local_path(monkeypatch):
    saved = {}

    def record(folder):
        model = saved["model"]
        saved.update(config=model.peft_config["default"].base_model_name_or_path, card=model.base.config.name_or_path)
        (Path(folder) / "adapter_config.json").write_text("{}")
        (Path(folder) / "adapter_model.safetensors").write_bytes(b"\0")

    saved["model"] = FakeModel(on_save=record)
    fake_phases(monkeypatch, model=saved["model"])
    trained = R.run_finetune(make_test_plan().settings, say=lambda m: None)
    assert saved["config"] == saved["card"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert trained.manifest.base_model.source == "/home/me/.cache/smollm2"  # the local path stays here only
    assert not (runs_dir() / "demo").exists()


def test_a_run_in_use_is_refused_and_a_finished_one_is_cleaned(monkeypatch):
    fake_phases(monkeypatch, resume=True)
    with C.hold(runs_dir() / "demo", "demo"):
        with pytest.raises(UsageError, match="in use by another medchat process"):
            R.run_finetune(make_test_plan().settings, say=lambda m: None)
    (runs_dir() / "demo").mkdir(parents=True, exist_ok=True)
    (runs_dir() / "demo" / C.RUN_STATE).write_text("{}")
    (adapters.store_dir() / "demo").mkdir(parents=True)  # killed after the adapter was stored
    with pytest.raises(UsageError, match="already finished"):
        R.run_finetune(make_test_plan().settings, say=lambda m: None)
    assert not (runs_dir() / "demo").exists()


def test_restart_discards_the_unfinished_run(monkeypatch):
    import dataclasses

    settings = make_test_plan().settings
    settings = dataclasses.replace(settings, finetune=dataclasses.replace(settings.finetune, dataset="sample"))
    run_dir = runs_dir() / "demo"
    (run_dir / "checkpoint-3").mkdir(parents=True)
    (run_dir / C.RUN_STATE).write_text(json.dumps({"name": "demo"}))
    with pytest.raises(UsageError, match="--restart"):
        make_plan(settings, name="demo", say=lambda m: None)
    make_plan(settings, name="demo", restart=True, say=lambda m: None)  # allowed; discarded once training starts
    assert C.exists(run_dir)

    seen = []

    def record_then_stop(plan, *args):
        seen.append((plan.resume, C.checkpoints(plan.run_dir)))
        raise KeyboardInterrupt

    fake_phases(monkeypatch, train_fn=record_then_stop, resume=True)
    with pytest.raises(Interrupted, match="--resume demo"):
        R.run_finetune(settings, resume="demo", restart=True, say=lambda m: None)
    assert seen == [(False, [])]  # from step 0, no checkpoint left
