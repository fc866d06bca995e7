"""Time to adapter: `medchat finetune --samples 500` on the 8B shape, from the command to "adapter ... saved".

Runs the same command twice in one MEDCHAT_HOME that starts empty: the first run compiles with cold
caches (medchat keeps inductor's, Triton's and Unsloth's compile caches under MEDCHAT_HOME/cache/compile),
the second finds them warm. Rows: 600 generated medical-o1-shaped rows (medchat/bench/rows.py, median
about 800 tokens); shipped defaults otherwise (60 steps of packed 2 x 2,048-token micro-batches,
accumulation 2, 4 held-out rows for the report card). For each run it records the wall time to the
"adapter ... saved" line and to the exit, the manifest's seconds per phase (plan, load, data, trainer
set-up, first step, the steady steps, save, report card), the steady tokens/s and the part that is not
training: everything but the steady steps and the report card (which is reported on its own line).
Results: RESULT lines, and benchmarks/results/<date>-<gpu>/time_to_adapter.jsonl with --save.

On the GPU kit (checkout root; makes /tmp/l8b, the 8B shape, when it is missing):
  source .gpu/env.sh; python3 benchmarks/time_to_adapter.py --save
  python3 benchmarks/time_to_adapter.py --runs 3 --save          # a third run, warm again
Without CUDA: `--dry-run` prints the command.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness
from multigpu import ensure_model, make_rows


def timed_run(cmd: list[str], env: dict, log: Path, timeout: float) -> dict:
    """Wall seconds to the 'adapter ... saved' line and to the exit; stdout; exit code."""
    t0 = time.perf_counter()
    saved_at = None
    lines: list[str] = []
    with log.open("a") as err:
        err.write(f"\n$ {shlex.join(cmd)}\n")
        err.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:
                lines.append(line)
                if saved_at is None and line.startswith("adapter ") and " saved to " in line:
                    saved_at = time.perf_counter() - t0
            code = proc.wait()
        finally:
            timer.cancel()
    return {"exit": code, "to_saved_s": round(saved_at, 1) if saved_at else None,
            "to_exit_s": round(time.perf_counter() - t0, 1), "summary": "".join(lines).strip()}


def breakdown(manifest: dict, to_saved: float | None) -> dict:
    t = manifest["training"]
    phases = t.get("phases") or {}
    steady = phases.get("training", 0.0)
    report = phases.get("report_card", 0.0)
    out = {"phases": phases, "steady_tok_s": t.get("steady_tokens_per_second"), "steps": t["steps"],
           "tokens": t["tokens"], "first_step_s": t.get("first_step_seconds"), "peak_gib": t.get("peak_gpu_gib"),
           "report_card_s": report, "training_steady_s": steady}
    if to_saved:
        # Everything but the steady steps and the report card: start-up (interpreter, imports, plan, load,
        # data, trainer set-up, first step with its compilation) and saving.
        out["not_training_s"] = round(to_saved - steady - report, 1)
        out["outside_phases_s"] = round(to_saved - sum(phases.values()), 1)  # interpreter start, imports, CLI
    return out


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("--model", default="/tmp/l8b", help="model folder (made with make_model.py 8b when missing)")
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--runs", type=int, default=2, help="runs in the same MEDCHAT_HOME (the first one cold)")
    p.add_argument("--budget", type=float, default=560,
                   help="seconds from the start: skip a further run when the last one would end after this")
    p.add_argument("--home", default="", help="MEDCHAT_HOME (default: a new, empty temporary folder)")
    p.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    p.add_argument("extra", nargs="*", help="more `medchat finetune` flags, after --")
    args = p.parse_args(argv)
    started = time.perf_counter()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="medchat-tta-"))
    rows = home / "rows.jsonl"

    def command(i: int) -> list[str]:
        return [sys.executable, "-m", "medchat", "finetune", "--model", args.model, "--dataset", str(rows),
                "--samples", str(args.samples), "--name", f"tta-{i}", "--offline", *args.extra]

    if args.dry_run:
        print(shlex.join(command(1)))
        return 0
    out_dir = harness.results_dir()
    rec = harness.recorder("time_to_adapter", vars(args))
    if args.save and rec.out is None:
        rec.out = out_dir / "time_to_adapter.jsonl"
    log = (out_dir if args.save else home) / "time_to_adapter.log"  # every run's stderr
    env = {**os.environ, "MEDCHAT_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "UNSLOTH_MEGA_CACHE_DIR", "UNSLOTH_COMPILE_LOCATION"):
        env.pop(var, None)  # medchat's own folders, under the fresh MEDCHAT_HOME: the first run is cold
    home.mkdir(parents=True, exist_ok=True)
    ensure_model(args.model, log)
    data = make_rows(args.model, rows, args.samples + 100)
    last = 0.0
    for i in range(1, args.runs + 1):
        if i > 1 and time.perf_counter() - started + last > args.budget:
            print(f"budget: run {i} skipped", flush=True)
            break
        t = timed_run(command(i), env, log, timeout=max(args.budget - (time.perf_counter() - started), 200))
        last = t["to_exit_s"]
        path = home / "data" / "adapters" / f"tta-{i}" / "medchat.json"
        figures = breakdown(json.loads(path.read_text()), t["to_saved_s"]) if path.is_file() else {}
        rec.emit(run=i, caches="cold" if i == 1 else "warm", **t, **figures, rows=data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
