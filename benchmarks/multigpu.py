"""`medchat finetune` on 1 GPU and on several (`--gpus N`, torchrun, DDP), alternated in one call.

The same generated medical-o1-shaped rows (medchat/bench/rows.py), seq 2,048 and shipped defaults
(packed batches of 2 x 2,048 tokens, accumulation 2, 8-bit AdamW, LoRA r 16 on every linear layer) for
every run; only the number of GPUs changes, so a 2-GPU step carries twice the rows of a 1-GPU step.
For each run: the steady tokens/s of the whole launch (median of the steps after the first three, from
the adapter's manifest), the peak memory per GPU, start-up and wall time. Runs go 1, 2[, 4], 1, 2[, 4]
... (`--rounds`), starting none that would end after `--budget` seconds. The first multi-GPU run also
holds out 4 rows and gives the report card (unless --no-report-card: 4 of 1,500 rows fewer to train
on), and the last multi-GPU adapter then answers a question through `medchat ask` (it loads like any
adapter).
Writes every result as it comes to
benchmarks/results/<date>-<gpu>/multigpu.jsonl (and a summary table, multigpu.md) and prints
`RESULT {json}` lines.

On the GPU kit (checkout root; makes /tmp/l8b, the 8B shape, when it is missing):
  source .gpu/env.sh; python3 benchmarks/multigpu.py --save
  python3 benchmarks/multigpu.py --gpus 1 2 4 --rounds 1 --save          # a 4-GPU machine, one round
Without CUDA: `--dry-run` prints the commands it would run; `--cpu` runs them as CPU processes (gloo),
to try the script with a tiny model (`make_model.py /tmp/tiny tiny --fit-vocab`).

A launch that hangs says where: `--hang-seconds T` has every process print each thread's stack (lines
prefixed `[rank N]`) once nothing moved for T seconds (medchat/finetune/hangwatch.py), `--collective-timeout`
turns a rank waiting at a collective into an error after that long (NCCL's flight recorder then dumps
each rank's last collectives next to the logs, summarised into the result), and a run past
`--attempt-timeout` gets SIGUSR1 (stacks again, from C) before its whole process group is stopped, so
no orphaned rank keeps a GPU busy for the next run. While a multi-GPU run lasts, GPU use, memory and
load are logged every 20 s. Each run's stderr goes to its own `<name>.log` (`--log-dir`).
`--fallback-backend hf`: when no multi-GPU run of the default backend trained, the same GPU counts run
again through transformers + peft + bitsandbytes (`--backend hf`), `--fallback-steps` steps each.

The one-call check on 2 GPUs (results, logs and stacks under $OUT; 2 GPUs first, cold, with the
report card; then 1 GPU; a multi-GPU run that fails goes straight to the fallback), one command line:
  source .gpu/env.sh; python3 benchmarks/multigpu.py --gpus 2 1 --rounds 2 --budget 470 --ask-seconds 70
      --attempt-timeout 320 --hang-seconds 60 --collective-timeout 100 --fallback-backend hf
      --log-dir $OUT --out $OUT/multigpu.jsonl
(a rank waiting 100 s at an NCCL collective fails with the flight recorder's dump; a launch whose every
rank shows the same stack at 60 and 120 s of no progress is stopped: either way the time left goes to
the fallback)
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
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


def ensure_model(folder: str, log: Path, shape: str = "8b") -> None:
    if (Path(folder) / "config.json").is_file():
        return
    print(f"making {folder} ({shape} shape)", flush=True)
    t0 = time.perf_counter()
    with log.open("a") as fh:
        subprocess.run([sys.executable, str(harness.BENCH_DIR / "make_model.py"), folder, shape, "--fit-vocab"],
                       check=True, stdout=fh, stderr=subprocess.STDOUT)
    print(f"made {folder} in {time.perf_counter() - t0:.0f} s", flush=True)


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


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (the ranks torchrun started in the launcher)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.split("/")[2]))
    return found


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def process_groups(pid: int) -> set[int]:
    """The process groups of ``pid`` and of everything below it: torchrun starts each rank in a session
    of its own (and the rank's compile workers with it), so stopping the launcher's group alone would
    leave the ranks running, and holding their GPUs, after the launcher is gone."""
    groups = {pid}
    for child in descendants(pid):
        try:
            groups.add(os.getpgid(child))
        except OSError:
            pass
    return groups


def ours(pgid: int) -> bool:
    """Whether ``pgid``'s leader is still a process of a launch (not a process id used again since)."""
    try:
        cmd = Path(f"/proc/{pgid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"medchat" in cmd or b"torch" in cmd


def signal_groups(groups: set[int], sig: int) -> None:
    for pgid in groups:
        if ours(pgid):
            try:
                os.killpg(pgid, sig)
            except OSError:
                pass


def stop_group(proc: subprocess.Popen, err, stacks_first: bool, groups: set[int]) -> None:
    """Stop a launch that ran past its time, and every process it started (ranks, compile workers):
    SIGUSR1 to the ranks first when they dump their stacks on it (hangwatch), then SIGTERM, then SIGKILL."""
    groups |= process_groups(proc.pid)
    if stacks_first:
        ranks = children(proc.pid)
        err.write(f"\n[multigpu.py] stopping the launch: SIGUSR1 (stacks) to the ranks {ranks}\n")
        err.flush()
        for pid in ranks:  # one at a time: the dumps share the log
            err.write(f"[multigpu.py] stacks of pid {pid}:\n")
            err.flush()
            try:
                os.kill(pid, signal.SIGUSR1)
            except OSError:
                pass
            time.sleep(3)
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        signal_groups(groups, sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if not any(ours(g) for g in groups if g != proc.pid):
            return


def monitor(err, stop: threading.Event, every: float = 20.0) -> None:
    """GPU use and memory, host memory and load, every ``every`` seconds into the run's log: a rank
    spinning in NCCL shows a busy GPU; a compile, busy CPUs; a deadlock, neither."""
    t0 = time.perf_counter()
    while not stop.wait(every):
        try:
            gpus = subprocess.run(["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used",
                                   "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                  timeout=15).stdout.strip().replace("\n", "; ")
        except (OSError, subprocess.TimeoutExpired):
            gpus = "?"
        try:
            mem = {line.split(":")[0]: line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith(("MemTotal", "MemAvailable"))}
            load = Path("/proc/loadavg").read_text().split()[:3]
        except OSError:
            mem, load = {}, []
        err.write(f"[multigpu.py] +{time.perf_counter() - t0:.0f} s: GPU index, use %, MiB: {gpus} | "
                  f"host MemTotal/MemAvailable kB {mem.get('MemTotal')}/{mem.get('MemAvailable')} | load {' '.join(load)}\n")
        err.flush()


def stuck(text: str, ranks: int) -> bool:
    """Whether every rank has printed (hangwatch) the same main-thread stack twice in a row, each stalled
    after the same progress: nothing moves, so waiting longer tells nothing more. A rank that compiles or
    computes shows a changing stack; rank 0 alone after the others left (its report card) is not all ranks."""
    import re

    dumps: dict[int, list[str]] = {}
    current, block, in_main = None, [], False
    for line in text.splitlines() + ["[rank -1] medchat: no progress for 0 s (last: -)"]:
        head = re.match(r"\[rank (-?\d+)\] medchat: no progress for \d+ s \(last: (.*?)\)", line)
        if head:
            if current is not None:
                dumps.setdefault(current, []).append("\n".join(block))
            current, block, in_main = int(head.group(1)), [f"after {head.group(2)}"], False
            continue
        if current is None or not line.startswith(f"[rank {current}] "):
            continue
        body = line[len(f"[rank {current}] "):]
        if body.startswith("thread "):
            in_main = body.startswith("thread MainThread")
        elif in_main:
            block.append(body)
    if not all(len(dumps.get(r, [])) >= 2 and dumps[r][-1] == dumps[r][-2] for r in range(ranks)):
        return False
    return len({dumps[r][-1].split("\n", 1)[0] for r in range(ranks)}) == 1  # stalled after the same step


def run(cmd: list[str], env: dict, log: Path, timeout: float, *, watch: bool = False,
        stacks_first: bool = False, ranks: int = 0) -> tuple[int, float, str]:
    """(exit code, wall seconds, stdout); stderr goes to ``log``. Past ``timeout`` the whole process
    group is stopped (exit code 124), and so is a launch of ``ranks`` ranks whose every rank printed the
    same stack twice (:func:`stuck`, exit code 125); ``watch`` logs GPU and host use meanwhile."""
    t0 = time.perf_counter()
    with log.open("a") as err:
        err.write(f"\n$ {shlex.join(cmd)}\n")
        err.flush()
        start = log.stat().st_size
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        stop = threading.Event()
        if watch:
            threading.Thread(target=monitor, args=(err, stop), daemon=True).start()
        chunks: list[str] = []
        reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read() if proc.stdout else ""), daemon=True)
        reader.start()
        code = None
        groups: set[int] = set()
        try:
            while code is None:
                try:
                    code = proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    groups |= process_groups(proc.pid)
                    if time.perf_counter() - t0 > timeout:
                        stop_group(proc, err, stacks_first, groups)
                        code = 124
                    elif ranks > 1:
                        with log.open(errors="replace") as fh:
                            fh.seek(start)
                            if stuck(fh.read(), ranks):
                                err.write("\n[multigpu.py] every rank printed the same stack twice: stopping the launch\n")
                                stop_group(proc, err, stacks_first, groups)
                                code = 125
        finally:
            stop.set()
            signal_groups(groups | {proc.pid}, signal.SIGKILL)  # whatever outlived the launcher
            reader.join(timeout=10)
    return code, time.perf_counter() - t0, "".join(chunks)


def debug_env(args, log_dir: Path, name: str) -> dict[str, str]:
    """What makes a hang say where it is (only the settings asked for)."""
    env = {}
    if args.hang_seconds:
        env["MEDCHAT_HANG_SECONDS"] = str(args.hang_seconds)
    if args.collective_timeout:
        env.update(MEDCHAT_DIST_TIMEOUT=str(args.collective_timeout), TORCH_NCCL_ASYNC_ERROR_HANDLING="1",
                   TORCH_NCCL_DESYNC_DEBUG="1",  # on a timeout: which rank is behind, at which collective
                   TORCH_NCCL_DUMP_ON_TIMEOUT="1", TORCH_FR_BUFFER_SIZE="2000", TORCH_NCCL_TRACE_BUFFER_SIZE="2000",
                   TORCH_FR_DUMP_TEMP_FILE=str(log_dir / f"{name}-nccl-trace-rank-"),
                   TORCH_NCCL_DEBUG_INFO_TEMP_FILE=str(log_dir / f"{name}-nccl-trace-rank-"))
    if args.hang_seconds or args.collective_timeout:
        env.setdefault("NCCL_DEBUG", "WARN")
    if args.ddp_detail:
        env["TORCH_DISTRIBUTED_DEBUG"] = "DETAIL"
    return env


def flight_records(log_dir: Path, name: str, last: int = 8) -> dict[str, list]:
    """The last collectives each rank's NCCL flight recorder dumped on a timeout (empty when none)."""
    out: dict[str, list] = {}
    for path in sorted(log_dir.glob(f"{name}-nccl-trace-rank-*")):
        try:
            with path.open("rb") as fh:
                dump = pickle.load(fh)
            entries = dump.get("entries", []) if isinstance(dump, dict) else []
            out[path.name.rsplit("-", 1)[-1]] = [
                {k: e.get(k) for k in ("pg_id", "collective_seq_id", "p2p_seq_id", "profiling_name", "state",
                                       "input_sizes", "time_discovered_completed_ns") if k in e}
                for e in entries[-last:]]
        except Exception as exc:  # noqa: BLE001 - a dump written while the process died
            out[path.name] = [f"unreadable: {exc!r}"]
    return out


def log_tail(log: Path, lines: int = 60) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


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
    """One row per run; × 1 GPU against the median 1-GPU run of the same backend."""
    def base(backend: str) -> float:
        return statistics.median([r["steady_tok_s"] for r in results if r["gpus"] == 1 and r.get("steady_tok_s")
                                  and r.get("backend", "default") == backend] or [0])

    lines = ["| run | backend | GPUs | steady tok/s | × 1 GPU | peak GiB per GPU | first step s | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        backend = r.get("backend", "default")
        if r.get("steady_tok_s") is None:
            what = f"failed (exit {r['exit']})" if r["exit"] or r.get("steps") is None else "trained, no steady rate"
            lines.append(f"| {r['name']} | {backend} | {r['gpus']} | {what} | | | | {r['wall_s']:.0f} |")
            continue
        one = base(backend)
        scale = f"{r['steady_tok_s'] / one:.2f}" if one else "–"
        lines.append(f"| {r['name']} | {backend} | {r['gpus']} | {r['steady_tok_s']:,.0f} | {scale} | "
                     f"{', '.join(str(g) for g in r['peak_gib_per_gpu'])} | {r['first_step_s']} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("--model", default="/tmp/l8b", help="model folder (made with make_model.py when missing)")
    p.add_argument("--shape", default="8b", choices=sorted(harness.SHAPES), help="the shape to make it in")
    p.add_argument("--gpus", type=int, nargs="+", default=None,
                   help="GPU counts to alternate (default: 1 2, and 4 when the machine has 4)")
    p.add_argument("--rounds", type=int, default=2, help="how many times to go through the GPU counts")
    p.add_argument("--steps", type=int, default=24, help="optimizer steps per run (the steady rate leaves out 3)")
    p.add_argument("--rows", type=int, default=1500, help="generated medical-o1-shaped rows (the same for every run)")
    p.add_argument("--budget", type=float, default=430,
                   help="seconds from the start: begin no run that would end after this (then `ask`, ~1 min)")
    p.add_argument("--ask-seconds", type=float, default=90,
                   help="`medchat ask` with the last multi-GPU adapter must end this long after the budget")
    p.add_argument("--attempt-timeout", type=float, default=0,
                   help="stop a run (its whole process group) after this many seconds (default: what the budget leaves)")
    p.add_argument("--hang-seconds", type=float, default=0,
                   help="MEDCHAT_HANG_SECONDS for the runs: stacks of every thread of every rank after a stall this long")
    p.add_argument("--collective-timeout", type=float, default=0,
                   help="MEDCHAT_DIST_TIMEOUT for the runs, with NCCL's flight recorder dumping on a timeout")
    p.add_argument("--ddp-detail", action="store_true",
                   help="TORCH_DISTRIBUTED_DEBUG=DETAIL (checks that every rank calls the same collective; slower)")
    p.add_argument("--fallback-backend", default="", choices=["", "hf", "unsloth"],
                   help="when no multi-GPU run trained, run the GPU counts again with this --backend")
    p.add_argument("--fallback-steps", type=int, default=10, help="optimizer steps per fallback run")
    p.add_argument("--no-report-card", action="store_true", help="the last multi-GPU run holds out no rows either")
    p.add_argument("--home", default="", help="MEDCHAT_HOME for the runs (default: a new temporary folder)")
    p.add_argument("--log-dir", default="", help="each run's stderr as <name>.log here (default: beside the results)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--cpu", action="store_true", help="processes on the CPU instead of GPUs (a trial run)")
    p.add_argument("extra", nargs="*", help="more `medchat finetune` flags, after --")
    args = p.parse_args(argv)
    if args.cpu:
        args.extra = ["--device", "cpu", *args.extra]
    started = time.perf_counter()
    found = gpu_count() if not args.cpu else max(args.gpus or [2])
    counts = args.gpus or ([1, 2, 4] if found >= 4 else [1, 2])
    rec = harness.recorder("multigpu", {**vars(args), "gpus_found": found, "counts": counts})
    if args.save and rec.out is None:
        rec.out = harness.results_dir() / "multigpu.jsonl"
    out_dir = rec.out.parent if rec.out is not None else harness.results_dir()
    home = Path(args.home or tempfile.mkdtemp(prefix="medchat-multigpu-"))
    log_dir = Path(args.log_dir) if args.log_dir else (out_dir if args.save or args.out else home)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MEDCHAT_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    log = log_dir / "multigpu.log"  # making the model, asking
    rows = home / "rows.jsonl"
    order = [g for _ in range(args.rounds) for g in counts]
    card_run = min((i for i, g in enumerate(order) if g > 1), default=-1) if not args.no_report_card else -1
    if args.dry_run:
        for i, g in enumerate(order):
            print(shlex.join(finetune_command(args.model, rows, g, f"mg{i}-{g}gpu", args.steps, args.extra,
                                              report_card=i == card_run)))
        return 0
    if max(counts) > found:
        print(f"this machine has {found} GPUs; asked for {max(counts)}", file=sys.stderr)
        return 2
    home.mkdir(parents=True, exist_ok=True)
    ensure_model(args.model, log, args.shape)
    data = make_rows(args.model, rows, args.rows)
    print(f"rows: {data}; runs: {order}; results -> {rec.out or '(stdout)'}; logs -> {log_dir}", flush=True)
    results: list[dict] = []
    spent: dict[tuple[str, int], float] = {}

    def attempt(i: int, g: int, backend: str, steps: int, report_card: bool, extra: list[str]) -> dict | None:
        same_backend = [t for (b, _), t in spent.items() if b == backend]
        guess = spent.get((backend, g), max(same_backend, default=150.0)) + (60 if report_card else 0)
        left = args.budget - (time.perf_counter() - started)
        if guess > left:
            print(f"budget: skipping run {i + 1} ({g} GPUs, {backend or 'default backend'}; "
                  f"{left:.0f} s left, ~{guess:.0f} s needed)", flush=True)
            return None
        name = f"mg{i}-{g}gpu" + (f"-{backend}" if backend else "")
        run_log = log_dir / f"{name}.log"
        limit = min(args.attempt_timeout or left, left) if g > 1 else left
        print(f"run {name}: up to {limit:.0f} s", flush=True)
        code, wall, out = run(finetune_command(args.model, rows, g, name, steps, extra, report_card),
                              {**env, **debug_env(args, log_dir, name)}, run_log, timeout=max(limit, 60),
                              watch=g > 1, stacks_first=bool(args.hang_seconds), ranks=g if args.hang_seconds else 0)
        spent[(backend, g)] = wall - (60 if report_card else 0)
        m = manifest(home, name)
        result = {"name": name, "gpus": g, "backend": backend or "default", "round": i // len(counts) + 1,
                  "exit": code, "wall_s": round(wall, 1), "report_card_run": report_card,
                  **(figures(m) if m else {}), "rows": data, "summary": out.strip()[-3000:]}
        if code != 0:
            text = run_log.read_text(errors="replace") if run_log.is_file() else ""
            result["stall_reports"] = text.count("medchat: no progress for")
            result["log_tail"] = log_tail(run_log)
            result["flight_records"] = flight_records(log_dir, name)
        results.append(result)
        rec.emit(**result)
        print(f"run {name}: exit {code} after {wall:.0f} s" + (f"; see {run_log}" if code else ""), flush=True)
        return result

    for i, g in enumerate(order):
        result = attempt(i, g, "", args.steps, i == card_run, args.extra)
        if result and g > 1 and result["exit"] != 0 and args.fallback_backend:
            break  # the time left goes to the fallback
    def trained(r: dict) -> bool:
        return r["exit"] == 0 and r.get("steps") is not None  # its adapter was stored

    if args.fallback_backend and not any(trained(r) for r in results if r["gpus"] > 1):
        print(f"no multi-GPU run trained: the same counts with --backend {args.fallback_backend}", flush=True)
        for j, g in enumerate(sorted(set(counts), reverse=True)):  # the multi-GPU run first
            attempt(len(order) + j, g, args.fallback_backend, args.fallback_steps, False,
                    [*args.extra, "--backend", args.fallback_backend])
    multi = [r for r in results if r["gpus"] > 1 and trained(r)]
    ask_left = args.budget + args.ask_seconds - (time.perf_counter() - started)
    if multi and ask_left > 45:
        name = multi[-1]["name"]
        code, wall, out = run([sys.executable, "-m", "medchat", "ask", QUESTION, "--model", args.model, "--adapter",
                               name, "--max-new-tokens", "64", "--json", "--offline",
                               *(["--device", "cpu"] if args.cpu else [])], env, log, timeout=ask_left)
        rec.emit(check="ask", adapter=name, exit=code, wall_s=round(wall, 1), reply=out.strip()[-2000:])
    text = table(results)
    print(text)
    if args.save or args.out:
        with (out_dir / "multigpu.md").open("a") as fh:
            fh.write(f"\n{harness.command_line()} ({harness.today()}, {found} GPUs, commit {harness.commit()})\n\n"
                     f"{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
