"""Recipes: TOML files that reproduce the seed systems A–E (or a user's own copy).

A recipe holds ordinary settings keys (top-level ``model``, ``quantize``…, and a ``[finetune]`` table),
validated by the same strict merge as the config file, plus a ``[recipe]`` table describing it.
Precedence: defaults < config file < MEDCHAT_* variables < recipe < command-line flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from medchat.config import Settings, load_settings, merge, nest, read_toml
from medchat.errors import ConfigError, UsageError

META_KEYS = {"system", "title", "notes"}


@dataclass(frozen=True)
class Recipe:
    name: str  # file stem, e.g. "c-medical-cot-qwen"
    path: Path
    system: str  # seed letter, "" for a user's recipe without one
    title: str
    notes: str
    values: dict[str, Any]  # settings keys, nested like the config file


def recipes_dir() -> Path:
    return Path(str(resources.files("medchat") / "recipes"))


def read_recipe(path: Path) -> Recipe:
    if not path.is_file():
        raise UsageError(f"recipe file {path} does not exist")
    data = read_toml(path)
    meta = data.pop("recipe", {})
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: 'recipe' must be a table ([recipe])")
    unknown = set(meta) - META_KEYS
    if unknown:
        raise ConfigError(f"{path} [recipe]: unknown key '{sorted(unknown)[0]}' (valid: {', '.join(sorted(META_KEYS))})")
    merge(Settings, Settings(), data, str(path)).validate()  # strict: unknown keys and bad values fail here
    return Recipe(
        name=path.stem,
        path=path,
        system=str(meta.get("system", "")),
        title=str(meta.get("title", path.stem)),
        notes=" ".join(str(meta.get("notes", "")).split()),
        values=data,
    )


def bundled_recipes() -> list[Recipe]:
    return [read_recipe(p) for p in sorted(recipes_dir().glob("*.toml"))]


def find_recipe(name_or_path: str) -> Recipe:
    """A bundled recipe by name or seed letter (``c``, ``C``, ``c-medical-cot-qwen``), or a TOML file."""
    path = Path(name_or_path).expanduser()
    if path.suffix == ".toml" or path.exists() or "/" in name_or_path:
        return read_recipe(path)
    wanted = name_or_path.strip().lower()
    for recipe in bundled_recipes():
        if wanted in (recipe.name.lower(), recipe.system.lower()):
            return recipe
    known = ", ".join(f"{r.system} ({r.name})" for r in bundled_recipes())
    raise UsageError(f"unknown recipe '{name_or_path}' (bundled: {known}; or give a .toml file)")


def settings_for(flags: Mapping[str, Any], recipe: Recipe | None = None) -> Settings:
    """Settings for a fine-tuning run: defaults < file < env < recipe < flags (dotted keys)."""
    settings = load_settings()
    if recipe is not None:
        settings = merge(Settings, settings, recipe.values, str(recipe.path))
    settings = merge(Settings, settings, nest(flags), "command line", from_text=True)
    return settings.validate()


def flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested settings values -> sorted (dotted key, value) pairs, for `medchat recipes`."""
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            out += flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out
