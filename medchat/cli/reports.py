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
    if "closed_rate" in (summary.get("base") or {}):  # an evaluation entry (medchat eval's shape)
        return _evaluation_line(summary)
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


def _evaluation_line(ev: dict[str, Any]) -> str:
    base, tuned, paired = ev.get("base") or {}, ev.get("adapter") or {}, ev.get("paired") or {}
    text = (f"{ev.get('benchmark_name') or ev.get('benchmark')} ({ev.get('rows')} rows): closes </think> and answers "
            f"{_pct(base.get('closed_rate'))} → {_pct(tuned.get('closed_rate'))}")
    if base.get("scored"):
        text += f"; accuracy {_pct(base.get('accuracy'))} → {_pct(tuned.get('accuracy'))}"
        if paired.get("mcnemar_p") is not None:
            text += f" (McNemar p {paired['mcnemar_p']:.2g})"
    return text


def print_evaluation(report: dict[str, Any], out: IO[str] | None = None) -> None:
    """An evaluation: one column per model, then the paired difference."""
    out = out or sys.stdout
    sides = [s for s in ("base", "adapter") if report.get(s)]

    def ci(v: Any) -> str:
        return f"[{100 * v[0]:.0f}, {100 * v[1]:.0f}]" if v else "–"

    def num(v: Any) -> str:
        return "–" if v is None else f"{v:g}"

    measures = [
        ("accuracy", lambda s: _pct(s.get("accuracy"))),
        ("  95% interval", lambda s: ci(s.get("ci95"))),
        ("scored rows (correct)", lambda s: f"{s.get('scored')} ({s.get('correct')})"),
        ("extraction failures", lambda s: f"{s.get('extraction_failures')} ({_pct(s.get('extraction_failure_rate'))})"),
        ("closes </think> then answers", lambda s: _pct(s.get("closed_rate"))),
        ("cut off in the reasoning", lambda s: _pct(s.get("cut_in_reasoning_rate"))),
        ("thinking budget hit", lambda s: _pct(s.get("budget_hit_rate"))),
        ("reasoning tokens (median)", lambda s: num(s.get("median_reasoning_tokens"))),
        ("answer tokens (median)", lambda s: num(s.get("median_answer_tokens"))),
        ("generated tok/s", lambda s: num(s.get("tokens_per_second"))),
    ]
    budget = report.get("think_budget")
    print(f"{report.get('benchmark_name') or report.get('benchmark')}: {report.get('rows')} rows "
          f"({report.get('skipped')} without a gold answer skipped, {report.get('contaminated')} in the training "
          f"data removed); greedy, think budget {'none' if budget is None or budget < 0 else budget}, "
          f"{report.get('max_new_tokens')} new tokens, prompt style {report.get('prompt_style')}", file=out)
    width = max(len(m[0]) for m in measures)
    print(f"  {'':<{width}}" + "".join(f"  {s:>12}" for s in sides), file=out)
    for label, fn in measures:
        print(f"  {label:<{width}}" + "".join(f"  {fn(report[s]):>12}" for s in sides), file=out)
    paired = report.get("paired")
    if paired:
        lo, hi = paired["ci95"]
        print(f"  adapter − base: {100 * paired['difference']:+.1f} points, 95% interval [{100 * lo:+.1f}, "
              f"{100 * hi:+.1f}], McNemar exact p = {paired['mcnemar_p']:.3g}", file=out)
    if report.get("report"):
        print(f"  report: {report['report']}", file=out)
