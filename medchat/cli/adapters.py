"""`medchat adapters list|show|rm|path`: the adapter store, read through medchat.store."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from medchat.store.manifest import DatasetRecord


@click.group()
def adapters() -> None:
    """List, inspect, locate or delete stored LoRA adapters."""


@adapters.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per adapter.")
def adapters_list(as_json: bool) -> None:
    """Stored adapters, newest last."""
    from medchat.store.adapters import list_adapters, stale_temporaries

    found = list_adapters()
    if as_json:
        for a in found:
            click.echo(json.dumps({"name": a.name, "path": str(a.path), "base_model": a.base_model,
                                   "created": a.created, "dataset": a.dataset, "rows": a.rows,
                                   "final_loss": a.final_loss, "latest_eval": a.latest_eval,
                                   "bundled": a.bundled}))
        return
    if found:
        rows = [("NAME", "BASE MODEL", "DATA", "ROWS", "LOSS", "CREATED", "LATEST EVAL (base→adapter)")]
        for a in sorted(found, key=lambda a: (not a.bundled, a.created)):
            loss = f"{a.final_loss:.3f}" if isinstance(a.final_loss, (int, float)) else "–"
            rows.append((a.name + (" (bundled)" if a.bundled else ""), a.base_model, a.dataset.rsplit("/", 1)[-1] or "–",
                         str(a.rows), loss, a.created[:16], a.latest_eval or "–"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        for r in rows:
            click.echo("  ".join(f"{c:<{w}}" for c, w in zip(r, widths)) + "  " + r[-1])
    if all(a.bundled for a in found):
        click.echo("no adapters yet: create one with `medchat finetune --model smollm2 --dataset sample`")
    stale = stale_temporaries()
    if stale:
        click.echo(f"({len(stale)} unfinished save(s) in {stale[0].parent}, not listed; "
                   "`medchat adapters clean` removes those no running medchat uses)", err=True)


@adapters.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest and report card as JSON.")
def adapters_show(name: str, as_json: bool) -> None:
    """An adapter's manifest: base model, data, settings, losses, report card."""
    from medchat.cli.reports import format_eval_line, print_evaluation, print_report
    from medchat.store.adapters import read_report, resolve_adapter
    from medchat.store.manifest import read_manifest

    path = resolve_adapter(name)
    manifest = read_manifest(path)
    report = read_report(path)
    if as_json:
        whole = json.loads(manifest.to_json()) if manifest else {}
        click.echo(json.dumps({"path": str(path), "manifest": whole, "report": report}, indent=2, ensure_ascii=False))
        return
    click.echo(f"{path.name}  ({path})")
    if not manifest:
        click.echo("  no medchat manifest (an adapter made elsewhere)")
        return
    base, data, training, losses = manifest.base_model, manifest.dataset, manifest.training, manifest.losses
    s = manifest.settings.get("finetune", {})
    lines = [
        ("created", manifest.created),
        ("recipe", manifest.recipe or "–"),
        ("command", manifest.command or "–"),
        ("base model", base.id + (f" @ {base.revision}" if base.revision else "")),
        ("prompt style", f"{manifest.prompt_style} (template {manifest.chat_template_hash})"),
        ("data", f"{data.id}{subset_split(data)} ({data.shape}), "
                 f"{data.rows_used} of {data.rows_total} rows ({data.select}), "
                 f"{len(data.eval_indices)} held out"),
        ("LoRA", f"r {s.get('lora_r')}, alpha {s.get('lora_alpha')}, dropout {s.get('lora_dropout')}, "
                 f"rsLoRA {s.get('use_rslora')}, targets {','.join(s.get('target_modules', []))}"),
        ("trainer", f"batch {s.get('batch_size')} × accum {s.get('grad_accum')}, lr {s.get('learning_rate')} "
                    f"{s.get('lr_scheduler')}, {s.get('max_steps') or str(s.get('epochs')) + ' epochs'} steps, "
                    f"seq {s.get('max_seq_length')}, seed {s.get('seed')}"),
        ("training", f"{training.steps} steps in {training.seconds} s, "
                     f"{training.tokens_per_second} tok/s (non-padding)"
                     + (f", peak GPU {training.peak_gpu_gib} GiB" if training.peak_gpu_gib else "")),
        ("loss", f"{losses.first_train} → {losses.final_train}"),
        ("hardware", ", ".join(f"{k} {v}" for k, v in manifest.hardware.items() if k != "platform")),
        ("versions", ", ".join(f"{k} {v}" for k, v in manifest.versions.items())),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        click.echo(f"  {key:<{width}}  {value}")
    if manifest.evaluations:
        click.echo("\n  evaluations (latest last):")
        for ev in manifest.evaluations[-5:]:
            click.echo(f"    {ev.get('created', '')[:16]}  {format_eval_line(ev)}")
    if report:
        click.echo("")
        (print_report if "summary" in report else print_evaluation)(report)
    elif data.eval_indices:
        click.echo("\n  no report card yet: run `medchat eval --adapter " + path.name + "`")
    else:
        click.echo("\n  no report card: trained without held-out rows (--eval-rows 0)")


def subset_split(data: "DatasetRecord") -> str:
    parts = "/".join(p for p in (data.subset, data.split) if p)
    return f" [{parts}]" if parts else ""


@adapters.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def adapters_rm(names: tuple[str, ...], yes: bool) -> None:
    """Delete stored adapters."""
    from medchat.store.adapters import remove_adapter, stored_adapter

    for name in names:
        stored_adapter(name)  # all names checked before anything is deleted
    if not yes and not click.confirm(f"delete {', '.join(names)}?", default=False, err=True):
        raise click.exceptions.Exit(1)
    for name in names:
        remove_adapter(name)
        click.echo(f"deleted {name}")


@adapters.command("clean")
def adapters_clean() -> None:
    """Delete leftovers of interrupted saves and deletes that no running medchat uses."""
    from medchat.store.adapters import clean_stale, stale_temporaries

    removed = clean_stale()
    for folder, size in removed:
        click.echo(f"removed {folder.name} ({size / 2**20:.1f} MB)")
    kept = stale_temporaries()
    if kept:
        click.echo(f"{len(kept)} in use (a save under way), kept", err=True)
    elif not removed:
        click.echo("nothing to clean")


@adapters.command("path")
@click.argument("name", required=False)
def adapters_path(name: str | None) -> None:
    """Print an adapter's folder (or the store's, without NAME)."""
    from medchat.store.adapters import resolve_adapter, store_dir

    click.echo(str(resolve_adapter(name) if name else store_dir()))
