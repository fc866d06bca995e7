"""`medchat history list|export|rm`: the conversations the chat saved."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from medchat.errors import MedchatError

if TYPE_CHECKING:
    from medchat.store.history import ConversationSummary


@click.group()
def history() -> None:
    """List, export or delete saved conversations (the chat saves them unless --no-history)."""


@history.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most this many.")
def history_list(limit: int | None) -> None:
    """List conversations, most recent first: id, last update, turns, model, title."""
    from medchat.store.history import HistoryStore

    with HistoryStore() as store:
        conversations = store.list(limit)
    if not conversations:
        click.echo("no saved conversations yet", err=True)
    for c in conversations:
        click.echo("\t".join(row(c)))


def row(c: "ConversationSummary") -> tuple[str, ...]:
    """One tab-separated line of `history list`: id, updated, turns, model(+adapter), title."""
    from medchat.store.history import when_text

    model = c.model + (f" + {c.adapter}" if c.adapter else "")
    return (str(c.id), when_text(c.updated), str(c.turns), model, c.title)


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
        folder = Path(output).expanduser().parent
        if not folder.is_dir():  # a mistyped folder is more likely than a wish to create one
            raise MedchatError(f"cannot write {output}: the folder {folder} does not exist (create it first)")
        try:
            atomic_write_text(Path(output).expanduser(), text)
        except OSError as exc:
            raise MedchatError(f"cannot write {output}: {exc.strerror or exc}") from exc
    else:
        click.echo(text, nl=False)


@history.command("rm")
@click.argument("conversation_id", type=int)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def history_rm(conversation_id: int, yes: bool) -> None:
    """Delete a conversation (asks first, like `adapters rm`)."""
    from medchat.store.history import HistoryStore

    with HistoryStore() as store:
        title = store.load(conversation_id).title  # an unknown id fails here, before the question
        if not yes and not click.confirm(f"delete conversation {conversation_id} ({title!r})?", default=False, err=True):
            raise click.exceptions.Exit(1)
        store.delete(conversation_id)
    click.echo(f"deleted conversation {conversation_id}")
