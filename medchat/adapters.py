"""The adapter store: ``<data>/adapters/<name>/`` holds PEFT files plus ``medchat.json`` (the manifest).

Adapters are written to a temporary sibling folder and renamed into place only when complete, so a
listed adapter is never half-written. Any PEFT adapter folder can also be used by path.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medchat import paths
from medchat.errors import AdapterError

MANIFEST = "medchat.json"
PEFT_CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class AdapterSummary:
    name: str
    path: Path
    base_model: str
    created: str = ""
    dataset: str = ""
    rows: int = 0
    final_loss: float | None = None


def store_dir() -> Path:
    return paths.adapters_dir()


def is_adapter_dir(path: Path) -> bool:
    return (path / PEFT_CONFIG).is_file() and any((path / w).is_file() for w in WEIGHT_FILES)


def resolve_adapter(name_or_path: str) -> Path:
    """A store name or a folder path -> the adapter folder; one clear error if it is not usable."""
    candidate = Path(name_or_path).expanduser()
    looks_like_path = "/" in name_or_path or name_or_path.startswith(".") or candidate.is_absolute()
    if not looks_like_path:
        stored = store_dir() / name_or_path
        if stored.is_dir():
            candidate = stored
        elif not candidate.exists():
            known = ", ".join(a.name for a in list_adapters()) or "none yet"
            raise AdapterError(f"no adapter named '{name_or_path}' (stored adapters: {known})")
    if not candidate.exists():
        raise AdapterError(f"adapter folder {candidate} does not exist")
    if not candidate.is_dir():
        raise AdapterError(f"{candidate} is not a folder; an adapter is a folder with {PEFT_CONFIG}")
    if not (candidate / PEFT_CONFIG).is_file():
        raise AdapterError(f"{candidate} has no {PEFT_CONFIG}: not a LoRA adapter folder")
    if not any((candidate / w).is_file() for w in WEIGHT_FILES):
        raise AdapterError(f"{candidate} has no adapter weights ({WEIGHT_FILES[0]}): incomplete adapter")
    return candidate.resolve()


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{path} is unreadable: {exc}") from exc


def read_manifest(adapter_dir: Path) -> dict[str, Any] | None:
    return read_json(adapter_dir / MANIFEST)


def adapter_base_model(adapter_dir: Path) -> str:
    """The base model an adapter was trained on: the manifest's id, else PEFT's own record."""
    manifest = read_manifest(adapter_dir) or {}
    base = (manifest.get("base_model") or {}) if isinstance(manifest.get("base_model"), dict) else {}
    if base.get("id"):
        return str(base["id"])
    if isinstance(manifest.get("base_model"), str):
        return manifest["base_model"]
    config = read_json(adapter_dir / PEFT_CONFIG) or {}
    return str(config.get("base_model_name_or_path") or "")


def list_adapters() -> list[AdapterSummary]:
    root = store_dir()
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not d.is_dir() or not is_adapter_dir(d):
            continue  # temporary folders of an adapter being written, or debris
        try:
            manifest = read_manifest(d) or {}
            base = adapter_base_model(d)
        except AdapterError:
            manifest, base = {}, "?"
        data = manifest.get("dataset") or {}
        losses = manifest.get("losses") or {}
        out.append(
            AdapterSummary(
                name=d.name,
                path=d,
                base_model=base,
                created=str(manifest.get("created", "")),
                dataset=str(data.get("id", "")) if isinstance(data, dict) else str(data),
                rows=int(data.get("rows_used", 0)) if isinstance(data, dict) else 0,
                final_loss=losses.get("final_train") if isinstance(losses, dict) else None,
            )
        )
    return out
