"""`medchat export`: an adapter merged into its base model (a folder, or one GGUF file with an Ollama
Modelfile), its prompt style as a chat template, or the parity gate on an export made elsewhere."""

from __future__ import annotations

import click

from medchat.cli.options import offline_option


@click.command()
@click.option("--adapter", required=True, help="Adapter to merge: a name from `medchat adapters list`, or a folder.")
@click.option("--merged", "merged_dir", type=click.Path(file_okay=False),
              help="New folder for the merged model (must not exist, or be empty).")
@click.option("--gguf", "gguf_file", type=click.Path(dir_okay=False),
              help="New GGUF file of the merged model (llama.cpp, Ollama, LM Studio); a .Modelfile is written beside it.")
@click.option("--quant", default="f16", show_default=True,
              help="GGUF tensor type: f16, bf16, q8_0 or f32 (q4_k_m and other k-quants: llama-quantize, then --verify).")
@click.option("--verify", "verify_path", type=click.Path(exists=True),
              help="Run the parity gate on an existing GGUF file or merged folder of this adapter.")
@click.option("--chat-template", "template_file", type=click.Path(dir_okay=False),
              help="Write the adapter's prompt style as a Jinja chat template (for vLLM --chat-template).")
@click.option("--model", default="", help="Base model (default: the one the adapter was trained on).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["auto", "bfloat16", "float16", "float32"]), default="auto",
              show_default=True, help="Weights of the merged folder (auto = bfloat16 where supported).")
@offline_option
def export(adapter: str, merged_dir: str | None, gguf_file: str | None, quant: str, verify_path: str | None,
           template_file: str | None, model: str, device: str, dtype: str, offline: bool | None) -> None:
    """Export an adapter for other servers: merged into a 16-bit copy of its base model (--merged), as one
    GGUF file with an Ollama Modelfile (--gguf), or its prompt style as a chat template (--chat-template)
    for serving the adapter with vLLM.

    Every merged or GGUF export passes a parity gate before it is reported: the written model is loaded
    back and must answer a few fixed prompts like the adapter on its base (the same greedy tokens for
    16-bit files; enough token agreement and adapter effect for a quantised one). The figures go into the
    adapter's manifest. --verify runs the same gate on a file made elsewhere (e.g. by llama-quantize).
    """
    from pathlib import Path

    from medchat.config import load_settings
    from medchat.errors import UsageError

    if not (merged_dir or gguf_file or template_file or verify_path):
        raise UsageError("say what to export: --merged DIR, --gguf FILE, --chat-template FILE and/or --verify PATH")
    if template_file:
        from medchat.export.merged import export_chat_template

        click.echo(str(export_chat_template(adapter, Path(template_file))))
    if not (merged_dir or gguf_file or verify_path):
        return
    settings = load_settings()
    offline = settings.offline if offline is None else offline

    def say(msg: str) -> None:
        click.echo(f"medchat: {msg}", err=True)

    common = dict(model=model, device=device, offline=offline, system_prompt=settings.system_prompt, say=say)
    if gguf_file:
        from medchat.export.gguf_export import export_gguf, run_instructions

        out, modelfile, _figures = export_gguf(adapter, Path(gguf_file), quant=quant,
                                               generation=settings.generation, **common)
        for line in run_instructions(out, modelfile, Path(adapter).name):
            say(line)
        click.echo(str(out))
    if merged_dir:
        from medchat.export.merged import export_merged

        click.echo(str(export_merged(adapter, Path(merged_dir), dtype=dtype, **common)))
    if verify_path:
        from medchat.export.gguf_export import verify

        verify(adapter, Path(verify_path), **common)
        click.echo(f"{verify_path}: passed the parity gate")
