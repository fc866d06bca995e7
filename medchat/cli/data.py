"""`medchat data path|list`: where the training rows kept in the chat are, and what they hold."""

from __future__ import annotations

import click


@click.group()
def data() -> None:
    """Training rows kept from the chat (press s on a reply): where they are, how many."""


@data.command("path")
@click.argument("name", required=False)
def data_path(name: str | None) -> None:
    """Print the folder of kept rows, or the file NAME (train on it: --dataset saved:NAME)."""
    from medchat.store import saved_rows

    click.echo(str(saved_rows.file_for(name) if name else saved_rows.rows_dir()))


@data.command("list")
def data_list() -> None:
    """Each file of kept rows: name, rows, path."""
    from medchat.store import saved_rows

    files = saved_rows.list_files()
    if not files:
        click.echo("no rows kept yet: in the chat, press s on a reply", err=True)
    for name, path, count in files:
        click.echo(f"{name}\t{count}\t{path}")
