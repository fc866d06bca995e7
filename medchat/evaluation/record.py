"""Where an evaluation's results go: a report (JSON) with every row beside it (JSONL), an entry in the
adapter's manifest (``evaluations``), and the adapter's model card."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Sequence

from medchat import paths
from medchat.paths import atomic_write_text

# The figures copied into the manifest (the report keeps everything).
_SIDE_KEYS = ("rows", "scored", "accuracy", "ci95", "extraction_failures", "extraction_failure_rate",
              "closed_rate", "cut_in_reasoning_rate", "budget_hit_rate", "median_reasoning_tokens",
              "median_answer_tokens", "tokens_per_second")


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("medchat", "torch", "transformers", "peft", "bitsandbytes"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(text).name if "/" in text and Path(text).exists() else text
                  ).strip("-")[:60] or "benchmark"


def public_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The ``--json`` object: benchmark, rows, skipped, contaminated, think_budget, base, adapter, paired."""
    keys = ("benchmark", "rows", "skipped", "contaminated", "think_budget", "base", "adapter", "paired")
    return {k: report.get(k) for k in keys} | {k: v for k, v in report.items() if k not in keys and k != "versions"}


def manifest_entry(report: dict[str, Any]) -> dict[str, Any]:
    def side(s: Any) -> Any:
        return {k: s.get(k) for k in _SIDE_KEYS} if isinstance(s, dict) else None

    keep = ("created", "benchmark", "benchmark_name", "benchmark_id", "benchmark_sha256", "shape", "split",
            "rows", "skipped", "contaminated", "think_budget", "max_new_tokens", "batch_size", "seed",
            "prompt_style", "model", "device", "versions", "report")
    return {k: report.get(k) for k in keep} | {"base": side(report.get("base")),
                                                  "adapter": side(report.get("adapter")),
                                                  "paired": report.get("paired")}


def reports_dir(adapter_dir: Path | None, model: str) -> Path:
    if adapter_dir is not None:
        return adapter_dir / "evals"
    return paths.data_dir() / "evals" / slug(model)


def save_report(report: dict[str, Any], records: Sequence[dict[str, Any]], folder: Path,
                relative_to: Path | None = None) -> Path:
    """Write ``<stamp>-<benchmark>.json`` and its rows ``.jsonl``; returns the JSON's path. Inside an
    adapter folder (``relative_to``) the report names them relative to it, so they survive a move."""
    paths.ensure_private_dir(folder)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(str(report.get('benchmark_name', 'benchmark')))}"
    rows_path, path = folder / f"{stem}.jsonl", folder / f"{stem}.json"

    def name(p: Path) -> str:
        return str(p.relative_to(relative_to)) if relative_to is not None else str(p)

    report["rows_file"] = name(rows_path)
    report["report"] = name(path)
    atomic_write_text(rows_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_text(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return path


def record_in_adapter(adapter_dir: Path, report: dict[str, Any]) -> bool:
    """Append the evaluation to the adapter's manifest and rewrite its model card. False when the
    adapter has no medchat manifest (made elsewhere): the report files are then all there is."""
    from medchat.evaluation.model_card import write_card
    from medchat.store.manifest import read_manifest, write_manifest

    manifest = read_manifest(adapter_dir)
    if manifest is None:
        return False
    manifest.evaluations.append(manifest_entry(report))
    write_manifest(adapter_dir, manifest)
    write_card(adapter_dir, manifest)
    return True
