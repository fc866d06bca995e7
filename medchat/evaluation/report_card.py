"""The report card: load base + adapter once, run the paired evaluation (``run.py``) batched, and make
the report. `medchat eval` and the end of `medchat finetune` (on the held-out rows) both come here.

Measures what a medical reasoning fine-tune is for: is the answer right (read strictly from the text
after ``</think>``), does the reply close ``</think>`` and then answer, how long are reasoning and
answer, and how often the thinking budget or the token limit cut it short.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from medchat.chatformat.example import Example
from medchat.config import Settings
from medchat.evaluation.benchmarks import Benchmark, Item, heldout_items
from medchat.evaluation.run import EvalSettings, evaluate

Say = Callable[[str], None]
ANSWER_ALLOWANCE = 512  # tokens after the thinking budget for the answer itself
NO_BUDGET_TOKENS = 2048


def default_max_new_tokens(think_budget: int) -> int:
    return think_budget + ANSWER_ALLOWANCE if think_budget >= 0 else NO_BUDGET_TOKENS


def open_eval_backend(settings: Settings, adapter_path: Path | None, say: Say) -> Any:
    """The base model (+ adapter) as the chat would load it: medchat's decode loop where it applies (many
    rows in flight over a slot cache; int4 weights on CUDA, 16-bit on the CPU), else transformers'
    ``generate`` in left-padded batches (``--decoder generate``, or a model the loop does not support)."""
    from medchat.engine.backends import open_local
    from medchat.models.loading import pick_device

    local = dataclasses.replace(settings, adapter=str(adapter_path) if adapter_path else "", endpoint="")
    if settings.quantize == "auto" and pick_device(settings.device) == "cpu":
        # 16-bit weights on the CPU: the int8 kernel that speeds up the chat's batch 1 dequantises the
        # weights again for every row, so at 16 rows it costs 2-3x a bfloat16 matmul, which costs about
        # the same for 1 or 32 rows (benchmarks/RESULTS.md §7)
        local = dataclasses.replace(local, quantize="none")
    return open_local(local, say)


def _batch_size(backend: Any, max_new_tokens: int, rows: int) -> int:
    """The backend's rows in flight (a backend without a batched path answers one row at a time)."""
    default = getattr(backend, "default_batch_size", None)
    return default(max_new_tokens, rows) if default is not None else 1


def evaluate_items(backend: Any, bench: Benchmark, items: Sequence[Item], adapter_path: Path | None,
                   settings: EvalSettings, say: Say, *, style: str | None = None, seed: int = 0,
                   contaminated: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(report, per-row records) for ``items`` on a loaded backend."""
    from medchat.evaluation.record import versions

    t0 = time.perf_counter()
    summary, records = evaluate(backend, items, settings, str(adapter_path) if adapter_path else None, say,
                                style=style)
    info = backend.info
    name = Path(bench.name).name if Path(bench.name).suffix else bench.name
    report = {
        "benchmark": bench.name,
        "rows": len(items),
        "skipped": bench.skipped,
        "contaminated": contaminated,
        "think_budget": settings.think_budget,
        **summary,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "benchmark_name": name,
        "benchmark_id": bench.name if "/" in bench.name and not Path(bench.name).exists() else name,
        "benchmark_sha256": bench.digest,
        "shape": bench.shape,
        "split": bench.split,
        "notes": list(bench.notes),
        "max_new_tokens": settings.max_new_tokens,
        "batch_size": settings.batch_size,
        "seed": seed,
        "decoding": "greedy",
        "prompt_style": summary.pop("prompt_style"),
        "model": info.model,
        "adapter_path": str(adapter_path) if adapter_path else "",
        "device": info.device,
        "quantization": info.quantization,
        "seconds": round(time.perf_counter() - t0, 1),
        "versions": versions(),
    }
    return report, records


def run_evaluation(settings: Settings, adapter_path: Path | None, bench: Benchmark, items: Sequence[Item], *,
                   think_budget: int, max_new_tokens: int | None, batch_size: int | None, seed: int,
                   contaminated: int, style: str | None, say: Say) -> dict[str, Any]:
    """`medchat eval`: load, evaluate, save the report and rows, record in the adapter; the report."""
    from medchat.evaluation.record import record_in_adapter, reports_dir, save_report

    backend = open_eval_backend(settings, adapter_path, say)
    try:
        max_new = max_new_tokens or default_max_new_tokens(think_budget)
        es = EvalSettings(max_new, think_budget,
                          batch_size or _batch_size(backend, max_new, len(items)), settings.system_prompt)
        report, records = evaluate_items(backend, bench, items, adapter_path, es, say, style=style, seed=seed,
                                         contaminated=contaminated)
    finally:
        backend.close()
    path = save_report(report, records, reports_dir(adapter_path, settings.model), relative_to=adapter_path)
    say(f"report: {path} (every row: {path.with_suffix('.jsonl')})")
    if adapter_path is not None and record_in_adapter(adapter_path, report):
        say(f"recorded in {adapter_path.name}'s manifest and model card (README.md)")
    return report


def evaluate_adapter(settings: Settings, adapter_dir: Path, examples: Sequence[Example], indices: Sequence[int],
                     style: str, say: Say) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The end-of-training report card: base vs adapter on the held-out rows, batched, through the
    same code as `medchat eval`. The caller saves it (the adapter folder is not in place yet)."""
    ft = settings.finetune
    bench = Benchmark("heldout", "heldout", heldout_items(examples, indices))
    backend = open_eval_backend(settings, adapter_dir, say)
    try:
        es = EvalSettings(ft.eval_max_new_tokens, -1, _batch_size(backend, ft.eval_max_new_tokens, len(bench.items)),
                          settings.system_prompt)
        return evaluate_items(backend, bench, bench.items, adapter_dir, es, say, style=style)
    finally:
        backend.close()
