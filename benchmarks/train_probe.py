"""Where a training step's time goes on CUDA: `medchat finetune` and the raw Unsloth loop (a probe, not a test).

For each step it records the wall time (synchronised) and the tokens it carried; for two steps after
warm-up it runs torch.profiler and sums the GPU kernel time, so "GPU busy" = kernel time / wall time
tells whether a step waits on the GPU (near 100 %) or on Python launching work (well below).

usage:
  python benchmarks/train_probe.py raw MODEL_DIR [--seq 2048] [--batch 2] [--steps 10]
  python benchmarks/train_probe.py medchat MODEL_DIR [--steps 16] [-- extra `medchat finetune` flags]

`medchat` mode generates medical-o1-shaped rows (as `medchat bench --train` does) and runs the real
`medchat finetune` in this process; prints one `RESULT {json}` line per run. Environment:
PROBE_PROFILE=0 profiles no step (throughput figures to report come from unprofiled runs),
PROBE_KERNELS=FILE writes the profiled steps' GPU kernels by time, PROBE_SAMPLING=STRATEGY sets the
trainer's train_sampling_strategy. Without CUDA it is a dry run (wall times only).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness

# 0-based steps profiled, after compilation and warm-up; PROBE_PROFILE=0 profiles none (the profiler
# slows the steps after it too, so throughput figures to report come from unprofiled runs).
PROFILED = (6, 7) if os.environ.get("PROBE_PROFILE", "1") != "0" else (-1, -1)


def gpu_kernel_seconds(prof) -> float:
    """GPU kernel time in the profile (the table's total: summing events counts kernels twice)."""
    import re

    found = re.search(r"Self CUDA time total: ([0-9.]+)(us|ms|s)", prof.key_averages().table(row_limit=1))
    return float(found[1]) / {"us": 1e6, "ms": 1e3, "s": 1}[found[2]] if found else 0.0


class StepTimer:
    """Synchronised wall time per step, and a profile of the PROFILED steps."""

    def __init__(self) -> None:
        self.cuda = harness.cuda_in_use()  # without CUDA (a dry run of this script) only wall times
        self.walls: list[float] = []  # on_step_begin .. on_step_end (forward, backward, optimizer)
        self.ends: list[float] = []  # on_step_end times: their gaps add data loading and logging
        self.prof = None
        self.kernel_s = 0.0
        self.profiled_wall = 0.0
        self._t = 0.0

    def sync(self) -> None:
        harness.sync()

    def begin(self, step: int) -> None:
        self.sync()
        if step == PROFILED[0] and self.cuda:
            from torch.profiler import ProfilerActivity, profile

            self.prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
            self.prof.__enter__()
        self._t = time.perf_counter()

    def end(self, step: int) -> None:
        self.sync()
        now = time.perf_counter()
        wall = now - self._t
        self.walls.append(wall)
        self.ends.append(now)
        if self.prof is not None and PROFILED[0] <= step <= PROFILED[1]:
            self.profiled_wall += wall
        if step == PROFILED[1] and self.prof is not None:
            self.prof.__exit__(None, None, None)
            self.kernel_s = gpu_kernel_seconds(self.prof)
            table = self.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
            print("\n".join(table.splitlines()[:18]), file=sys.stderr)
            if os.environ.get("PROBE_KERNELS"):  # a file for the GPU kernels by time, to compare runs
                kernels = self.prof.key_averages().table(sort_by="self_device_time_total", row_limit=60)
                Path(os.environ["PROBE_KERNELS"]).write_text(kernels)
            self.prof = None

    def summary(self, tokens_per_step: list[int]) -> dict:
        steady = [(w, n) for w, n in zip(self.walls, tokens_per_step) if w > 0][2:]
        steady = [x for i, x in enumerate(steady) if i + 2 not in PROFILED]  # profiling slows its steps
        rates = sorted(n / w for w, n in steady)
        walls = sorted(w for w, _ in steady)
        plain_wall = statistics.median(walls) if walls else 0.0
        profiled_steps = len(PROFILED)
        cycles = [(b - a, n) for i, (a, b, n) in enumerate(zip(self.ends, self.ends[1:], tokens_per_step[1:]))
                  if i + 1 >= 2 and i + 1 not in PROFILED and i not in PROFILED]
        cycle_rates = sorted(n / c for c, n in cycles)
        return {
            # step to step, all the trainer's work included (what the progress line reports)
            "cycle_tok_s": round(cycle_rates[len(cycle_rates) // 2], 1) if cycle_rates else None,
            "steps": len(self.walls),
            "median_step_s": round(plain_wall, 4),
            "median_tokens_per_step": int(statistics.median(n for _, n in steady)) if steady else 0,
            "tok_s": round(rates[len(rates) // 2], 1) if rates else None,
            "gpu_kernel_s_per_step": round(self.kernel_s / profiled_steps, 4) if self.kernel_s else None,
            # kernel time of a profiled step over an unprofiled step's wall time: how busy the GPU is
            "gpu_busy": round(self.kernel_s / profiled_steps / plain_wall, 3) if self.kernel_s and plain_wall else None,
            "peak_gib": harness.gpu_memory_gib(peak=True),
        }


def raw(args) -> dict:
    import bitsandbytes as bnb
    import torch
    import unsloth  # noqa: F401  (before transformers, trl and peft: it patches them)
    from unsloth import FastLanguageModel

    targets = list(harness.LORA_TARGETS)
    model, _ = FastLanguageModel.from_pretrained(args.model, max_seq_length=args.seq, dtype=torch.bfloat16, load_in_4bit=True)
    model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, lora_dropout=0, bias="none",
                                             target_modules=targets, use_gradient_checkpointing="unsloth",
                                             random_state=3407)
    model.train()
    opt = bnb.optim.AdamW8bit([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    g = torch.Generator(device="cuda").manual_seed(0)
    torch.cuda.reset_peak_memory_stats()
    timer = StepTimer()
    for step in range(args.steps):
        ids = torch.randint(0, min(model.config.vocab_size, 2000), (args.batch, args.seq), device="cuda", generator=g)
        timer.begin(step)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        timer.end(step)
    return {"mode": "raw", "seq": args.seq, "batch": args.batch,
            **timer.summary([args.batch * args.seq] * args.steps)}


def medchat_run(args, extra: list[str]) -> dict:
    from transformers import AutoTokenizer

    from medchat.bench.rows import make_rows
    from medchat.cli.main import main as medchat_main
    from medchat.finetune import train as T  # `train` finds make_callback and trainer_args as module globals
    from medchat.store.manifest import FILENAME, read_manifest

    home = Path(tempfile.mkdtemp(prefix="medchat-probe-"))
    os.environ["MEDCHAT_HOME"] = str(home)
    rows = home / "rows.jsonl"
    make_rows(rows, AutoTokenizer.from_pretrained(args.model), n=max(64, args.steps * 16))
    timer = StepTimer()
    seen: list[int] = []  # tokens seen at the end of each step
    original = T.make_callback

    def make_callback(plan, stop, stream=None, **kw):
        progress = original(plan, stop, stream, **kw)
        step_end = progress.on_step_end

        def on_step_begin(a, state, control, **kw):
            timer.begin(state.global_step)

        def on_step_end(a, state, control, **kw):
            timer.end(state.global_step - 1)
            seen.append(state.num_input_tokens_seen or 0)
            return step_end(a, state, control, **kw)

        progress.on_step_begin, progress.on_step_end = on_step_begin, on_step_end
        return progress

    T.make_callback = make_callback
    sampling = os.environ.get("PROBE_SAMPLING")  # e.g. group_by_length, to try a sampler before adopting it
    if sampling:
        trainer_args = T.trainer_args

        def with_sampling(*a, **k):
            args = trainer_args(*a, **k)
            args.train_sampling_strategy = sampling
            return args

        T.trainer_args = with_sampling
    flags = ["finetune", "--model", args.model, "--dataset", str(rows), "--max-steps", str(args.steps),
             "--name", "probe", "--save-steps", "0", "--eval-rows", "0", "--max-seq-length", "2048", *extra]
    code = 0
    try:
        medchat_main(flags)
    except SystemExit as exc:
        code = exc.code or 0
    tokens = [b - a for a, b in zip([0] + seen, seen)]
    found = sorted(home.rglob(FILENAME))
    manifest = read_manifest(found[0].parent) if found else None
    return {"mode": "medchat", "flags": " ".join(extra), "sampling": sampling or "", "exit": code,
            "batching": manifest.training.batching if manifest else None,
            **timer.summary(tokens)}


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("mode", choices=["raw", "medchat"])
    parser.add_argument("model")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=16)
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    rec = harness.recorder("train_probe", {**vars(args), "extra": extra, "profiled": list(PROFILED),
                                           "sampling": os.environ.get("PROBE_SAMPLING", "")})
    result = raw(args) if args.mode == "raw" else medchat_run(args, extra)
    rec.emit(**result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
