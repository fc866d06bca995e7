"""Interrupt `medchat finetune` (SIGINT = Ctrl+C, SIGKILL = kill -9) at many moments; check what is left.

A short CPU fine-tune of the embedded model (SmolLM2-135M) runs once uninterrupted (the reference) and then
once per trial, each in its own MEDCHAT_HOME, interrupted by one signal at one moment: while the model
loads, while the trainer is set up, after a step, the instant a checkpoint folder appears (mid-write),
just after a checkpoint is marked complete, while the final checkpoint is written, while the adapter is
saved, and right after it is stored. The harness watches the run's files and stderr every few
milliseconds and sends the signal when the moment comes, and records what the signal actually hit
(e.g. whether a half-written checkpoint was left behind).

After each interruption it counts corrupt adapters in the store (a listed adapter whose config, weights
or manifest do not load; must be 0), then recovers as a user would: `--resume NAME` when an unfinished
run exists, otherwise the same command again; recovery must succeed every time (100 %), without
`--restart`. The recovered adapter's manifest must equal the reference's: steps, tokens and the loss
history (same steps, losses within --loss-tol). For SIGINT trials with a resumable run it also checks
that the `--resume` line was printed. Leftover temporary folders after recovery are counted too.

One RESULT line per trial and one summary; --summary FILE also writes a Markdown table.

Examples:
  python benchmarks/interrupt_finetune.py --jobs 2 --save --summary benchmarks/results/DATE-cpu/interrupt_finetune.md
  python benchmarks/interrupt_finetune.py --signals kill --moments ckpt-appears,final-ckpt   # a subset
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import harness

NAME = "interrupted"
STEPS = 4
# Short medical-o1 rows, so each step is cheap on a CPU (the sample's rows are ~180 tokens).
ROWS = [
    ("What does a raised troponin suggest?", "Troponin is released by damaged heart muscle.", "Myocardial injury, such as a heart attack."),
    ("First-line drug for anaphylaxis?", "Adrenaline reverses airway swelling and low blood pressure.", "Intramuscular adrenaline."),
    ("What causes scurvy?", "Collagen synthesis needs vitamin C.", "Vitamin C deficiency."),
    ("Which nerve is hit in carpal tunnel syndrome?", "The carpal tunnel carries the median nerve.", "The median nerve."),
    ("What is the antidote to paracetamol overdose?", "It replenishes glutathione.", "Acetylcysteine."),
    ("Typical ECG sign of hyperkalaemia?", "High potassium changes repolarisation first.", "Peaked T waves."),
]


@dataclass(frozen=True)
class Moment:
    name: str
    what: str
    ready: Callable[["Watch"], bool]  # true once the moment has come
    delay: float = 0.0  # seconds to wait after it came


class Watch:
    """What one trial's process has done so far, read from its files and stderr."""

    def __init__(self, home: Path, err_file: Path) -> None:
        self.home, self.err_file = home, err_file
        self.run_dir = home / "data" / "runs" / NAME
        self.store = home / "data" / "adapters"

    def err(self) -> str:
        try:
            return self.err_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def checkpoint(self, step: int) -> Path:
        return self.run_dir / f"checkpoint-{step}"

    def marked(self, step: int) -> bool:
        return (self.checkpoint(step) / "medchat-checkpoint.json").is_file()

    def saving(self) -> list[Path]:
        return list(self.store.glob(f".tmp-{NAME}-*")) if self.store.is_dir() else []

    def snapshot(self) -> dict[str, Any]:
        ckpts = sorted(self.run_dir.glob("checkpoint-*")) if self.run_dir.is_dir() else []
        return {"checkpoints": {p.name: (p / "medchat-checkpoint.json").is_file() for p in ckpts},
                "run_state": (self.run_dir / "run.json").is_file(), "saving": len(self.saving()),
                "stored": (self.store / NAME).is_dir()}


MOMENTS = [
    Moment("loading", "while the model loads", lambda w: "medchat: loading" in w.err(), 0.3),
    Moment("setup", "trainer setup (run.json written, no step yet)", lambda w: (w.run_dir / "run.json").is_file()),
    Moment("step-1", "just after step 1", lambda w: "step 1/" in w.err()),
    Moment("ckpt-appears", "the instant checkpoint-1 appears (mid-write)", lambda w: w.checkpoint(1).is_dir()),
    Moment("ckpt-writing", "checkpoint-2 being written (+20 ms)", lambda w: w.checkpoint(2).is_dir(), 0.02),
    Moment("ckpt-done", "just after checkpoint-2 is marked complete", lambda w: w.marked(2)),
    Moment("step-3", "just after step 3 (rotation of old checkpoints)", lambda w: "step 3/" in w.err()),
    Moment("final-ckpt", "the instant the last step's checkpoint appears", lambda w: w.checkpoint(STEPS).is_dir()),
    Moment("final-ckpt+0.2s", "0.2 s after the last step's checkpoint appears", lambda w: w.checkpoint(STEPS).is_dir(), 0.2),
    Moment("adapter-save", "the instant the adapter's temporary folder appears", lambda w: bool(w.saving())),
    Moment("adapter-weights", "the adapter's weights being written", lambda w: any((p / "adapter_model.safetensors").exists() for p in w.saving())),
    Moment("stored", "just after the adapter is stored (run folder being removed)", lambda w: (w.store / NAME).is_dir()),
]
SIGNALS = {"int": signal.SIGINT, "kill": signal.SIGKILL}


def write_rows(folder: Path) -> Path:
    path = folder / "rows.jsonl"
    path.write_text("".join(json.dumps({"Question": q, "Complex_CoT": c, "Response": a}) + "\n" for q, c, a in ROWS))
    return path


def finetune_command(rows: Path) -> list[str]:
    return [sys.executable, "-m", "medchat", "finetune", "--model", "smollm2", "--dataset", str(rows),
            "--samples", str(STEPS), "--eval-rows", "0", "--max-steps", str(STEPS), "--save-steps", "1",
            "--batch-size", "1", "--max-seq-length", "128", "--precision", "fp32", "--logging-steps", "1",
            "--no-merge", "--offline", "--name", NAME]


def new_home(root: Path, label: str, model_dir: Path) -> Path:
    home = Path(tempfile.mkdtemp(dir=root, prefix=f"{label}-"))
    (home / "cache" / "models").mkdir(parents=True)
    (home / "cache" / "models" / "smollm2").symlink_to(model_dir, target_is_directory=True)
    return home


THREADS = {"n": 0}  # --threads: torch's CPU threads per process (0 = its default)


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCHAT_")}
    env.update(MEDCHAT_HOME=str(home), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(harness.ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    if THREADS["n"]:
        env["OMP_NUM_THREADS"] = str(THREADS["n"])  # the same in every process, so losses compare exactly
    return env


def run(cmd: list[str], home: Path, log: Path, timeout: float) -> tuple[int, str]:
    with log.open("w") as err:
        proc = subprocess.run(cmd, env=env_for(home), stdout=subprocess.DEVNULL, stderr=err, timeout=timeout,
                              cwd=harness.ROOT)
    return proc.returncode, log.read_text(errors="replace")


def corrupt_adapters(store: Path) -> list[str]:
    """Listed adapters (what `medchat adapters list` shows) whose files do not load."""
    from safetensors import safe_open

    bad = []
    if not store.is_dir():
        return bad
    for folder in store.iterdir():
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            json.loads((folder / "adapter_config.json").read_text())
            with safe_open(str(folder / "adapter_model.safetensors"), "np") as fh:
                for key in fh.keys():
                    fh.get_tensor(key)
            manifest = json.loads((folder / "medchat.json").read_text())
            assert manifest["training"]["steps"] > 0
        except Exception as exc:  # noqa: BLE001 - any failure means the adapter is unusable
            bad.append(f"{folder.name}: {type(exc).__name__}: {str(exc)[:80]}")
    return bad


def manifest_of(home: Path) -> dict[str, Any] | None:
    path = home / "data" / "adapters" / NAME / "medchat.json"
    return json.loads(path.read_text()) if path.is_file() else None


def compare(got: dict[str, Any] | None, ref: dict[str, Any], tol: float) -> dict[str, Any]:
    if got is None:
        return {"same": False, "why": "no adapter"}
    g, r = got["losses"]["history"], ref["losses"]["history"]
    same_steps = [s for s, _ in g] == [s for s, _ in r]
    diff = max((abs(a[1] - b[1]) for a, b in zip(g, r)), default=0.0) if same_steps else math.inf
    out = {"steps": got["training"]["steps"], "tokens": got["training"]["tokens"], "loss_steps": [s for s, _ in g],
           "max_loss_diff": round(diff, 6)}
    out["same"] = (out["steps"] == ref["training"]["steps"] and out["tokens"] == ref["training"]["tokens"]
                   and same_steps and diff <= tol)
    return out


def trial(sig: str, moment: Moment, rows: Path, root: Path, model_dir: Path, ref: dict[str, Any], args) -> dict[str, Any]:
    home = new_home(root, f"{sig}-{moment.name}", model_dir)
    err_file = home / "interrupted.err"
    watch = Watch(home, err_file)
    record: dict[str, Any] = {"signal": sig, "moment": moment.name, "what": moment.what}
    t0 = time.perf_counter()
    with err_file.open("w") as err:
        proc = subprocess.Popen(finetune_command(rows), env=env_for(home), stdout=subprocess.DEVNULL, stderr=err,
                                cwd=harness.ROOT)
    fired = False
    while proc.poll() is None and time.perf_counter() - t0 < args.timeout:
        if moment.ready(watch):
            if moment.delay:
                time.sleep(moment.delay)
            record["hit"] = watch.snapshot()
            proc.send_signal(SIGNALS[sig])
            fired = True
            break
        time.sleep(args.poll)
    record["fired"] = fired
    record["fired_at_s"] = round(time.perf_counter() - t0, 2)
    try:
        proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        record["hung_after_signal"] = True
    record["exit"] = proc.returncode
    err_text = err_file.read_text(errors="replace")
    record["last_line"] = (err_text.strip().splitlines() or [""])[-1][:200]
    after = watch.snapshot()
    record["left"] = after
    record["half_written_checkpoints"] = sum(1 for done in after["checkpoints"].values() if not done)
    record["leftover_saves"] = after["saving"]
    record["corrupt"] = corrupt_adapters(watch.store)
    resumable = after["run_state"] and not after["stored"]
    if sig == "int" and fired:
        record["resume_line_printed"] = f"--resume {NAME}" in err_text if resumable else None
    # Recover as a user would.
    if after["stored"]:
        record["recovery"] = "none needed (stored)"
        record["recovered"] = True
        if after["run_state"]:  # killed before the run folder was removed: --resume tidies it
            code, text = run(finetune_command(rows)[:4] + ["--resume", NAME], home, home / "recover.err", args.timeout)
            record["recovery"] = "resume tidies the finished run"
            record["recovered"] = code != 0 and "already finished" in text and not watch.run_dir.exists()
    else:
        cmd = finetune_command(rows)[:4] + ["--resume", NAME] if resumable else finetune_command(rows)
        record["recovery"] = "resume" if resumable else "same command again"
        code, text = run(cmd, home, home / "recover.err", args.timeout)
        record["recovered"] = code == 0
        record["recovery_exit"] = code
        if code != 0:
            record["recovery_error"] = (text.strip().splitlines() or [""])[-1][:200]
        record["recovery_notes"] = [line[9:] for line in text.splitlines() if line.startswith("medchat: skipping")
                                    or line.startswith("medchat: resuming") or "starting at step 0" in line]
    record["corrupt_after"] = corrupt_adapters(watch.store)
    record["leftover_saves_after"] = len(watch.saving())
    record["manifest"] = compare(manifest_of(home), ref, args.loss_tol)
    record["seconds"] = round(time.perf_counter() - t0, 1)
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)
    return record


def summary_markdown(records: list[dict[str, Any]], summary: dict[str, Any], ref: dict[str, Any], command: str) -> str:
    lines = ["# Interrupted fine-tunes (CPU, embedded SmolLM2-135M)", "",
             f"Command: `{command}`", "",
             f"Run: `{' '.join(finetune_command(Path('ROWS.jsonl'))[1:])}` (rows: the script's {len(ROWS)} short ones; "
             f"reference: {ref['training']['steps']} steps, {ref['training']['tokens']} tokens, "
             f"losses {[loss for _, loss in ref['losses']['history']]})", "",
             "| figure | value |", "|---|---|"]
    for key, value in summary.items():
        lines.append(f"| {key} | {value} |")
    lines += ["", "| signal | moment | hit (checkpoints: complete?) | exit | half-written ckpts | resume line | recovery | recovered | "
              "corrupt | same manifest (max loss diff) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        hit = r.get("hit") or {}
        ckpts = ", ".join(f"{k[11:]}{'' if v else '*'}" for k, v in hit.get("checkpoints", {}).items()) or "–"
        state = ("stored" if hit.get("stored") else "saving" if hit.get("saving") else ckpts) if r["fired"] else "not fired"
        lines.append(f"| {r['signal']} | {r['moment']} | {state} | {r['exit']} | {r['half_written_checkpoints']} | "
                     f"{r.get('resume_line_printed', '–')} | {r['recovery']} | {r['recovered']} | "
                     f"{len(r['corrupt']) + len(r['corrupt_after'])} | {r['manifest']['same']} "
                     f"({r['manifest'].get('max_loss_diff', '–')}) |")
    lines += ["", "`*` = a checkpoint folder without its completeness marker at the moment of the signal."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("--signals", default="int,kill", help="comma-separated: int (SIGINT), kill (SIGKILL)")
    p.add_argument("--moments", default=",".join(m.name for m in MOMENTS),
                   help="comma-separated moments (default: all): " + ", ".join(m.name for m in MOMENTS))
    p.add_argument("--jobs", type=int, default=1, help="trials run side by side")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per training process (0 = torch's default)")
    p.add_argument("--poll", type=float, default=0.005, help="seconds between looks at the run's files")
    p.add_argument("--timeout", type=float, default=1800, help="seconds any one process may take")
    p.add_argument("--loss-tol", type=float, default=1e-3, help="largest loss difference still 'the same'")
    p.add_argument("--model-dir", help="the embedded model's folder (default: `medchat models pull` into a temp home)")
    p.add_argument("--keep", action="store_true", help="keep each trial's MEDCHAT_HOME (printed in its record)")
    p.add_argument("--summary", metavar="FILE", help="also write a Markdown table of every trial")
    args = p.parse_args(argv)
    THREADS["n"] = args.threads
    moments = [m for m in MOMENTS if m.name in args.moments.split(",")]
    signals = [s for s in args.signals.split(",") if s in SIGNALS]
    rec = harness.recorder("interrupt_finetune", args)
    root = Path(tempfile.mkdtemp(prefix="medchat-interrupt-"))
    rows = write_rows(root)
    model_dir = Path(args.model_dir) if args.model_dir else Path(subprocess.run(
        [sys.executable, "-c", "from medchat.models.catalog import pull; print(pull())"], env=env_for(root / "pull"),
        capture_output=True, text=True, check=True, cwd=harness.ROOT).stdout.strip().splitlines()[-1])
    ref_home = new_home(root, "reference", model_dir)
    code, text = run(finetune_command(rows), ref_home, ref_home / "reference.err", args.timeout)
    if code != 0:
        print(text[-3000:], file=sys.stderr)
        return 1
    ref = manifest_of(ref_home)
    lock = threading.Lock()
    records: list[dict[str, Any]] = []

    def one(job: tuple[str, Moment]) -> None:
        record = trial(job[0], job[1], rows, root, model_dir, ref, args)
        with lock:
            records.append(record)
            rec.emit(kind="trial", **record)

    jobs = [(s, m) for m in moments for s in signals]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, jobs))
    order = {(s, m.name): i for i, (s, m) in enumerate(jobs)}
    records.sort(key=lambda r: order[(r["signal"], r["moment"])])
    sigint = [r for r in records if r["signal"] == "int" and r.get("resume_line_printed") is not None]
    summary = {
        "trials": len(records),
        "signal fired": sum(r["fired"] for r in records),
        "left a half-written checkpoint": sum(r["half_written_checkpoints"] > 0 for r in records),
        "corrupt adapters": sum(len(r["corrupt"]) + len(r["corrupt_after"]) for r in records),
        "recovered (resumed, restarted or already stored)": f"{sum(r['recovered'] for r in records)} of {len(records)}",
        "manifest equal to the reference (steps, tokens, loss history)": f"{sum(r['manifest']['same'] for r in records)} of {len(records)}",
        "SIGINT with a resumable run that printed the --resume line": f"{sum(r['resume_line_printed'] for r in sigint)} of {len(sigint)}",
        "leftover temporary saves after recovery": sum(r["leftover_saves_after"] for r in records),
        "largest loss difference": max((r["manifest"].get("max_loss_diff", 0) for r in records), default=0),
    }
    rec.emit(kind="summary", reference={"steps": ref["training"]["steps"], "tokens": ref["training"]["tokens"],
                                        "losses": ref["losses"]["history"]}, **summary)
    if args.summary:
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary).write_text(summary_markdown(records, summary, ref, rec.command))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    ok = (summary["corrupt adapters"] == 0 and all(r["recovered"] for r in records)
          and all(r["manifest"]["same"] for r in records))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
