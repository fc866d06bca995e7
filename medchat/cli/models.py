"""`medchat models` (the catalogue, and what is cached) and `medchat pull`."""

from __future__ import annotations

import click


@click.command()
def models() -> None:
    """List the model catalogue and what is cached locally."""
    print_catalogue()


@click.command()
@click.argument("name", default="smollm2")
def pull(name: str) -> None:
    """Download a catalogue model into the cache (default: the embedded smollm2)."""
    from medchat.models.catalog import pull as pull_model

    path = pull_model(name, progress=lambda msg: click.echo(msg, err=True))
    click.echo(str(path))


def print_catalogue() -> None:
    """The catalogue as a table: name, size, whether it is cached (usable offline), hub id and description."""
    from medchat.models.catalog import AUTO_CPU, AUTO_CUDA, EMBEDDED, catalogue_status

    rows = [("NAME", "SIZE", "CACHED", "HUB ID / DESCRIPTION")]
    for entry, cached in catalogue_status():
        rows.append((entry.name, entry.size, "yes" if cached else "no", f"{entry.hub_id} — {entry.description}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        click.echo(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    click.echo(f"\nauto = {AUTO_CUDA} on CUDA, {AUTO_CPU} on CPU; falls back to {EMBEDDED} when not cached and offline.")
