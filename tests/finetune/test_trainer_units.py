"""Pure parts of the trainer: row building and masking, trainer settings, progress and stop flag."""

from __future__ import annotations

import dataclasses
import io
from types import SimpleNamespace

import pytest

from medchat.config import Settings
from medchat.errors import DataError, HardwareError
from medchat.finetune import data as D
from medchat.finetune import trainer as T

from .test_data import CharTokenizer

ROWS = [D.Example("Why does CKD cause anaemia?", "Less erythropoietin.", "Reduced EPO production."),
        D.Example("What is gout? " + "Explain. " * 40, "Urate crystals deposit in joints.", "Crystal arthritis.")]


def plan(**finetune) -> T.Plan:
    settings = Settings()
    settings = dataclasses.replace(settings, finetune=dataclasses.replace(settings.finetune, **finetune))
    dataset = D.Dataset(D.DataSource("x", "file"), "medical-o1", ROWS)
    p = T.Plan(settings, "demo", dataset, D.Selection((0, 1), ()))
    p.style = "task-query-answer"
    return p


def test_rows_mask_the_prompt_and_train_the_completion():
    built = T.build_rows(plan(), CharTokenizer(), lambda m: None)
    row = built.rows[0]
    text = "".join(map(chr, row["input_ids"]))
    start = row["completion_mask"].count(0)
    assert set(row) == {"input_ids", "completion_mask"}  # labels are built by TRL / Unsloth from the mask
    assert text[:start].endswith("### Answer:\n")
    assert text[start:].startswith("<think>\nLess erythropoietin.\n</think>\nReduced EPO production.</s>")
    assert row["completion_mask"] == [0] * start + [1] * (len(text) - start)
    assert built.lengths["rows"] == 2 and built.lengths["truncated"] == 0


@pytest.mark.parametrize("on_long, kept, truncated, dropped", [("truncate", 2, 1, 0), ("drop", 1, 0, 1)])
def test_long_rows_are_truncated_or_dropped_and_counted(on_long, kept, truncated, dropped):
    built = T.build_rows(plan(max_seq_length=600, on_long=on_long), CharTokenizer(), lambda m: None)
    assert (len(built.rows), built.lengths["truncated"], built.lengths["dropped"]) == (kept, truncated, dropped)
    assert all(len(r["input_ids"]) <= 600 for r in built.rows)


def test_every_row_too_long():
    with pytest.raises(DataError):
        T.build_rows(plan(max_seq_length=100), CharTokenizer(), lambda m: None)


def test_cpu_trainer_settings():
    p = plan(max_steps=3, optimizer="adamw_8bit", packing="padding_free")
    args = T.trainer_args(p, n_rows=16)
    assert args.use_cpu and args.bf16 and not args.fp16
    assert args.optim == "adamw_torch" and not args.gradient_checkpointing
    assert args.warmup_steps == 0 and args.max_steps == 3 and not args.padding_free
    assert any("8-bit AdamW needs CUDA" in n for n in p.notes) and any("warm-up shortened" in n for n in p.notes)
    assert args.include_num_input_tokens_seen == "non_padding" and args.completion_only_loss
    with pytest.raises(HardwareError, match="fp16"):
        T.trainer_args(plan(precision="fp16"), n_rows=16)


@pytest.mark.parametrize("want, device, backend, expected", [
    ("auto", "cuda", "unsloth", "packed"), ("auto", "cuda", "hf", "off"), ("auto", "cpu", "hf", "off"),
    ("packed", "cuda", "hf", "packed"), ("padding_free", "cuda", "unsloth", "padding_free"),
    ("packed", "cpu", "hf", "off"), ("off", "cuda", "unsloth", "off"),
])
def test_batching_mode(want, device, backend, expected):
    p = plan(packing=want)
    p.device, p.backend = device, backend
    assert T.batching(p) == expected
    if device == "cpu":
        T.trainer_args(p, n_rows=16)
        assert any("need CUDA" in n for n in p.notes) == (want not in ("auto", "off"))


def test_packed_micro_batch_is_one_sequence_of_batch_size_times_max_length():
    p = plan(batch_size=3, max_seq_length=1024)
    assert T.micro_batch(p, "packed") == (1, 3072)
    assert T.micro_batch(p, "padding_free") == T.micro_batch(p, "off") == (3, 1024)


def test_trainer_never_reads_each_loss_back_and_counts_concatenated_tokens_from_shapes():
    import torch
    import transformers

    assert T.trainer_args(plan(max_steps=3), n_rows=16).logging_nan_inf_filter is False
    # the overridden hook must still exist upstream, or the override would silently stop mattering
    assert callable(transformers.Trainer._track_num_input_tokens)
    counting = T.host_counting(transformers.Trainer)
    trainer = counting.__new__(counting)  # only the counting hook is exercised: no model needed
    trainer.state = SimpleNamespace(num_input_tokens_seen=5)
    trainer.args = SimpleNamespace(include_num_input_tokens_seen="all")
    trainer._track_num_input_tokens({"input_ids": torch.zeros(1, 4096, dtype=torch.long)})
    assert trainer.state.num_input_tokens_seen == 4101


def test_epochs_mode_and_recipe_warmup_kept():
    args = T.trainer_args(plan(max_steps=0, epochs=2.0, warmup_steps=5), n_rows=400)
    assert args.max_steps == -1 and args.num_train_epochs == 2.0 and args.warmup_steps == 5


def test_progress_line_stop_flag_and_steady_rate():
    stop = T.StopFlag()
    out = io.StringIO()
    cb = T.make_callback(plan(), stop, stream=out)
    args = SimpleNamespace(logging_steps=1)
    state = SimpleNamespace(global_step=0, max_steps=6, num_input_tokens_seen=0)
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    cb.on_train_begin(args, state, control)
    for step in range(1, 6):
        state.global_step, state.num_input_tokens_seen = step, step * 100
        cb.on_step_end(args, state, control)
        cb.on_log(args, state, control, logs={"loss": 3.0 - step / 10, "learning_rate": 2e-4})
    assert "step 5/6" in out.getvalue() and "loss 2.500" in out.getvalue() and "tok/s" in out.getvalue()
    assert cb.losses[-1] == (5, 2.5) and cb.steady_rate() is not None
    stop.requested = True
    state.global_step = 6
    cb.on_step_end(args, state, control)
    assert control.should_save and control.should_training_stop


def test_default_name_is_readable_and_unique(medchat_home):
    name = T.default_name("smollm2", D.DataSource("sample", "sample"))
    assert name.startswith("smollm2-sample-")
    (T.runs_dir() / name).mkdir(parents=True)
    assert T.default_name("smollm2", D.DataSource("sample", "sample")) == name + "-2"


def test_tensorboard_logs_outlive_the_run_folder(monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "")  # so the test's end restores the variable as it was
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR")
    p = plan()
    chosen = T.tensorboard_dir(p)
    assert chosen.endswith("tensorboard/demo") and not chosen.startswith(str(p.run_dir))
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "/elsewhere")
    assert T.tensorboard_dir(p) == "/elsewhere"


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
        T.check_wandb_login()
    monkeypatch.setenv("WANDB_MODE", "offline")
    T.check_wandb_login()  # logs locally: no key needed, W&B not even asked
    assert calls == [1]


def test_push_sends_the_adapter_and_the_merged_model_to_private_repos(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []

    class Hub:  # records what medchat asks of the hub (unreachable here)
        def __init__(self, token):
            calls.append(("token", token))

        def create_repo(self, repo, private, exist_ok):
            calls.append(("create", repo, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, ignore_patterns=None):
            calls.append(("upload", repo_id, folder_path, ignore_patterns))

    monkeypatch.setattr(huggingface_hub, "HfApi", Hub)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    (tmp_path / "merged").mkdir()
    p = plan(push_to_hub="me/medbot")
    assert T.push(p, tmp_path, lambda m: None) == ["me/medbot", "me/medbot-merged"]
    assert calls == [
        ("token", "hf_test"),
        ("create", "me/medbot", True, True), ("upload", "me/medbot", str(tmp_path), ["merged/*"]),
        ("create", "me/medbot-merged", True, True), ("upload", "me/medbot-merged", str(tmp_path / "merged"), None),
    ]
