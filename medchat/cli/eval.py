"""`medchat eval --adapter NAME`: base model vs adapter on the adapter's held-out rows."""

from __future__ import annotations

from typing import Any

import click

from medchat.errors import AdapterError, DataError


@click.command("eval")
@click.option("--adapter", required=True, help="A stored adapter name or an adapter folder.")
@click.option("--rows", type=click.IntRange(min=1), default=None, help="Use at most N of its held-out rows.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None, help="Token budget per reply.")
@click.option("--model", default=None, help="Base model (default: the one the adapter records).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--offline/--online", "offline", default=None)
def eval_command(adapter: str, rows: int | None, max_new_tokens: int | None, model: str | None,
                 device: str | None, offline: bool | None) -> None:
    """Base model vs adapter on the adapter's held-out rows; saves and prints the report card."""
    from medchat.cli.reports import print_report
    from medchat.config import load_settings
    from medchat.evaluation.report_card import evaluate_adapter
    from medchat.finetune import data as D
    from medchat.store.adapters import resolve_adapter, write_report
    from medchat.store.manifest import read_manifest

    path = resolve_adapter(adapter)
    manifest = read_manifest(path)
    if not manifest or not manifest.dataset.id:
        raise AdapterError(f"{path.name} has no medchat manifest: it does not record held-out rows to evaluate on")
    data = manifest.dataset
    indices = list(data.eval_indices)
    if not indices:
        raise DataError(f"{path.name} was trained without held-out rows (--eval-rows 0); nothing to evaluate on")
    flags: dict[str, Any] = {"model": model or manifest.base_model.name or manifest.base_model.id,
                             "system_prompt": manifest.system_prompt}
    if device:
        flags["device"] = device
    if offline is not None:
        flags["offline"] = offline
    if max_new_tokens:
        flags["finetune.eval_max_new_tokens"] = max_new_tokens
    settings = load_settings(flags)
    spec = "sample" if data.kind == "sample" else data.id
    dataset = D.load_dataset(spec, subset=data.subset, split=data.split,
                             columns=manifest.finetune_setting("columns", ""), offline=settings.offline)
    if data.revision and dataset.source.revision and data.revision != dataset.source.revision:
        click.echo("medchat: warning: the data set changed since training; held-out rows may differ", err=True)
    if max(indices) >= len(dataset.examples):
        raise DataError(f"the data set now has {len(dataset.examples)} rows; the held-out rows no longer exist")
    examples = [dataset.examples[i] for i in indices[: rows or len(indices)]]
    report = evaluate_adapter(settings, path, examples, manifest.prompt_style or "chat_template",
                              lambda m: click.echo(f"medchat: {m}", err=True))
    write_report(path, report)
    print_report(report)
