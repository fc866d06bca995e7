"""Unfinished runs (``<data>/runs/<name>/``): which checkpoint to resume from, and who uses the run.

Trainer writes a checkpoint file by file (adapter, optimizer, scheduler, RNG, trainer state) and then
deletes the oldest one; a kill in between leaves a folder named like a checkpoint that cannot be resumed
from. So each checkpoint gets a marker, written last, listing its files and their sizes: a checkpoint
counts only if its marker is there and every file it lists still has that size. Resuming takes the newest
complete checkpoint (or starts at step 0) and removes the incomplete ones.

A run folder holds ``run.json`` (what ``--resume`` needs; a run exists exactly when it does) and a lock
held by the process training it, so two processes never train, resume or discard one run together.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from medchat import paths
from medchat.errors import UsageError

MARKER = "medchat-checkpoint.json"
RUN_STATE = "run.json"
LOCK = "run.lock"
PREFIX = "checkpoint-"


def step_of(folder: Path) -> int | None:
    tail = folder.name[len(PREFIX):]
    return int(tail) if folder.name.startswith(PREFIX) and tail.isdigit() else None


def mark_complete(folder: Path, info: dict[str, Any]) -> None:
    """Record that ``folder`` (a checkpoint Trainer has finished writing) is complete."""
    files = {str(f.relative_to(folder)): f.stat().st_size for f in sorted(folder.rglob("*"))
             if f.is_file() and f.name != MARKER and not f.name.startswith(".")}
    paths.atomic_write_text(folder / MARKER, json.dumps({**info, "files": files}, indent=2) + "\n")


def read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def is_complete(folder: Path) -> bool:
    marker = read_marker(folder)
    if marker is None or not marker["files"]:
        return False
    for name, size in marker["files"].items():
        try:
            if (folder / name).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def checkpoints(run_dir: Path) -> list[Path]:
    """Every folder named like a checkpoint, complete or not, oldest step first."""
    found = [p for p in run_dir.glob(PREFIX + "*") if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p) or 0)


def last_complete(run_dir: Path) -> Path | None:
    """The newest checkpoint that can be resumed from; None means start at step 0."""
    done = [p for p in checkpoints(run_dir) if is_complete(p)]
    return done[-1] if done else None


def drop_incomplete(run_dir: Path) -> list[Path]:
    """Remove checkpoints a kill left half-written (or half-deleted); returns them."""
    dropped = [p for p in checkpoints(run_dir) if not is_complete(p)]
    for folder in dropped:
        shutil.rmtree(folder, ignore_errors=True)
    return dropped


def exists(run_dir: Path) -> bool:
    """An unfinished run that `--resume` can continue."""
    return (run_dir / RUN_STATE).is_file()


@contextmanager
def hold(run_dir: Path, name: str) -> Iterator[None]:
    """Use the run alone: one clear line if another process trains, resumes or discards it now.

    Under a multi-process launcher (torchrun), rank 0 holds it for all ranks."""
    from filelock import FileLock, Timeout

    paths.ensure_private_dir(run_dir)
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    lock = FileLock(str(run_dir / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UsageError(f"run '{name}' is in use by another medchat process; wait for it or stop it") from None
    try:
        yield
    finally:
        try:  # a run that never got as far as run.json leaves no folder behind
            if run_dir.is_dir() and [p.name for p in run_dir.iterdir()] == [LOCK]:
                (run_dir / LOCK).unlink()
                run_dir.rmdir()
        except OSError:
            pass
        lock.release()


def clear(run_dir: Path) -> None:
    """Discard a run's state and checkpoints (`--restart`); the caller holds its lock."""
    (run_dir / RUN_STATE).unlink(missing_ok=True)  # first: from here on the run is no longer resumable
    for entry in run_dir.iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def finish(run_dir: Path) -> None:
    """Remove a run whose adapter is stored (run.json first, so a kill midway leaves no resumable half)."""
    (run_dir / RUN_STATE).unlink(missing_ok=True)
    shutil.rmtree(run_dir, ignore_errors=True)
