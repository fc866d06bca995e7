"""`medchat eval`: base model vs adapter on a medical benchmark (or the adapter's held-out rows)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from medchat.errors import AdapterError, DataError, UsageError

if TYPE_CHECKING:
    from medchat.evaluation.benchmarks import Benchmark
    from medchat.store.manifest import Manifest

HELDOUT = "heldout"


@click.command("eval")
@click.option("--adapter", default=None, help="A stored adapter name or an adapter folder (compared with its base).")
@click.option("--model", default=None, help="Base model (default: the one the adapter records). Alone: base only.")
@click.option("--benchmark", "spec", default=None,
              help="A benchmark file (MedQA / MedMCQA / PubMedQA / MMLU-style / medical-o1 MCQ rows), a hub "
                   "data set id, or 'heldout' (the adapter's held-out rows; the default with --adapter).")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PubMedQA ground truth: a JSON object PMID -> yes/no/maybe.")
@click.option("--subset", default="", help="Hub data set configuration.")
@click.option("--split", default="test", show_default=True, help="Hub data set split.")
@click.option("--rows", type=click.IntRange(min=1), default=None, help="A seeded sample of N rows (default: all).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --rows sample.")
@click.option("--think-budget", type=click.IntRange(min=-1), default=1024, show_default=True,
              help="Reasoning tokens per reply before </think> is forced; 0 = answer without reasoning, -1 = no limit.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
              help="Tokens per reply in all (default: think budget + 512, or 2048 without a budget).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Rows in flight at once (default: medchat's decode loop fills 60% of free GPU memory, "
                   "at most 256, or 32 on the CPU; transformers' generate 64 / 8).")
@click.option("--no-contamination-check", is_flag=True,
              help="Do not compare with the adapter's training rows (when they cannot be loaded).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--quantize", type=click.Choice(["auto", "4bit", "none"]), default=None,
              help="auto: int4 (CUDA) or int8 (CPU) weights in medchat's decode loop; none: 16-bit.")
@click.option("--decoder", type=click.Choice(["auto", "fast", "generate"]), default=None,
              help="auto: medchat's decode loop where it applies (rows in slots), else transformers' generate.")
@click.option("--offline/--online", "offline", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_command(adapter: str | None, model: str | None, spec: str | None, labels: Path | None, subset: str,
                 split: str, rows: int | None, seed: int, think_budget: int, max_new_tokens: int | None,
                 batch_size: int | None, no_contamination_check: bool, device: str | None, quantize: str | None,
                 decoder: str | None, offline: bool | None, as_json: bool) -> None:
    """Base model vs adapter on the same rows: accuracy with 95% intervals, McNemar's p, reasoning measures.

    Results go to the adapter's manifest and model card (README.md), and to a report with every row."""
    from medchat.config import load_settings
    from medchat.evaluation import benchmarks as B
    from medchat.evaluation.record import public_summary
    from medchat.evaluation.report_card import run_evaluation
    from medchat.store.adapters import resolve_adapter
    from medchat.store.manifest import read_manifest

    if not adapter and not model:
        raise UsageError("give --adapter NAME (base vs adapter) or --model MODEL (base alone)")
    path = resolve_adapter(adapter) if adapter else None
    manifest = read_manifest(path) if path else None
    spec = spec or (HELDOUT if path else None)
    if not spec:
        raise UsageError("give --benchmark FILE (or a hub data set id)")
    flags: dict[str, Any] = {"model": model or _base_of(path, manifest)}
    for key, value in (("device", device), ("quantize", quantize), ("decoder", decoder), ("offline", offline)):
        if value is not None:
            flags[key] = value
    if manifest is not None:
        flags["system_prompt"] = manifest.system_prompt
    settings = load_settings(flags)
    say = (lambda m: click.echo(f"medchat: {m}", err=True))

    if spec == HELDOUT:
        bench = _heldout(path, manifest, settings.offline)
        contaminated = 0
    else:
        bench = load_benchmark(spec, labels, subset, split, settings.offline)
        contaminated = 0
        if manifest is not None and manifest.dataset.train_indices and not no_contamination_check:
            bench, contaminated = _decontaminate(bench, manifest, settings.offline, say)
    for note in bench.notes:
        say(note)
    if not bench.items:
        raise DataError(f"{spec}: no rows left to evaluate ({bench.skipped} without a gold answer, "
                        f"{contaminated} also in the training data)")
    items = B.sample(bench.items, rows, seed)
    report = run_evaluation(settings, path, bench, items, think_budget=think_budget,
                            max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
                            contaminated=contaminated, style=(manifest.prompt_style if manifest else "") or None,
                            say=say)
    if as_json:
        click.echo(json.dumps(public_summary(report), ensure_ascii=False))
    else:
        from medchat.cli.reports import print_evaluation

        print_evaluation(report)


def _base_of(path: Path | None, manifest: "Manifest | None") -> str:
    from medchat.store.adapters import adapter_base_model

    if manifest is not None and (manifest.base_model.name or manifest.base_model.id):
        return manifest.base_model.name or manifest.base_model.id
    base = adapter_base_model(path) if path else ""
    if not base:
        raise UsageError("the adapter does not record its base model; give --model")
    return base


def load_benchmark(spec: str, labels: Path | None, subset: str, split: str, offline: bool) -> "Benchmark":
    """Rows of a benchmark file or hub data set -> items (each shape recognised by its keys)."""
    from medchat.evaluation import benchmarks as B
    from medchat.finetune import data as D

    kind = D.classify(spec)
    rows = None
    digest = ""
    if kind == "file":
        file = Path(spec).expanduser()
        if file.suffix.lower() == ".json" and file.is_file():  # PubMedQA: one object keyed by PMID
            try:
                rows = B.pubmedqa_rows(json.loads(file.read_bytes().decode("utf-8-sig")))
            except (ValueError, UnicodeDecodeError):
                rows = None  # JSON lines or broken: the general reader says what is wrong
        if rows is not None:
            digest = "sha256:" + hashlib.sha256(file.read_bytes()).hexdigest()
    if rows is None:
        source, rows = D.load_rows(spec, subset, split, offline)
        digest = source.revision
    shape = B.detect_shape(rows, spec)
    gold = B.read_labels(labels) if labels is not None else None
    if gold is not None and shape != "pubmedqa":
        raise UsageError(f"--labels is for PubMedQA files; {spec} has the {shape} shape")
    bench = B.to_items(rows, shape, spec, source_kind=kind, labels=gold)
    bench.notes.insert(0, f"{spec}: {shape} shape, {len(rows)} rows, {bench.skipped} without a gold answer (skipped)")
    bench.digest = digest
    bench.split = split if kind == "hub" else ""
    return bench


def _training_questions(manifest: "Manifest", offline: bool) -> list[str]:
    from medchat.finetune import data as D

    data = manifest.dataset
    spec = "sample" if data.kind == "sample" else data.id
    dataset = D.load_dataset(spec, subset=data.subset, split=data.split,
                             columns=manifest.finetune_setting("columns", ""), offline=offline)
    return [dataset.examples[i].question for i in data.train_indices if i < len(dataset.examples)]


def _decontaminate(bench: "Benchmark", manifest: "Manifest", offline: bool, say: Any) -> tuple["Benchmark", int]:
    from medchat.evaluation.contamination import find_contaminated

    try:
        trained = _training_questions(manifest, offline)
    except DataError as exc:
        raise DataError(f"cannot load the adapter's training rows to check for contamination ({exc}); "
                        "pass --no-contamination-check to evaluate anyway") from None
    found = find_contaminated([it.question for it in bench.items], trained)
    if found:
        exact = sum(m.kind == "exact" for m in found.values())
        say(f"contamination: {len(found)} benchmark rows also in the training rows "
            f"({exact} same question, {len(found) - exact} near-duplicates): removed")
    bench.items = [it for i, it in enumerate(bench.items) if i not in found]
    return bench, len(found)


def _heldout(path: Path | None, manifest: "Manifest | None", offline: bool) -> "Benchmark":
    from medchat.evaluation.benchmarks import Benchmark, heldout_items
    from medchat.finetune import data as D

    if path is None or manifest is None or not manifest.dataset.id:
        raise AdapterError(f"{path.name if path else 'heldout'}: no medchat manifest recording held-out rows; "
                           "give --benchmark FILE")
    data = manifest.dataset
    indices = list(data.eval_indices)
    if not indices:
        raise DataError(f"{path.name} was trained without held-out rows (--eval-rows 0); give --benchmark FILE")
    spec = "sample" if data.kind == "sample" else data.id
    dataset = D.load_dataset(spec, subset=data.subset, split=data.split,
                             columns=manifest.finetune_setting("columns", ""), offline=offline)
    if data.revision and dataset.source.revision and data.revision != dataset.source.revision:
        click.echo("medchat: warning: the data set changed since training; held-out rows may differ", err=True)
    if max(indices) >= len(dataset.examples):
        raise DataError(f"the data set now has {len(dataset.examples)} rows; the held-out rows no longer exist")
    items = heldout_items([dataset.examples[i] for i in indices], indices)
    bench = Benchmark(HELDOUT, "heldout", items, 0, [])
    bench.digest = dataset.source.revision
    return bench
