"""`medchat finetune`, `medchat adapters list|show|rm|path`, `medchat recipes`, `medchat eval`.

Thin commands: parse flags into settings keys, then delegate to medchat.finetune / medchat.adapters.
Nothing heavy is imported at module level (`medchat --help` stays instant).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from medchat.store.manifest import DatasetRecord

from medchat.errors import AdapterError, DataError, UsageError

# flag -> (settings key, click type, help). Every one is also a config key under [finetune] (or top level).
FINETUNE_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--model", "model", str, "Base model: a catalogue name (smollm2 works offline), hub id, folder or .gguf."),
    ("--backend", "backend", click.Choice(["auto", "unsloth", "hf"]), "unsloth (CUDA) or hf (transformers + peft)."),
    ("--device", "device", click.Choice(["auto", "cpu", "cuda"]), "Where to train."),
    ("--quantize", "quantize", click.Choice(["auto", "4bit", "none"]), "Load the base in 4-bit (QLoRA)."),
    ("--dtype", "dtype", click.Choice(["auto", "bfloat16", "float16", "float32"]), "Base weight dtype."),
    ("--system", "system_prompt", str, "System prompt (chat-template style; chat uses the same)."),
    ("--dataset", "finetune.dataset", str, "Hub data set id, a .json/.jsonl/.csv/.parquet file, or 'sample'."),
    ("--subset", "finetune.subset", str, "Hub data set configuration (medical-o1: en or zh)."),
    ("--split", "finetune.split", str, "Hub data set split."),
    ("--columns", "finetune.columns", str, "Map columns: question=COL,reasoning=COL,answer=COL."),
    ("--prompt-style", "finetune.prompt_style", str, "auto, chat_template, r1-medical, task-query-answer, medical-qa."),
    ("--samples", "finetune.samples", click.IntRange(min=0), "Train on N rows: a seeded random subset (0 = all)."),
    ("--fraction", "finetune.fraction", click.FloatRange(0, 1), "Train on this share of the rows instead."),
    ("--eval-rows", "finetune.eval_rows", click.IntRange(min=0), "Held-out rows for the report card (0 = none)."),
    ("--eval-max-new-tokens", "finetune.eval_max_new_tokens", click.IntRange(min=1), "Token budget per report-card reply."),
    ("--max-seq-length", "finetune.max_seq_length", click.IntRange(min=16), "Longest training row in tokens."),
    ("--on-long", "finetune.on_long", click.Choice(["truncate", "drop"]), "Rows longer than --max-seq-length."),
    ("--lora-r", "finetune.lora_r", click.IntRange(min=1), "LoRA rank."),
    ("--lora-alpha", "finetune.lora_alpha", click.IntRange(min=1), "LoRA alpha."),
    ("--lora-dropout", "finetune.lora_dropout", click.FloatRange(0, 1, max_open=True), "LoRA dropout."),
    ("--target-modules", "finetune.target_modules", str, "Comma-separated layer names that get LoRA."),
    ("--batch-size", "finetune.batch_size", click.IntRange(min=1), "Rows per micro-batch (packed: batch-size x max-seq-length tokens)."),
    ("--grad-accum", "finetune.grad_accum", click.IntRange(min=1), "Micro-batches per optimizer step."),
    ("--max-steps", "finetune.max_steps", click.IntRange(min=0), "Optimizer steps (0 = use --epochs)."),
    ("--epochs", "finetune.epochs", click.FloatRange(min=0, min_open=True), "Passes over the data (sets --max-steps 0 unless given)."),
    ("--learning-rate", "finetune.learning_rate", click.FloatRange(min=0, min_open=True), "Peak learning rate (default: auto by model size)."),
    ("--lr-scheduler", "finetune.lr_scheduler", click.Choice(["linear", "cosine", "constant", "constant_with_warmup"]), "Schedule."),
    ("--warmup-steps", "finetune.warmup_steps", click.IntRange(min=0), "Warm-up steps."),
    ("--warmup-ratio", "finetune.warmup_ratio", click.FloatRange(0, 1, max_open=True), "Warm-up share of all steps."),
    ("--weight-decay", "finetune.weight_decay", click.FloatRange(min=0), "AdamW weight decay."),
    ("--optimizer", "finetune.optimizer", click.Choice(["auto", "adamw_8bit", "adamw_torch", "adamw_torch_fused", "sgd"]), "Optimizer (auto = 8-bit AdamW on CUDA)."),
    ("--precision", "finetune.precision", click.Choice(["auto", "bf16", "fp16", "fp32"]), "Training precision."),
    ("--packing", "finetune.packing", click.Choice(["auto", "packed", "padding_free", "off"]), "packed: whole rows fill each micro-batch; padding_free; off = padded (auto = packed with Unsloth on CUDA)."),
    ("--gradient-checkpointing", "finetune.gradient_checkpointing", click.Choice(["auto", "unsloth", "on", "off"]), "Trade speed for memory."),
    ("--seed", "finetune.seed", int, "Seed for rows, LoRA init and data order."),
    ("--logging-steps", "finetune.logging_steps", click.IntRange(min=1), "Log every N steps."),
    ("--save-steps", "finetune.save_steps", click.IntRange(min=0), "Checkpoint every N steps (0 = only on Ctrl+C)."),
    ("--report-to", "finetune.report_to", click.Choice(["none", "wandb", "tensorboard"]), "Also log metrics here."),
    ("--push-to-hub", "finetune.push_to_hub", str, "Push the adapter (and merged model) to USER/REPO."),
]


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _finetune_options(fn):
    for flag, _key, typ, help_text in reversed(FINETUNE_FLAGS):
        fn = click.option(flag, _dest(flag), type=typ, default=None, help=help_text)(fn)
    return fn


def flags_from(params: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for flag, key, _typ, _help in FINETUNE_FLAGS:
        value = params.get(_dest(flag))
        if value is not None:
            flat[key] = value
    if params.get("first") is not None:
        if params.get("samples") is not None:
            raise UsageError("give either --samples N (random) or --first N, not both")
        flat["finetune.samples"] = params["first"]
        flat["finetune.select"] = "first"
    elif params.get("samples") is not None:
        flat["finetune.select"] = "random"
    if params.get("epochs") is not None and params.get("max_steps") is None:
        flat["finetune.max_steps"] = 0
    for param, key in (("rslora", "finetune.use_rslora"), ("merge", "finetune.merge"), ("offline", "offline")):
        if params.get(param) is not None:
            flat[key] = params[param]
    return flat


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--recipe", default=None, help="A bundled recipe (A–E or its name, see `medchat recipes`) or a .toml file.")
@click.option("--name", default=None, help="Adapter name (default: generated, e.g. smollm2-sample-1122-1653).")
@click.option("--first", type=click.IntRange(min=1), default=None, help="Train on the first N rows (the seeds' behaviour).")
@click.option("--rslora/--no-rslora", "rslora", default=None, help="Rank-stabilised LoRA.")
@click.option("--merge/--no-merge", "merge", default=None, help="Also save a merged 16-bit model.")
@click.option("--offline/--online", "offline", default=None, help="Never contact the hub.")
@click.option("--dry-run", is_flag=True, help="Validate and format the data, show lengths and one example; train nothing.")
@click.option("--resume", default=None, metavar="NAME", help="Continue an interrupted run from its last checkpoint.")
@_finetune_options
def finetune(recipe: str | None, name: str | None, dry_run: bool, resume: str | None, **params: Any) -> None:
    """LoRA fine-tune a base model and store the adapter under a name.

    \b
    Examples:
      medchat finetune --model smollm2 --dataset sample --max-steps 30
      medchat finetune --recipe C --samples 500
      medchat finetune --dataset ./rows.jsonl --columns question=q,answer=a --dry-run
    """
    from medchat.finetune.recipes import find_recipe, settings_for
    from medchat.finetune.trainer import run_finetune

    flags = flags_from(params)
    if resume and (flags or recipe or name):
        raise UsageError("--resume NAME continues a run with its recorded settings; give no other options")
    chosen = find_recipe(recipe) if recipe else None
    settings = settings_for(flags, chosen)
    run_finetune(settings, name=name or "", recipe=chosen.name if chosen else "", resume=resume or "",
                 dry=dry_run, say=lambda m: click.echo(f"medchat: {m}", err=True))


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
                                   "final_loss": a.final_loss}))
        return
    if not found:
        click.echo("no adapters yet: create one with `medchat finetune --model smollm2 --dataset sample`")
    else:
        rows = [("NAME", "BASE MODEL", "DATA", "ROWS", "LOSS", "CREATED")]
        for a in sorted(found, key=lambda a: a.created):
            loss = f"{a.final_loss:.3f}" if isinstance(a.final_loss, (int, float)) else "–"
            rows.append((a.name, a.base_model, a.dataset.rsplit("/", 1)[-1] or "–", str(a.rows), loss, a.created[:16]))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        for r in rows:
            click.echo("  ".join(f"{c:<{w}}" for c, w in zip(r, widths)) + "  " + r[-1])
    stale = stale_temporaries()
    if stale:
        click.echo(f"({len(stale)} unfinished save(s) in {stale[0].parent}, not listed)", err=True)


@adapters.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest and report card as JSON.")
def adapters_show(name: str, as_json: bool) -> None:
    """An adapter's manifest: base model, data, settings, losses, report card."""
    from medchat.evaluation.report_card import print_report
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
    if report:
        click.echo("")
        print_report(report)
    elif data.get("eval_indices"):
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


@adapters.command("path")
@click.argument("name", required=False)
def adapters_path(name: str | None) -> None:
    """Print an adapter's folder (or the store's, without NAME)."""
    from medchat.store.adapters import resolve_adapter, store_dir

    click.echo(str(resolve_adapter(name) if name else store_dir()))


@click.command()
@click.argument("name", required=False)
def recipes(name: str | None) -> None:
    """List the bundled recipes (systems A–E) with their settings; NAME shows one recipe's file."""
    from medchat.finetune.recipes import bundled_recipes, find_recipe, flatten

    if name:
        recipe = find_recipe(name)
        click.echo(f"# {recipe.path}")
        click.echo(recipe.path.read_text(encoding="utf-8"), nl=False)
        return
    for recipe in bundled_recipes():
        click.echo(f"{recipe.system}  {recipe.name} — {recipe.title}")
        click.echo(f"   {recipe.notes}")
        settings = ", ".join(f"{k.removeprefix('finetune.')}={v}" for k, v in flatten(recipe.values)
                             if k != "finetune.target_modules")
        click.echo(f"   {settings}")
        click.echo("")
    click.echo("Use one: medchat finetune --recipe C   Copy one: medchat recipes C > mine.toml; "
               "medchat finetune --recipe ./mine.toml")


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
    from medchat.config import load_settings
    from medchat.evaluation.report_card import evaluate_adapter, print_report
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


def register(group: click.Group) -> None:
    for command in (finetune, adapters, recipes, eval_command):
        group.add_command(command)
