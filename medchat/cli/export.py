"""`medchat export`: an adapter merged into its base model, or its prompt style as a chat template."""

from __future__ import annotations

import click

from medchat.cli.options import offline_option


@click.command()
@click.option("--adapter", required=True, help="Adapter to merge: a name from `medchat adapters list`, or a folder.")
@click.option("--merged", "merged_dir", type=click.Path(file_okay=False),
              help="New folder for the merged model (must not exist, or be empty).")
@click.option("--chat-template", "template_file", type=click.Path(dir_okay=False),
              help="Write the adapter's prompt style as a Jinja chat template (for vLLM --chat-template).")
@click.option("--model", default="", help="Base model (default: the one the adapter was trained on).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["auto", "bfloat16", "float16", "float32"]), default="auto",
              show_default=True, help="Weights of the merged model (auto = bfloat16 where supported).")
@offline_option
def export(adapter: str, merged_dir: str | None, template_file: str | None, model: str, device: str, dtype: str,
           offline: bool | None) -> None:
    """Export an adapter for other servers: merged into a 16-bit copy of its base model (--merged), or
    its prompt style as a chat template (--chat-template) for serving the adapter with vLLM."""
    from pathlib import Path

    from medchat.config import load_settings
    from medchat.errors import UsageError
    from medchat.export.merged import export_chat_template, export_merged

    if not merged_dir and not template_file:
        raise UsageError("say what to export: --merged DIR and/or --chat-template FILE")
    if template_file:
        click.echo(str(export_chat_template(adapter, Path(template_file))))
    if not merged_dir:
        return
    offline = load_settings().offline if offline is None else offline
    out = export_merged(adapter, Path(merged_dir), model=model, device=device, dtype=dtype, offline=offline,
                        say=lambda msg: click.echo(f"medchat: {msg}", err=True))
    click.echo(str(out))
