"""`medchat chat` (also what bare `medchat` runs): the two-pane Textual chat.

The root group in main.py takes this command's params as its own, so an option added here is on
`medchat` too.
"""

from __future__ import annotations

import click

from medchat.cli.options import generation_options, model_options, offline_option, settings_from


@click.command()
@model_options
@generation_options
@offline_option
@click.option("--no-history", is_flag=True, help="Do not save this session's conversation.")
@click.option("--resume", type=int, default=None, metavar="ID", help="Reopen a saved conversation (see `medchat history list`).")
def chat(no_history: bool, resume: int | None, **params) -> None:
    """Open the two-pane chat (reasoning | answer)."""
    settings = settings_from(params, history=False if no_history else None)
    from medchat.engine.backends import open_backend
    from medchat.finetune.provenance import nearest_rows
    from medchat.ui.app import run_chat  # Textual: only when the chat really opens

    run_chat(settings, open_backend, resume=resume, find_rows=nearest_rows)
