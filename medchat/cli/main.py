"""The `medchat` command line. Commands are thin: parse, load settings, delegate.

Nothing here imports torch, transformers or textual at module level: `medchat --help` stays instant.
"""

from __future__ import annotations

import os
import sys

import click

from medchat import __version__
from medchat.errors import MedchatError
from medchat.cli.options import generation_options, local_model_options, model_options, offline_option, settings_from


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="medchat")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@model_options
@generation_options
@offline_option
@click.option("--no-history", is_flag=True, help="Do not save this session's conversation.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, no_history: bool, **params) -> None:
    """Chat with a medical reasoning model, and fine-tune it with LoRA.

    Run without a command to open the chat (same as `medchat chat`).
    medchat gives medical information, not medical advice.
    """
    if debug:
        os.environ["MEDCHAT_DEBUG"] = "1"
    if ctx.invoked_subcommand is None:
        ctx.invoke(chat, no_history=no_history, **params)


@cli.command()
@model_options
@generation_options
@offline_option
@click.option("--no-history", is_flag=True, help="Do not save this session's conversation.")
@click.option("--resume", type=int, default=None, metavar="ID", help="Reopen a saved conversation (see `medchat history list`).")
def chat(no_history: bool, resume: int | None, **params) -> None:
    """Open the two-pane chat (reasoning | answer)."""
    settings = settings_from(params, history=False if no_history else None)
    from medchat.ui.app import run_chat

    run_chat(settings, resume=resume)


@cli.command()
@click.argument("question")
@model_options
@generation_options
@offline_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of streaming text.")
@click.option("--no-reasoning", is_flag=True, help="Hide the reasoning; print the answer only.")
def ask(question: str, as_json: bool, no_reasoning: bool, **params) -> None:
    """Ask one question: reasoning streams to stderr, the answer to stdout.

    QUESTION may be '-' to read it from standard input.
    """
    from medchat.cli.ask import run_ask

    if question == "-":
        question = sys.stdin.read()
    settings = settings_from(params)
    run_ask(settings, question, as_json=as_json, show_reasoning=not no_reasoning)


@cli.command()
def models() -> None:
    """List the model catalogue and what is cached locally."""
    from medchat.models.catalog import print_catalogue

    print_catalogue()


@cli.command()
@click.argument("name", default="smollm2")
def pull(name: str) -> None:
    """Download a catalogue model into the cache (default: the embedded smollm2)."""
    from medchat.models.catalog import pull as pull_model

    path = pull_model(name, progress=lambda msg: click.echo(msg, err=True))
    click.echo(str(path))


@cli.group()
def config() -> None:
    """Show, locate or create the config file."""


@config.command("path")
def config_path() -> None:
    """Print the config file's path."""
    from medchat import paths

    click.echo(str(paths.config_file()))


@config.command("show")
def config_show() -> None:
    """Print the effective settings (defaults < file < MEDCHAT_* env) as TOML."""
    from medchat.config import load_settings, render_toml

    click.echo(render_toml(load_settings()), nl=False)


@config.command("init")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def config_init(force: bool) -> None:
    """Write a commented config file with every key and its default."""
    from medchat import paths
    from medchat.config import Settings, render_toml
    from medchat.paths import atomic_write_text

    path = paths.config_file()
    if path.exists() and not force:
        raise MedchatError(f"{path} already exists (use --force to overwrite)")
    header = "# medchat configuration. Uncomment a key to change it.\n# Precedence: defaults < this file < MEDCHAT_* variables < flags.\n\n"
    try:
        atomic_write_text(path, header + render_toml(Settings(), commented=True))
    except OSError as exc:
        raise MedchatError(f"cannot write {path}: {exc.strerror or exc}") from exc
    click.echo(str(path))


@cli.group()
def history() -> None:
    """List, export or delete saved conversations (the chat saves them unless --no-history)."""


@history.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most this many.")
def history_list(limit: int | None) -> None:
    """List conversations, most recent first: id, last update, turns, model, title."""
    from medchat.store.history import HistoryStore, iter_rows

    with HistoryStore() as store:
        rows = list(iter_rows(store, limit))
    if not rows:
        click.echo("no saved conversations yet", err=True)
    for row in rows:
        click.echo("\t".join(row))


@history.command("export")
@click.argument("conversation_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to this file instead of stdout.")
def history_export(conversation_id: int, fmt: str, output: str | None) -> None:
    """Export a conversation as Markdown (reasoning in collapsed <details>) or JSON."""
    from pathlib import Path

    from medchat.paths import atomic_write_text
    from medchat.store.history import HistoryStore, export

    with HistoryStore() as store:
        text = export(store.load(conversation_id), fmt)
    if output:
        try:
            atomic_write_text(Path(output), text)
        except OSError as exc:
            raise MedchatError(f"cannot write {output}: {exc.strerror or exc}") from exc
    else:
        click.echo(text, nl=False)


@history.command("rm")
@click.argument("conversation_id", type=int)
def history_rm(conversation_id: int) -> None:
    """Delete a conversation."""
    from medchat.store.history import HistoryStore

    with HistoryStore() as store:
        store.delete(conversation_id)


@cli.command()
@local_model_options
@generation_options
@offline_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. 0.0.0.0 opens the server to your network: add --api-key.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0 = any free one).")
@click.option("--api-key", default=None, help="Require 'Authorization: Bearer KEY' on /v1 requests.")
@click.option("--served-model-name", default="", help="Model id clients send (default: the adapter's name, else the model's).")
@click.option("--max-queue", type=click.IntRange(min=1), default=64, show_default=True,
              help="Most requests waiting for the model; more get HTTP 503.")
@click.option("--log-requests", is_flag=True, help="Print one line per request to stderr.")
def serve(host: str, port: int, api_key: str | None, served_model_name: str, max_queue: int,
          log_requests: bool, **params) -> None:
    """Serve the model over an OpenAI-compatible API: /v1/chat/completions, /v1/models, /health.

    Streamed deltas carry the reasoning in `reasoning_content` and the answer in `content` (like vLLM's
    deepseek_r1 reasoning parser). Requests take turns on the one loaded model. Ctrl+C stops.
    """
    from medchat.server.run import run_serve

    settings = settings_from(params, api_key=api_key)
    run_serve(settings, host=host, port=port, served_name=served_model_name, max_queue=max_queue,
              log_requests=log_requests)


@cli.command()
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


@cli.command()
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


# Fine-tuning's commands, one module each: cli/finetune.py, adapters.py, recipes.py, eval.py.
from medchat.cli import adapters as _adapters, eval as _eval, finetune as _finetune, recipes as _recipes  # noqa: E402

for _command in (_finetune.finetune, _adapters.adapters, _recipes.recipes, _eval.eval_command):
    cli.add_command(_command)


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit code."""
    debug = "--debug" in (argv or sys.argv) or os.environ.get("MEDCHAT_DEBUG") == "1"
    try:
        cli.main(args=argv, prog_name="medchat", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except _NO_ARGS_IS_HELP as exc:  # a command group run bare (`medchat config`): show its help
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        # One line like every other user error, not click's three-line usage block.
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        message = " ".join(exc.format_message().split())
        click.echo(f"medchat: error: {message}{hint}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        if debug:
            raise
        click.echo("medchat: interrupted", err=True)
        sys.exit(130)
    except MedchatError as exc:
        if debug:
            raise
        click.echo(f"medchat: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)
