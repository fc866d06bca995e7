"""`medchat config path|show|init`: locate, print or create the config file."""

from __future__ import annotations

import click

from medchat.errors import MedchatError

HEADER = "# medchat configuration. Uncomment a key to change it.\n# Precedence: defaults < this file < MEDCHAT_* variables < flags.\n\n"


@click.group()
def config() -> None:
    """Show, locate or create the config file."""


@config.command("path")
def config_path() -> None:
    """Print the config file's path (MEDCHAT_CONFIG's, when it is set)."""
    import os

    from medchat import paths

    click.echo(os.environ.get("MEDCHAT_CONFIG") or str(paths.config_file()))


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
    try:
        atomic_write_text(path, HEADER + render_toml(Settings(), commented=True))
    except OSError as exc:
        raise MedchatError(f"cannot write {path}: {exc.strerror or exc}") from exc
    click.echo(str(path))
