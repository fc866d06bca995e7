"""The `medchat` command line: the root group, the registration of every command, and `main()`.

Each command lives in its own module (cli/chat.py, ask.py, ...). Nothing here imports torch,
transformers or textual at module level: `medchat --help` stays instant.
"""

from __future__ import annotations

import os
import sys

import click
from click.core import ParameterSource

from medchat import __version__
from medchat.cli.adapters import adapters
from medchat.cli.ask import ask
from medchat.cli.bench import bench
from medchat.cli.chat import chat
from medchat.cli.config import config
from medchat.cli.data import data
from medchat.cli.eval import eval_command
from medchat.cli.export import export
from medchat.cli.finetune import finetune
from medchat.cli.history import history
from medchat.cli.models import models, pull
from medchat.cli.recipes import recipes
from medchat.cli.serve import serve
from medchat.errors import MedchatError

# Bare `medchat` is `medchat chat`: the group takes the chat command's own parameters (a copy of the
# list, the same objects), so an option added to `chat` is on `medchat` too and cannot drift.


@click.group(invoke_without_command=True, params=list(chat.params),
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="medchat")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, **chat_params) -> None:
    """Chat with a medical reasoning model, and fine-tune it with LoRA.

    Run without a command to open the chat (same as `medchat chat`, with the same options).
    medchat gives medical information, not medical advice.
    """
    if debug:
        os.environ["MEDCHAT_DEBUG"] = "1"
    if ctx.invoked_subcommand is None:
        ctx.invoke(chat, **chat_params)
        return
    # `medchat --model X ask ...` would run `ask` without X: refuse rather than ignore it.
    given = [p for p in chat.params if ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE]
    if given:
        flag = given[0].opts[-1]
        raise click.UsageError(
            f"{flag} before '{ctx.invoked_subcommand}' is a chat option; put it after the command "
            f"(medchat {ctx.invoked_subcommand} {flag} ...)", ctx=ctx)


for _command in (chat, ask, models, pull, config, history, data, serve, export, bench,
                 finetune, adapters, recipes, eval_command):
    cli.add_command(_command)


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit code."""
    debug = "--debug" in (argv or sys.argv) or os.environ.get("MEDCHAT_DEBUG") == "1"
    # torch's OpenMP threads otherwise spin while they wait for work: on a CPU shared with other jobs a
    # spinning thread holds a core the others need, and CPU decoding and training slow down many times
    # (benchmarks/RESULTS.md §3c). Read once, when torch loads (after this); a user's setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # obj["argv"]: `finetune --gpus N` runs the same command line once per GPU.
        cli.main(args=argv, prog_name="medchat", standalone_mode=False, obj={"argv": argv})
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
        from medchat.finetune.distributed import error_prefix, quiet_on_this_rank

        # Under a multi-GPU launch rank 0 reports what every rank meets alike; others name their rank.
        if str(exc) and not quiet_on_this_rank(exc):
            click.echo(f"medchat: error: {error_prefix()}{exc}", err=True)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)
