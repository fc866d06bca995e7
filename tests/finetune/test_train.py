"""The train phase without a model: trainer settings, batching, token counting, the progress callback and stop flag."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from medchat.errors import HardwareError
from medchat.finetune import train as T

from .plans import plan


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


def test_a_warmup_ratio_is_a_share_of_the_steps():
    """Recipe E's warm-up ratio: transformers 5 has no `warmup_ratio`, a float warmup_steps below 1 is one."""
    args = T.trainer_args(plan(max_steps=40, warmup_steps=0, warmup_ratio=0.05), n_rows=400)
    assert args.warmup_steps == 0.05 and args.get_warmup_steps(40) == 2


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


def test_tensorboard_logs_outlive_the_run_folder(monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "")  # so the test's end restores the variable as it was
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR")
    p = plan()
    chosen = T.tensorboard_dir(p)
    assert chosen.endswith("tensorboard/demo") and not chosen.startswith(str(p.run_dir))
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "/elsewhere")
    assert T.tensorboard_dir(p) == "/elsewhere"


def test_the_last_step_always_logs_so_the_final_loss_is_recorded():
    # TRL logs every logging_steps only: a 3-step run with logging_steps 10 used to end with "loss None".
    out = io.StringIO()
    cb = T.make_callback(plan(), T.StopFlag(), stream=out)
    args = SimpleNamespace(logging_steps=10)
    state = SimpleNamespace(global_step=0, max_steps=3, num_input_tokens_seen=0)
    cb.on_train_begin(args, state, SimpleNamespace())
    logged = []
    for step in (1, 2, 3):
        control = SimpleNamespace(should_log=False, should_save=False, should_training_stop=False)
        state.global_step = step
        cb.on_step_end(args, state, control)
        logged.append(control.should_log)
    assert logged == [False, False, True]
    cb.on_log(args, state, control, logs={"loss": 2.25, "learning_rate": 1e-3})
    assert cb.losses == [(3, 2.25)] and out.getvalue().startswith("step 3/3 loss 2.250 lr 1.0e-03")


def test_a_stop_between_logging_steps_logs_its_step():
    stop = T.StopFlag()
    cb = T.make_callback(plan(), stop, stream=io.StringIO())
    args = SimpleNamespace(logging_steps=10)
    state = SimpleNamespace(global_step=0, max_steps=50, num_input_tokens_seen=0)
    cb.on_train_begin(args, state, SimpleNamespace())
    stop.requested = True
    state.global_step = 4
    control = SimpleNamespace(should_log=False, should_save=False, should_training_stop=False)
    cb.on_step_end(args, state, control)
    assert control.should_log and control.should_save and control.should_training_stop


def test_the_learning_rate_shows_between_logging_steps():
    out = io.StringIO()
    cb = T.make_callback(plan(), T.StopFlag(), stream=out)
    args = SimpleNamespace(logging_steps=10)
    state = SimpleNamespace(global_step=1, max_steps=50, num_input_tokens_seen=0)
    cb.on_train_begin(args, state, SimpleNamespace())
    scheduler = SimpleNamespace(get_last_lr=lambda: [3e-4])
    cb.on_step_end(args, state, SimpleNamespace(should_log=False), lr_scheduler=scheduler)
    assert cb.lr == 3e-4
