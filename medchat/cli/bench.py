"""`medchat bench`: the command and its table; the measuring is medchat.bench's."""

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

    result = run_bench(settings_from(params), new_tokens=max_new_tokens, train=train, train_steps=train_steps,
                       references=not no_references, as_json=as_json)
    if not as_json:
        print_table(result)


def print_table(result: dict) -> None:
    """A `medchat bench` result (``medchat.bench.run_bench``) as the table the command prints."""
    fig = result["figures"]
    dev = result["device"]
    click.echo(f"device: {dev.get('name', '?')}   model: {result['settings']['model']}"
               f"   decoder: {result.get('backend_info', {}).get('decoder', '?')}")
    click.echo(f"{'measurement':<34}{'TTFT s':>10}{'decode tok/s':>15}{'tokens':>8}")
    names = {"engine": "medchat engine (stream_events)", "generate": "plain model.generate",
             "unsloth": "Unsloth for_inference"}
    for key, label in names.items():
        r = fig.get(key)
        if not r:
            continue
        if "error" in r:
            click.echo(f"{label:<34}  failed: {r['error']}")
            continue
        click.echo(f"{label:<34}{r.get('ttft_s', 0):>10.3f}{r.get('decode_tok_s', 0):>15.1f}"
                   f"{r.get('completion_tokens', 0):>8}")
    click.echo(f"{'medchat --help start-up':<34}{fig['startup_help_s']:>10.3f} s")
    kept = result.get("backend_info", {}).get("adapter_fidelity")
    if kept is not None:
        click.echo(f"{'adapter effect kept (cosine)':<34}{kept:>10.4f}")
    train = fig.get("train")
    if train:
        if "error" in train:
            click.echo(f"training: failed: {train['error']}")
        else:
            click.echo(f"training: {train.get('tokens_per_second')} tok/s non-padding "
                       f"({train.get('steady_tokens_per_second')} after warm-up), peak GPU "
                       f"{train.get('peak_gpu_gib')} GiB, {train.get('steps')} steps, backend {train.get('backend')}")
    for k, v in result["ratios"].items():
        click.echo(f"ratio {k}: {v}x")
