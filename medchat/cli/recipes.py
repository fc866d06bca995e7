"""`medchat recipes [NAME]`: the bundled recipes (systems A–E), listed or printed to copy."""

from __future__ import annotations

import click


@click.command()
@click.argument("name", required=False)
def recipes(name: str | None) -> None:
    """List the bundled recipes (systems A–E) with their settings; NAME shows one recipe's file."""
    from medchat.finetune.recipes import bundled_recipes, find_recipe, flatten

    if name:
        recipe = find_recipe(name)
        click.echo(f"# {recipe.path}")
        click.echo(recipe.path.read_text(encoding="utf-8"), nl=False)
        return
    for recipe in bundled_recipes():
        click.echo(f"{recipe.system}  {recipe.name} — {recipe.title}")
        click.echo(f"   {recipe.notes}")
        settings = ", ".join(f"{k.removeprefix('finetune.')}={v}" for k, v in flatten(recipe.values)
                             if k != "finetune.target_modules")
        click.echo(f"   {settings}")
        click.echo("")
    click.echo("Use one: medchat finetune --recipe C   Copy one: medchat recipes C > mine.toml; "
               "medchat finetune --recipe ./mine.toml")
