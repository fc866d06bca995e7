"""A real two-process launch on the CPU (gloo) of the embedded model: `medchat finetune --gpus 2 --device cpu`
runs torchrun, Ctrl+C stops both ranks after the same step with one checkpoint, the run resumes only with
two processes and ends with one adapter whose manifest records the launch (slow: a few real steps)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from medchat.cli.main import main
from medchat.finetune import plan
from medchat.store import adapters

ARGS = ["--device", "cpu", "--model", "smollm2", "--dataset", "sample", "--samples", "8", "--max-seq-length", "256",
        "--batch-size", "1", "--grad-accum", "1", "--eval-rows", "0", "--name", "ddp"]


def medchat(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "medchat", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def wait_for(proc: subprocess.Popen, text: str, seconds: float = 240) -> str:
    """stderr up to the line holding ``text``."""
    seen, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    proc.kill()
    raise AssertionError(f"never saw {text!r}:\n{''.join(seen)}")


@pytest.mark.slow
def test_two_processes_stop_together_resume_with_two_and_store_one_adapter(embedded_model, capsys):
    run = medchat("finetune", "--gpus", "2", "--max-steps", "4", *ARGS)
    before = wait_for(run, "step 1/4")
    run.send_signal(signal.SIGINT)  # Ctrl+C reaches the launcher, which forwards it to both ranks
    out, err = run.communicate(timeout=240)
    err = before + err
    assert run.returncode == 130, err
    assert err.count("stopping after this step") == 1 and err.count("checkpoint saved") == 1  # rank 0 speaks
    assert "--resume ddp --gpus 2" in err and "[rank 1]" not in err and "Traceback" not in err
    run_dir = plan.runs_dir() / "ddp"
    checkpoints = sorted(run_dir.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and json.loads((run_dir / "launch.json").read_text())["world_size"] == 2
    assert {p.name for p in checkpoints[0].glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    marker = json.loads((checkpoints[0] / "medchat-checkpoint.json").read_text())  # rank 0 marked it, once both wrote
    assert {"rng_state_0.pth", "rng_state_1.pth", "trainer_state.json"} <= set(marker["files"])

    with pytest.raises(SystemExit) as refused:  # one process cannot continue what two started
        main(["finetune", "--resume", "ddp"])
    assert refused.value.code == 2 and "started on 2 processes" in capsys.readouterr().err

    resumed = medchat("finetune", "--resume", "ddp", "--gpus", "2")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert out.count("adapter ddp saved") == 1 and "2 processes, 2 rows a step" in out, out
    assert "resuming from checkpoint-" in err and "[rank 1]" not in err
    manifest = json.loads((adapters.store_dir() / "ddp" / "medchat.json").read_text())
    training = manifest["training"]
    assert training["steps"] == 4 and training["gpus"] == 2 and training["effective_batch"] == 2
    assert {"load", "data", "first_step", "training", "save"} <= set(training["phases"])
    assert [a.name for a in adapters.list_adapters() if not a.bundled] == ["ddp"]
    assert not run_dir.exists()
