"""`medchat bench`: the command only; the measuring is medchat.bench's."""

from __future__ import annotations

import click

from medchat.cli.options import model_options, offline_option, settings_from


@click.command()
@model_options
@offline_option
@click.option("--max-new-tokens", type=click.IntRange(min=2), default=256, show_default=True,
              help="Tokens per timed (greedy) reply.")
@click.option("--train", is_flag=True, help="Also time `medchat finetune` on generated medical-o1-shaped rows.")
@click.option("--train-steps", type=click.IntRange(min=2), default=6, show_default=True, help="Steps for --train.")
@click.option("--no-references", is_flag=True, help="Skip the plain generate / Unsloth comparisons.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def bench(max_new_tokens: int, train: bool, train_steps: int, no_references: bool, as_json: bool, **params) -> None:
    """Measure speed here: the chat engine vs plain generate (and Unsloth on CUDA), start-up, training."""
    from medchat.bench import run_bench

    run_bench(settings_from(params), new_tokens=max_new_tokens, train=train, train_steps=train_steps,
              references=not no_references, as_json=as_json)
