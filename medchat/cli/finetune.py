"""`medchat finetune`: parse flags into settings keys, delegate to medchat.finetune, print the result.

Nothing heavy is imported at module level (`medchat --help` stays instant).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from medchat.errors import UsageError

# flag -> (settings key, click type, help). Every one is also a config key under [finetune] (or top level).
FINETUNE_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--model", "model", str, "Base model: a catalogue name (smollm2 works offline), hub id, folder or .gguf."),
    ("--backend", "backend", click.Choice(["auto", "unsloth", "hf"]), "unsloth (CUDA) or hf (transformers + peft)."),
    ("--device", "device", click.Choice(["auto", "cpu", "cuda"]), "Where to train."),
    ("--quantize", "quantize", click.Choice(["auto", "4bit", "none"]), "Load the base in 4-bit (QLoRA)."),
    ("--dtype", "dtype", click.Choice(["auto", "bfloat16", "float16", "float32"]), "Base weight dtype."),
    ("--system", "system_prompt", str, "System prompt (chat-template style; chat uses the same)."),
    ("--dataset", "finetune.dataset", str, "Hub data set id, a .json/.jsonl/.csv/.parquet file, 'sample', or 'saved[:NAME]' (rows kept in the chat)."),
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
    ("--adapter-dtype", "finetune.adapter_dtype", click.Choice(["float32", "float16", "bfloat16"]), "Precision of the saved LoRA weights (16-bit: half the file)."),
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
@click.option("--resume", default=None, metavar="NAME", help="Continue an interrupted run from its last complete checkpoint.")
@click.option("--restart", is_flag=True, help="Discard the unfinished run of --name (or --resume) NAME and start it over.")
@click.option("--gpus", type=click.IntRange(min=1), default=None,
              help="Train on N GPUs of this machine, one process each (starts torchrun; "
                   "same as `torchrun --nproc_per_node N -m medchat finetune ...`).")
@_finetune_options
def finetune(recipe: str | None, name: str | None, dry_run: bool, resume: str | None, restart: bool,
             gpus: int | None, **params: Any) -> None:
    """LoRA fine-tune a base model and store the adapter under a name.

    \b
    Examples:
      medchat finetune --model smollm2 --dataset sample --max-steps 30
      medchat finetune --recipe C --samples 500
      medchat finetune --dataset ./rows.jsonl --columns question=q,answer=a --dry-run
      medchat finetune --recipe A --gpus 2
      medchat finetune --resume smollm2-sample-1122-1653
    """
    from medchat.cli.reports import print_dry_run, print_summary
    from medchat.finetune import run as phases
    from medchat.finetune.recipes import find_recipe, settings_for

    flags = flags_from(params)
    if resume and (flags or recipe or name):
        raise UsageError("--resume NAME continues a run with its recorded settings; give no other options")
    if restart and not (resume or name):
        raise UsageError("--restart discards an unfinished run: name it with --name NAME (new settings) "
                         "or --resume NAME (its recorded settings)")
    chosen = find_recipe(recipe) if recipe else None
    settings = settings_for(flags, chosen)
    if gpus and gpus > 1 and not dry_run:
        from medchat.finetune.distributed import launch

        if resume:
            from medchat.finetune.save import load_run_state

            settings = load_run_state(resume)[0]
        # The same command line, once per GPU (every rank checks the settings again). With --device cpu,
        # N processes on the CPU (gloo): a multi-GPU launch tried out on any machine.
        root = click.get_current_context().find_root()
        launch(gpus, (root.obj or {}).get("argv") or sys.argv[1:], cpu=settings.device == "cpu")
        return
    run = {"name": name or "", "recipe": chosen.name if chosen else "", "resume": resume or "", "restart": restart,
           "say": lambda m: click.echo(f"medchat: {m}", err=True)}
    if dry_run:
        from medchat.finetune.distributed import ranks

        if ranks().main:  # under torchrun, one dry run is enough
            print_dry_run(phases.dry_run(settings, **run))
        return
    trained = phases.run_finetune(settings, **run)
    if trained is not None:  # None: a rank other than 0 of a multi-GPU run
        print_summary(trained.manifest, trained.path)
