"""benchmarks/multigpu.py tells a hung launch from a slow one by the ranks' stacks (hangwatch's dumps)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import multigpu  # noqa: E402


def dump(rank: int, seconds: int, frames: list[str], last: str = "step 3") -> str:
    lines = [f"[rank {rank}] medchat: no progress for {seconds} s (last: {last}); pid 1, every thread's stack:",
             f"[rank {rank}] thread tqdm_monitor (most recent call last):", f"[rank {rank}]     waiter.acquire()",
             f"[rank {rank}] thread MainThread (most recent call last):"]
    return "\n".join(lines + [f"[rank {rank}]   {f}" for f in frames]) + "\n"


def test_a_launch_is_stuck_once_every_rank_showed_the_same_stack_twice():
    wait = ['File "c10d.py", line 4287, in all_gather', "work.wait()"]
    text = dump(0, 60, wait) + dump(1, 60, ["compiling block 3"]) + "Thread 0x7f (most recent call first):\n"
    assert not multigpu.stuck(text, 2)  # one dump each
    text += dump(0, 120, wait) + dump(1, 120, ["compiling block 9"])
    assert not multigpu.stuck(text, 2)  # rank 1 still moves
    text += dump(1, 180, ["compiling block 9"])
    assert multigpu.stuck(text, 2) and not multigpu.stuck(text, 3)


def test_rank_zero_alone_after_the_others_left_is_not_a_stuck_launch():
    wait = ['File "c10d.py", line 4287, in all_gather', "work.wait()"]
    text = dump(1, 60, wait, "the trainer's set-up") + dump(0, 60, ["compiling"], "the trainer's set-up")
    text += dump(1, 120, wait, "the trainer's set-up") + dump(0, 120, ["compiling more"], "the trainer's set-up")
    generate = ['File "utils.py", line 2700, in _sample', "outputs = self(**model_inputs)"]
    text += dump(0, 60, generate, "report_card began") + dump(0, 120, generate, "report_card began")
    assert not multigpu.stuck(text, 2)


def test_the_table_compares_each_backend_with_its_own_one_gpu_run():
    def r(name, backend, gpus, rate, code=0):
        return {"name": name, "backend": backend, "gpus": gpus, "exit": code, "wall_s": 100.0, "steady_tok_s": rate,
                "peak_gib_per_gpu": [6.7] * gpus, "first_step_s": 60.0, "steps": 24 if rate else None}

    rows = multigpu.table([r("a", "default", 2, None, 124), r("b", "hf", 2, 4000.0), r("c", "hf", 1, 2000.0)])
    assert "| a | default | 2 | failed (exit 124) |" in rows and "| b | hf | 2 | 4,000 | 2.00 |" in rows
