"""Checkpoints and run folders: a half-written checkpoint is never resumed from (no model needed)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from medchat.errors import UsageError
from medchat.finetune import checkpoints as C
from medchat.finetune import train as T
from tests.finetune.plans import plan

FILES = {"adapter_model.safetensors": 4096, "optimizer.pt": 8192, "scheduler.pt": 64, "rng_state.pth": 128,
         "trainer_state.json": 256}


def write_checkpoint(run_dir, step, files=FILES, seconds_before=0.0):
    """A checkpoint as Trainer writes it, then marked by the progress callback's on_save."""
    folder = run_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    for name, size in files.items():
        (folder / name).write_bytes(b"\1" * size)
    cb = T.make_callback(plan(), T.StopFlag(), stream=io.StringIO(), seconds_before=seconds_before)
    cb.seconds = 2.5
    cb.on_save(SimpleNamespace(output_dir=str(run_dir)), SimpleNamespace(global_step=step), SimpleNamespace())
    return folder


def test_a_checkpoint_killed_while_written_is_never_resumed_from(tmp_path):
    run = tmp_path / "runs" / "demo"
    two = write_checkpoint(run, 2)
    # Killed while checkpoint-4 was written: some files, no marker (Trainer writes them one by one).
    four = run / "checkpoint-4"
    four.mkdir()
    (four / "adapter_model.safetensors").write_bytes(b"\1" * 4096)
    assert C.is_complete(two) and not C.is_complete(four)
    assert C.last_complete(run) == two
    assert C.drop_incomplete(run) == [four] and not four.exists() and two.exists()


def test_a_checkpoint_killed_while_deleted_or_truncated_is_incomplete(tmp_path):
    run = tmp_path / "runs" / "demo"
    one, three = write_checkpoint(run, 1), write_checkpoint(run, 3)
    (three / "optimizer.pt").write_bytes(b"\1" * 100)  # shorter than when it was marked
    (one / "scheduler.pt").unlink()  # rotation deleting the oldest, killed midway
    assert C.last_complete(run) is None  # start at step 0
    assert not (run / "checkpoint-10").exists() and C.last_complete(tmp_path / "nothing") is None


def test_the_marker_carries_the_run_seconds_across_resumes(tmp_path):
    folder = write_checkpoint(tmp_path, 5, seconds_before=40.0)
    assert C.read_marker(folder)["seconds"] == 42.5 and C.read_marker(folder)["step"] == 5


def test_the_last_step_is_checkpointed_unless_checkpoints_are_off():
    for save_steps, expected in ((50, True), (0, False)):
        cb = T.make_callback(plan(save_steps=save_steps), T.StopFlag(), stream=io.StringIO())
        state = SimpleNamespace(global_step=0, max_steps=3, num_input_tokens_seen=0)
        cb.on_train_begin(SimpleNamespace(), state, SimpleNamespace())
        state.global_step = 3
        control = SimpleNamespace(should_log=False, should_save=False, should_training_stop=False)
        cb.on_step_end(SimpleNamespace(), state, control)
        assert control.should_save is expected


def test_the_whole_run_history_comes_from_the_restored_trainer_state():
    # A run resumed at step 2 from its checkpoint: Trainer restored the earlier logs and token count.
    state = SimpleNamespace(global_step=4, num_input_tokens_seen=2870, log_history=[
        {"loss": 3.60123, "step": 1}, {"loss": 3.352, "step": 2}, {"loss": 3.069, "learning_rate": 5e-4, "step": 3},
        {"loss": 3.2234, "step": 4}, {"train_runtime": 12.0, "train_loss": 3.3, "step": 4}])
    assert T.run_history(state) == (4, [(1, 3.6012), (2, 3.352), (3, 3.069), (4, 3.2234)], 2870)


def test_one_process_at_a_time_uses_a_run(tmp_path):
    run = tmp_path / "runs" / "demo"
    with C.hold(run, "demo"):
        with pytest.raises(UsageError, match="run 'demo' is in use by another medchat process"):
            with C.hold(run, "demo"):
                pass
    assert not run.exists()  # stopped before run.json: nothing left behind
    with C.hold(run, "demo"):  # released
        (run / C.RUN_STATE).write_text("{}")
        write_checkpoint(run, 1)
        assert C.exists(run)
        C.clear(run)
        assert not C.exists(run) and C.checkpoints(run) == [] and (run / C.LOCK).exists()
        (run / C.RUN_STATE).write_text("{}")
        C.finish(run)
    assert not run.exists()
