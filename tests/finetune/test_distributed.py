"""Multi-GPU launches without launching: ranks from the environment, who speaks, the per-step agreement,
resuming with the same number of ranks and the --gpus command line."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from medchat.cli.main import main
from medchat.errors import DataError, HardwareError, Interrupted, UsageError
from medchat.finetune import distributed as D
from medchat.finetune import train as T

from .plans import plan

TORCHRUN = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}


def test_ranks_come_from_the_launcher_environment():
    assert D.ranks({}) == D.Ranks(0, 0, 1) and D.ranks({}).main and not D.ranks({}).distributed
    two = D.ranks(TORCHRUN)
    assert (two.rank, two.local_rank, two.world_size, two.main, two.distributed) == (1, 1, 2, False, True)
    # Node 2 of a 2 x 4 job: global rank 5 trains on its node's GPU 1.
    assert D.ranks({"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8"}).local_rank == 1
    with pytest.raises(UsageError, match="WORLD_SIZE='two'"):
        D.ranks({"WORLD_SIZE": "two"})
    with pytest.raises(UsageError, match="do not fit"):
        D.ranks({"RANK": "2", "WORLD_SIZE": "2"})


def test_rank_zero_reports_what_every_rank_meets_and_others_name_their_rank():
    assert not D.quiet_on_this_rank(DataError("bad row"), {})
    assert D.quiet_on_this_rank(DataError("bad row"), TORCHRUN)
    assert D.quiet_on_this_rank(Interrupted("stopped at step 3"), TORCHRUN)
    assert not D.quiet_on_this_rank(HardwareError("out of memory"), TORCHRUN)  # may be this rank's alone
    assert D.error_prefix(TORCHRUN) == "[rank 1] " and D.error_prefix({}) == ""
    assert D.say_for(print, D.Ranks(0, 0, 2)) is print
    said = []
    D.say_for(said.append, D.Ranks(1, 1, 2))("hello")
    assert said == []


def test_a_usage_error_is_printed_once_under_torchrun(monkeypatch, capsys):
    argv = ["finetune", "--resume", "somerun", "--lora-r", "4"]
    with pytest.raises(SystemExit) as rank0:
        main(argv)
    assert rank0.value.code == 2 and "medchat: error: --resume NAME" in capsys.readouterr().err
    for var, value in TORCHRUN.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(SystemExit) as rank1:
        main(argv)
    assert rank1.value.code == 2 and capsys.readouterr().err == ""


def test_ddp_settings_and_effective_batch():
    p = plan(batch_size=2, grad_accum=4)
    assert D.effective_batch(p, 1) == 8 and D.effective_batch(p, 4) == 32
    assert D.trainer_kwargs(p) == {"ddp_find_unused_parameters": False}  # LoRA on every decoder layer's linears
    assert D.trainer_kwargs(plan(target_modules=("q_proj", "lm_head"))) == {}  # may skip: let DDP search
    one = T.trainer_args(p, n_rows=16)
    two = T.trainer_args(p, n_rows=16, world_size=2)
    assert one.ddp_find_unused_parameters is None and two.ddp_find_unused_parameters is False
    # An epoch of 400 rows at 8 rows a step per rank: 50 steps on one, 25 on two (the warm-up is a tenth).
    assert T.trainer_args(plan(max_steps=0, epochs=1.0, warmup_steps=40, batch_size=2, grad_accum=4), 400).warmup_steps == 5
    assert T.trainer_args(plan(max_steps=0, epochs=1.0, warmup_steps=40, batch_size=2, grad_accum=4), 400,
                          world_size=2).warmup_steps == 2


def test_resume_needs_the_same_number_of_ranks(tmp_path):
    p = plan(batch_size=2, grad_accum=4)
    D.check_resume(tmp_path, "old", 1)  # a run from before launch.json: one process
    with pytest.raises(UsageError, match="started on 1 process and this launch has 2"):
        D.check_resume(tmp_path, "old", 2)
    D.record_launch(tmp_path, p, 2)
    assert json.loads((tmp_path / D.LAUNCH_FILE).read_text()) == {
        "world_size": 2, "per_device_batch": 2, "grad_accum": 4, "effective_batch": 16}
    D.check_resume(tmp_path, "run", 2)
    with pytest.raises(UsageError, match="--resume run --gpus 2 .*--nproc_per_node 2"):
        D.check_resume(tmp_path, "run", 1)


def test_gpus_runs_the_same_command_line_under_torchrun():
    argv = ["--debug", "finetune", "--gpus", "2", "--recipe", "A", "--gpus=3", "--samples", "500"]
    assert D.without_gpus(argv) == ["--debug", "finetune", "--recipe", "A", "--samples", "500"]
    args = D.torchrun_args(4, ["finetune", "--gpus", "4", "--max-steps", "10"])
    assert args[:2] == ["--standalone", "--nproc_per_node=4"] and args[-5:] == ["-m", "medchat", "finetune",
                                                                                "--max-steps", "10"]


def test_gpus_refuses_more_gpus_than_torch_sees(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SystemExit) as exc:
        main(["finetune", "--model", "smollm2", "--dataset", "sample", "--gpus", "2"])
    assert exc.value.code == HardwareError.exit_code
    assert "--gpus 2: torch sees 1 GPU on this machine" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError, match="under torchrun"):
        D.launch(2, ["finetune"])


def test_one_rank_needs_no_process_group():
    # Nothing to join: no torch.distributed, no GPU, and Unsloth's early import is left to loading.
    group = D.Group(D.Ranks()).start("cuda", before=lambda: pytest.fail("imported before a group that is not started"))
    assert group.agree("name") == "name" and group.exchange(True, 7) == (True, 7) and group.gather(1.5) == [1.5]
    group.barrier()
    group.finish()


class TwoRanks(D.Group):
    """This rank plus another that asked to stop and trained 1,000 tokens per step."""

    def __init__(self, other_stops: bool) -> None:
        super().__init__(D.Ranks(0, 0, 2))
        self.other_stops = other_stops

    def exchange(self, stop: bool, tokens: int) -> tuple[bool, int]:
        return stop or self.other_stops, tokens + 1000


@pytest.mark.parametrize("counted_on_host", [True, False])
def test_every_rank_stops_after_the_same_step_and_counts_every_ranks_tokens(counted_on_host):
    stop = T.StopFlag()
    sync = D.sync_callback(TwoRanks(other_stops=False), stop, counted_on_host)
    state = SimpleNamespace(num_input_tokens_seen=100)  # resumed: 100 tokens before
    control = SimpleNamespace()
    sync.on_train_begin(None, state, control)
    state.num_input_tokens_seen += 500  # this rank's step (train.host_counting)
    sync.on_step_end(None, state, control)
    assert state.num_input_tokens_seen == (1600 if counted_on_host else 600) and not stop.requested
    sync = D.sync_callback(TwoRanks(other_stops=True), stop, counted_on_host)
    sync.on_train_begin(None, state, control)
    sync.on_step_end(None, state, control)
    assert stop.requested  # the other rank's Ctrl+C stops this one after the same step
