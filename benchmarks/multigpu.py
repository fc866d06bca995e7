"""`medchat finetune` on 1 GPU and on several (`--gpus N`, torchrun, DDP), alternated in one call.

The same generated medical-o1-shaped rows (medchat/bench/rows.py), seq 2,048 and shipped defaults
(packed batches of 2 x 2,048 tokens, accumulation 2, 8-bit AdamW, LoRA r 16 on every linear layer) for
every run; only the number of GPUs changes, so a 2-GPU step carries twice the rows of a 1-GPU step.
For each run: the steady tokens/s of the whole launch (median of the steps after the first three, from
the adapter's manifest), the peak memory per GPU, start-up and wall time. Runs go 1, 2[, 4], 1, 2[, 4]
... (`--rounds`), starting none that would end after `--budget` seconds. The last multi-GPU run also
holds out 4 rows and gives the report card (unless --no-report-card: 4 of 1,500 rows fewer to train
on), and its adapter then answers a question through `medchat ask` (it loads like any adapter).
Writes every result as it comes to
benchmarks/results/<date>-<gpu>/multigpu.jsonl (and a summary table, multigpu.md) and prints
`RESULT {json}` lines.

On the GPU kit (checkout root; makes /tmp/l8b, the 8B shape, when it is missing):
  source .gpu/env.sh; python3 benchmarks/multigpu.py --save
  python3 benchmarks/multigpu.py --gpus 1 2 4 --rounds 1 --save          # a 4-GPU machine, one round
Without CUDA: `--dry-run` prints the commands it would run; `--cpu` runs them as CPU processes (gloo),
to try the script with a tiny model (`make_model.py /tmp/tiny tiny --fit-vocab`).
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

QUESTION = "A 64-year-old woman has exertional dyspnoea, haemoglobin 8.1 g/dL and low ferritin. What next?"


def gpu_count() -> int:
    """GPUs from nvidia-smi (this process never touches CUDA: rank 0 of each run gets a clean GPU 0)."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def ensure_model(folder: str, log: Path) -> None:
    if (Path(folder) / "config.json").is_file():
        return
    print(f"making {folder} (8B shape)", flush=True)
    with log.open("a") as fh:
        subprocess.run([sys.executable, str(harness.BENCH_DIR / "make_model.py"), folder, "8b", "--fit-vocab"],
                       check=True, stdout=fh, stderr=subprocess.STDOUT)


def make_rows(model: str, path: Path, n: int) -> dict:
    from transformers import AutoTokenizer

    from medchat.bench.rows import make_rows as write

    lengths = write(path, AutoTokenizer.from_pretrained(model), n=n)
    return {"rows": n, "median_tokens": statistics.median(lengths), "max_tokens": max(lengths)}


def finetune_command(model: str, rows: Path, gpus: int, name: str, steps: int, extra: list[str],
                     report_card: bool = False) -> list[str]:
    held_out = ["--eval-rows", "4", "--eval-max-new-tokens", "64"] if report_card else ["--eval-rows", "0"]
    cmd = [sys.executable, "-m", "medchat", "finetune", "--model", model, "--dataset", str(rows),
           "--max-steps", str(steps), *held_out, "--save-steps", "0", "--name", name, "--offline", *extra]
    return cmd + (["--gpus", str(gpus)] if gpus > 1 else [])


def run(cmd: list[str], env: dict, log: Path, timeout: float) -> tuple[int, float, str]:
    """(exit code, wall seconds, stdout); stderr goes to ``log``."""
    t0 = time.perf_counter()
    with log.open("a") as err:
        err.write(f"\n$ {shlex.join(cmd)}\n")
        err.flush()
        try:
            done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True, timeout=timeout)
            code, out = done.returncode, done.stdout
        except subprocess.TimeoutExpired as exc:
            code, out = 124, (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    return code, time.perf_counter() - t0, out


def manifest(home: Path, name: str) -> dict | None:
    path = home / "data" / "adapters" / name / "medchat.json"
    return json.loads(path.read_text()) if path.is_file() else None


def figures(m: dict) -> dict:
    t = m["training"]
    per_gpu = t.get("peak_gpu_gib_per_rank") or [t.get("peak_gpu_gib")]
    return {"steady_tok_s": t.get("steady_tokens_per_second"), "tok_s_whole_run": t.get("tokens_per_second"),
            "steps": t["steps"], "tokens": t["tokens"], "effective_batch": t.get("effective_batch"),
            "peak_gib_per_gpu": per_gpu, "first_step_s": t.get("first_step_seconds"),
            "phases": t.get("phases"), "duration_s": m.get("duration_seconds"),
            "report_card": m.get("eval")}


def table(results: list[dict]) -> str:
    base = statistics.median([r["steady_tok_s"] for r in results if r["gpus"] == 1 and r.get("steady_tok_s")] or [0])
    lines = ["| run | GPUs | steady tok/s | × 1 GPU | peak GiB per GPU | first step s | wall s |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        if r.get("steady_tok_s") is None:
            lines.append(f"| {r['name']} | {r['gpus']} | failed (exit {r['exit']}) | | | | {r['wall_s']:.0f} |")
            continue
        scale = f"{r['steady_tok_s'] / base:.2f}" if base else "–"
        lines.append(f"| {r['name']} | {r['gpus']} | {r['steady_tok_s']:,.0f} | {scale} | "
                     f"{', '.join(str(g) for g in r['peak_gib_per_gpu'])} | {r['first_step_s']} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("--model", default="/tmp/l8b", help="model folder (made with make_model.py 8b when missing)")
    p.add_argument("--gpus", type=int, nargs="+", default=None,
                   help="GPU counts to alternate (default: 1 2, and 4 when the machine has 4)")
    p.add_argument("--rounds", type=int, default=2, help="how many times to go through the GPU counts")
    p.add_argument("--steps", type=int, default=24, help="optimizer steps per run (the steady rate leaves out 3)")
    p.add_argument("--rows", type=int, default=1500, help="generated medical-o1-shaped rows (the same for every run)")
    p.add_argument("--budget", type=float, default=430,
                   help="seconds from the start: begin no run that would end after this (then `ask`, ~1 min)")
    p.add_argument("--no-report-card", action="store_true", help="the last multi-GPU run holds out no rows either")
    p.add_argument("--home", default="", help="MEDCHAT_HOME for the runs (default: a new temporary folder)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--cpu", action="store_true", help="processes on the CPU instead of GPUs (a trial run)")
    p.add_argument("extra", nargs="*", help="more `medchat finetune` flags, after --")
    args = p.parse_args(argv)
    if args.cpu:
        args.extra = ["--device", "cpu", *args.extra]
    started = time.perf_counter()
    found = gpu_count() if not args.cpu else max(args.gpus or [2])
    counts = args.gpus or ([1, 2, 4] if found >= 4 else [1, 2])
    out_dir = harness.results_dir()
    rec = harness.recorder("multigpu", {**vars(args), "gpus_found": found, "counts": counts})
    if args.save and rec.out is None:
        rec.out = out_dir / "multigpu.jsonl"
    home = Path(args.home or tempfile.mkdtemp(prefix="medchat-multigpu-"))
    env = {**os.environ, "MEDCHAT_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    log = (out_dir if args.save else home) / "multigpu.log"  # every run's stderr
    rows = home / "rows.jsonl"
    order = [g for _ in range(args.rounds) for g in counts]
    last_multi = max((i for i, g in enumerate(order) if g > 1), default=-1) if not args.no_report_card else -1
    if args.dry_run:
        for i, g in enumerate(order):
            print(shlex.join(finetune_command(args.model, rows, g, f"mg{i}-{g}gpu", args.steps, args.extra,
                                              report_card=i == last_multi)))
        return 0
    if max(counts) > found:
        print(f"this machine has {found} GPUs; asked for {max(counts)}", file=sys.stderr)
        return 2
    home.mkdir(parents=True, exist_ok=True)
    ensure_model(args.model, log)
    data = make_rows(args.model, rows, args.rows)
    print(f"rows: {data}; runs: {order}; results -> {out_dir}", flush=True)
    results: list[dict] = []
    spent: dict[int, float] = {}
    for i, g in enumerate(order):
        report_card = i == last_multi
        guess = spent.get(g, max(spent.values(), default=150.0)) + (60 if report_card else 0)
        if time.perf_counter() - started + guess > args.budget:
            print(f"budget: skipping run {i + 1} ({g} GPUs)", flush=True)
            continue
        name = f"mg{i}-{g}gpu"
        code, wall, out = run(finetune_command(args.model, rows, g, name, args.steps, args.extra, report_card),
                              env, log, timeout=max(args.budget - (time.perf_counter() - started), 120))
        spent[g] = wall - (60 if report_card else 0)
        m = manifest(home, name)
        result = {"name": name, "gpus": g, "round": i // len(counts) + 1, "exit": code, "wall_s": round(wall, 1),
                  "report_card_run": report_card, **(figures(m) if m else {}), "rows": data,
                  "summary": out.strip()}
        results.append(result)
        rec.emit(**result)
    multi = [r for r in results if r["gpus"] > 1 and r.get("steady_tok_s")]
    if multi:
        name = multi[-1]["name"]
        code, wall, out = run([sys.executable, "-m", "medchat", "ask", QUESTION, "--model", args.model, "--adapter",
                               name, "--max-new-tokens", "64", "--json", "--offline",
                               *(["--device", "cpu"] if args.cpu else [])], env, log, timeout=240)
        rec.emit(check="ask", adapter=name, exit=code, wall_s=round(wall, 1), reply=out.strip()[-2000:])
    text = table(results)
    print(text)
    if args.save:
        with (out_dir / "multigpu.md").open("a") as fh:
            fh.write(f"\n{harness.command_line()} ({harness.today()}, {found} GPUs, commit {harness.commit()})\n\n"
                     f"{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
