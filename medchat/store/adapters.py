"""The adapter store: ``<data>/adapters/<name>/`` holds PEFT files plus ``medchat.json`` (the manifest).

Adapters are written to a temporary sibling folder and renamed into place only when complete, so a
listed adapter is never half-written. Any PEFT adapter folder can also be used by path.

medchat also ships adapters inside the package (``medchat/data/adapters/``): read-only, found by name
after the user's own (a stored adapter of the same name wins). ``DEMO_ADAPTER`` is the one the embedded
model gets when no adapter is asked for; ``--adapter none`` (``NO_ADAPTER``) means the bare model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medchat import paths
from medchat.errors import AdapterError
from medchat.store.manifest import Manifest, read_manifest

PEFT_CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NO_ADAPTER = "none"  # `--adapter none`: the bare base model, even where a default adapter applies
DEMO_ADAPTER = "smollm2-think-demo"  # bundled; the embedded model's default (see `default_adapter`)
DEMO_NOTICE = (
    "The embedded model runs with the bundled demo adapter smollm2-think-demo: it shows the <think> reasoning "
    "format on a 135M model trained on 71 sample rows. It demonstrates the format, not medical knowledge; "
    "its answers are not reliable. `--adapter none` gives the bare model."
)


@dataclass(frozen=True)
class AdapterSummary:
    name: str
    path: Path
    base_model: str
    created: str = ""
    dataset: str = ""
    rows: int = 0
    final_loss: float | None = None
    latest_eval: str = ""  # the latest `medchat eval` figures, one short line
    bundled: bool = False  # shipped inside medchat (read-only)


def store_dir() -> Path:
    return paths.adapters_dir()


def bundled_dir() -> Path:
    """Adapters shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "data" / "adapters"


def bundled_adapter(name: str) -> Path | None:
    """The folder of a bundled adapter named ``name``, or None."""
    path = bundled_dir() / name
    return path if NAME_RE.match(name) and is_adapter_dir(path) else None


def default_adapter(requested: str, base_id: str, embedded_id: str) -> str:
    """The adapter to load: the one asked for; none for ``none``; with nothing asked for, the demo adapter
    when the base is the embedded model (and the demo is installed), else none ("")."""
    if requested.strip().lower() == NO_ADAPTER:
        return ""
    if requested:
        return requested
    if base_id == embedded_id and bundled_adapter(DEMO_ADAPTER) is not None:
        return DEMO_ADAPTER
    return ""


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
        elif (shipped := bundled_adapter(name_or_path)) is not None:
            candidate = shipped
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


def adapter_base_model(adapter_dir: Path) -> str:
    """The base model an adapter was trained on: the manifest's id, else PEFT's own record."""
    manifest = read_manifest(adapter_dir)
    if manifest is not None and manifest.base_model.id:
        return manifest.base_model.id
    config = read_json(adapter_dir / PEFT_CONFIG) or {}
    return str(config.get("base_model_name_or_path") or "")


def list_adapters() -> list[AdapterSummary]:
    """The user's stored adapters, then the bundled ones that no stored adapter shadows."""
    root = store_dir()
    mine = sorted(root.iterdir()) if root.is_dir() else []
    names = {d.name for d in mine}
    shipped = [d for d in sorted(bundled_dir().iterdir()) if d.name not in names] if bundled_dir().is_dir() else []
    out = []
    for d in mine + shipped:
        if d.name.startswith(".") or not d.is_dir() or not is_adapter_dir(d):
            continue  # temporary folders of an adapter being written, or debris
        try:
            manifest = read_manifest(d) or Manifest()
            base = adapter_base_model(d)
        except AdapterError:
            manifest, base = Manifest(), "?"
        out.append(
            AdapterSummary(
                name=d.name,
                path=d,
                base_model=base,
                created=manifest.created,
                dataset=manifest.dataset.id,
                rows=manifest.dataset.rows_used,
                final_loss=manifest.losses.final_train,
                latest_eval=latest_eval_line(manifest),
                bundled=d in shipped,
            )
        )
    return out


def latest_eval_line(manifest: Manifest) -> str:
    """``medqa.jsonl 41%→48% (p=0.03) n=500``: the latest evaluation, for lists and pickers."""
    if not manifest.evaluations:
        return ""
    ev = manifest.evaluations[-1]
    base, tuned = ev.get("base") or {}, ev.get("adapter") or {}

    def pct(v: Any) -> str:
        return "–" if v is None else f"{100 * v:.0f}%"

    name = str(ev.get("benchmark_name") or ev.get("benchmark"))
    p = (ev.get("paired") or {}).get("mcnemar_p")
    return (f"{pct(base.get('accuracy'))}→{pct(tuned.get('accuracy'))} {name} n={ev.get('rows')}"
            + (f" p={p:.2g}" if isinstance(p, (int, float)) else ""))


# -------------------------------------------------------------------------------------------------
# Write side: only `medchat finetune` creates adapters; a half-written one is never listed.

REPORT = "report.json"


def validate_name(name: str) -> str:
    if name.lower() == NO_ADAPTER:
        raise AdapterError(f"'{name}' is reserved: `--adapter {NO_ADAPTER}` means the bare base model")
    if not NAME_RE.match(name):
        raise AdapterError(
            f"adapter name {name!r} is not allowed: use letters, digits, '.', '_' or '-' (at most 64, "
            "starting with a letter or digit)"
        )
    return name


def begin_save(name: str) -> Path:
    """A private temporary sibling folder ``.tmp-<name>-*`` in the store to write an adapter into.

    The folder holds a lock for as long as this process writes it, so `clean_stale` (run here first, and
    by `medchat adapters clean`) removes only the leftovers of saves whose process is gone.
    """
    import tempfile

    validate_name(name)
    root = paths.ensure_private_dir(store_dir())
    clean_stale()
    if (root / name).exists():
        raise AdapterError(f"an adapter named '{name}' already exists (choose another --name or `medchat adapters rm {name}`)")
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{name}-"))
    _hold(tmp)
    return tmp


def commit_save(tmp: Path, name: str) -> Path:
    """Move a complete adapter folder into place under ``name`` (atomic rename on one filesystem)."""
    import os

    if not is_adapter_dir(tmp):
        raise AdapterError(f"refusing to store an incomplete adapter (no {PEFT_CONFIG} or weights in {tmp})")
    target = store_dir() / name
    if target.exists():
        raise AdapterError(f"an adapter named '{name}' appeared while training; the new one is kept at {tmp}")
    os.chmod(tmp, 0o700)
    # The lock file stays out of the adapter; unlinking it touches the folder, which then counts as
    # fresh (in use) for STALE_AFTER, longer than the rename takes.
    _release(tmp, unlink=True)
    os.replace(tmp, target)
    return target


def abort_save(tmp: Path) -> None:
    import shutil

    _release(tmp)
    shutil.rmtree(tmp, ignore_errors=True)


# -------------------------------------------------------------------------------------------------
# Leftovers: `.tmp-*` folders of saves killed before their rename, `.rm-*` of interrupted deletes.

SAVE_LOCK = ".medchat-save.lock"
STALE_AFTER = 600.0  # seconds: a leftover without a lock file (older releases) counts as stale after this
_held: dict[str, Any] = {}  # temporary folder -> the FileLock this process holds on it


def _hold(tmp: Path) -> None:
    from filelock import FileLock

    lock = FileLock(str(tmp / SAVE_LOCK), timeout=0)
    lock.acquire()
    _held[str(tmp)] = lock


def _release(tmp: Path, unlink: bool = False) -> None:
    lock = _held.pop(str(tmp), None)
    if unlink:
        (tmp / SAVE_LOCK).unlink(missing_ok=True)
    if lock is not None:
        lock.release()


def in_use(leftover: Path) -> bool:
    """Whether a running medchat still writes this temporary folder (its lock is held)."""
    import time

    from filelock import FileLock, Timeout

    if str(leftover) in _held:
        return True
    lock_file = leftover / SAVE_LOCK
    if not lock_file.is_file():
        # A save being created (lock not yet taken) or committed (lock just removed), a delete (`.rm-*`)
        # under way, or a leftover of an older release: in use until it is old.
        try:
            return time.time() - leftover.stat().st_mtime < STALE_AFTER
        except FileNotFoundError:
            return False
    probe = FileLock(str(lock_file), timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return True
    except OSError:
        return False  # gone meanwhile
    probe.release()
    return False


def stale_temporaries() -> list[Path]:
    """Leftovers of interrupted saves or deletes (never listed as adapters), in use or not."""
    root = store_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith((".tmp-", ".rm-")))


def clean_stale() -> list[tuple[Path, int]]:
    """Delete the leftovers no running medchat uses; returns (folder, bytes freed) for each."""
    import shutil

    removed = []
    for leftover in stale_temporaries():
        if in_use(leftover):
            continue
        size = sum(f.stat().st_size for f in leftover.rglob("*") if f.is_file() and not f.is_symlink())
        shutil.rmtree(leftover, ignore_errors=True)
        if not leftover.exists():
            removed.append((leftover, size))
    return removed


def write_report(adapter_dir: Path, report: dict[str, Any]) -> None:
    from medchat.paths import atomic_write_text

    atomic_write_text(adapter_dir / REPORT, json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")


def read_report(adapter_dir: Path) -> dict[str, Any] | None:
    return read_json(adapter_dir / REPORT)


def stored_adapter(name: str) -> Path:
    """A stored adapter's folder by name (not a path), even if incomplete, for `rm` and `path`."""
    validate_name(name)
    target = store_dir() / name
    if not target.is_dir() and bundled_adapter(name) is not None:
        raise AdapterError(f"'{name}' is bundled with medchat and read-only (`medchat adapters show {name}`; "
                           f"`--adapter {NO_ADAPTER}` runs without it)")
    if not target.is_dir():
        known = ", ".join(a.name for a in list_adapters()) or "none yet"
        raise AdapterError(f"no adapter named '{name}' (stored adapters: {known})")
    return target


def remove_adapter(name: str) -> Path:
    """Delete a stored adapter: renamed aside first, so a crash mid-delete leaves no listed half."""
    import os
    import shutil
    import tempfile

    target = stored_adapter(name)
    trash = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".rm-{name}-"))
    os.replace(target, trash / name)
    shutil.rmtree(trash, ignore_errors=True)
    return target
