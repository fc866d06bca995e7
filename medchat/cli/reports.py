"""What `medchat finetune`, `medchat eval` and `medchat adapters show` print from the data the
fine-tuning and evaluation code return: the training summary, the dry run and the report card."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medchat.finetune.run import DryRun
    from medchat.store.manifest import Manifest


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def print_summary(manifest: "Manifest", path: Path, out: IO[str] | None = None) -> None:
    """The end of a training run: where the adapter went, speed, loss, report card, how to chat with it."""
    from medchat.finetune.progress import clock

    t = manifest.training
    losses = manifest.losses
    lines = [
        f"adapter {manifest.name} saved to {path}",
        f"  {t.steps} steps in {clock(t.seconds)}, {t.tokens:,} tokens ({t.tokens_per_second:,.0f} tok/s, non-padding"
        + (f"; {t.steady_tokens_per_second:,.0f} tok/s after warm-up" if t.steady_tokens_per_second else "") + ")"
        + (f", peak GPU memory {t.peak_gpu_gib} GiB" if t.peak_gpu_gib is not None else ""),
        f"  loss {losses.first_train} → {losses.final_train}",
    ]
    if t.gpus > 1:
        unit, units = ("GPU", "GPUs") if manifest.hardware.get("device") == "cuda" else ("process", "processes")
        lines.append(f"  {t.gpus} {units}, {t.effective_batch} rows a step (batch per {unit} x accumulation x {t.gpus})"
                     + (f", peak memory per GPU {', '.join(f'{g}' for g in t.peak_gpu_gib_per_rank)} GiB"
                        if t.peak_gpu_gib_per_rank else ""))
    if t.phases:
        lines.append(f"  time: {describe_phases(t.phases, manifest.duration_seconds)}")
    if manifest.tensorboard_logs:
        lines.append(f"  TensorBoard: tensorboard --logdir {shlex.quote(manifest.tensorboard_logs)}")
    if manifest.eval:
        lines.append(f"  report card: {format_eval_line(manifest.eval)}")
    lines.append(f"chat with it: medchat --model {shlex.quote(manifest.base_model.name)} --adapter {manifest.name}")
    print("\n".join(lines), file=out or sys.stdout, flush=True)


def describe_phases(phases: dict[str, float], total: float) -> str:
    """'2m05s in all: training 58s; start-up 64s (load 21s, data 2s, trainer 3s, first step 38s); save 2s'."""
    from medchat.finetune.progress import clock

    startup = [("plan", "plan"), ("load", "load"), ("data", "data"), ("trainer", "trainer"), ("first_step", "first step")]
    parts = [f"{label} {clock(phases[key])}" for key, label in startup if phases.get(key)]
    text = f"{clock(total)} in all: training {clock(phases.get('training', 0.0))} at the steady rate"
    text += f"; start-up {clock(sum(phases.get(k, 0.0) for k, _ in startup))} ({', '.join(parts)})"
    for key, label in (("training_end", "end of training"), ("save", "save"), ("merge", "merge"),
                       ("report_card", "report card")):
        if key in phases and (key != "training_end" or phases[key] >= 1):
            text += f"; {label} {clock(phases[key])}"
    return text


def format_eval_line(summary: dict[str, Any]) -> str:
    base, tuned = summary.get("base", {}), summary.get("adapter", {})
    text = f"closes </think> and answers: base {_pct(base.get('share_closed'))} → adapter {_pct(tuned.get('share_closed'))}"
    if tuned.get("mc_rows"):
        text += f"; multiple-choice accuracy: base {_pct(base.get('accuracy'))} → adapter {_pct(tuned.get('accuracy'))}"
    return text


def print_dry_run(dry: "DryRun", out: IO[str] | None = None) -> None:
    from medchat.finetune.rows import describe_lengths

    out = out or sys.stdout
    example = dry.check
    print(f"data: {dry.source} — {dry.shape} shape, {dry.rows_total} rows", file=out)
    print(f"rows: {dry.rows_train} to train, {dry.rows_eval} held out; "
          f"model {dry.model}; prompt style {dry.style}", file=out)
    print(describe_lengths(dry.lengths), file=out)
    print("render check: training prompt = chat prompt; "
          f"{example['prompt_tokens']} prompt tokens, {example['completion_tokens']} completion tokens trained", file=out)
    print("\n--- prompt (masked, not trained) ---", file=out)
    print(example["prompt"], file=out)
    print("--- completion (trained) ---", file=out)
    print(example["completion"], file=out)
    print("--- end ---\ndry run: nothing was trained", file=out)


def print_report(report: dict[str, Any], out: IO[str] | None = None) -> None:
    """The report card: base model vs adapter, one row per measure."""
    out = out or sys.stdout
    summary = report.get("summary", {})
    base, tuned = summary.get("base", {}), summary.get("adapter", {})

    def fmt(value: Any, pct: bool = False) -> str:
        if value is None:
            return "–"
        return _pct(value) if pct else str(value)

    rows = [
        ("held-out rows", fmt(base.get("rows")), fmt(tuned.get("rows"))),
        ("closes </think> then answers", fmt(base.get("share_closed"), True), fmt(tuned.get("share_closed"), True)),
        ("reasoning tokens (mean)", fmt(base.get("reasoning_tokens_mean")), fmt(tuned.get("reasoning_tokens_mean"))),
        ("answer tokens (mean)", fmt(base.get("answer_tokens_mean")), fmt(tuned.get("answer_tokens_mean"))),
        ("hit the token limit", fmt(base.get("hit_token_limit")), fmt(tuned.get("hit_token_limit"))),
        ("multiple-choice rows", fmt(base.get("mc_rows")), fmt(tuned.get("mc_rows"))),
        ("multiple-choice accuracy", fmt(base.get("accuracy"), True), fmt(tuned.get("accuracy"), True)),
    ]
    print(f"report card ({report.get('decoding', 'greedy')}, {report.get('max_new_tokens')} new tokens, "
          f"prompt style {report.get('prompt_style')}, {report.get('created', '')})", file=out)
    width = max(len(r[0]) for r in rows)
    print(f"  {'':<{width}}  {'base':>8}  {'adapter':>8}", file=out)
    for label, b, a in rows:
        print(f"  {label:<{width}}  {b:>8}  {a:>8}", file=out)
