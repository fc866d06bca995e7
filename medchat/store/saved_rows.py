"""Replies kept as training rows: JSONL files of medical-o1 rows (``Question`` / ``Complex_CoT`` /
``Response``) in the data folder, one file per name, readable by the user only.

A row saved again for the same question replaces the earlier one (the user corrected it), so a file
never holds a question twice. Files are rewritten whole and atomically: a crash mid-save leaves the
previous file, never half a row. `medchat finetune --dataset saved` (or ``saved:NAME``, or the path)
trains on one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from medchat import paths
from medchat.errors import DataError, UsageError

DEFAULT_NAME = "saved"
PREFIX = "saved"  # `--dataset saved` / `--dataset saved:NAME`
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Row:
    question: str
    reasoning: str
    answer: str

    def as_json(self) -> dict[str, str]:
        return {"Question": self.question, "Complex_CoT": self.reasoning, "Response": self.answer}


def rows_dir() -> Path:
    return paths.data_dir() / "rows"


def file_for(name: str = DEFAULT_NAME) -> Path:
    """The file that ``name`` (letters, digits, ``.``, ``_``, ``-``; ``.jsonl`` optional) names."""
    name = name.strip().removesuffix(".jsonl")
    if not _NAME.fullmatch(name):
        raise UsageError(f"row file name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    return rows_dir() / f"{name}.jsonl"


def dataset_path(spec: str) -> Path | None:
    """The file a ``--dataset`` value names when it is ``saved`` or ``saved:NAME``; else None."""
    if spec == PREFIX:
        return file_for(DEFAULT_NAME)
    if spec.startswith(PREFIX + ":"):
        return file_for(spec[len(PREFIX) + 1:])
    return None


def _key(question: str) -> str:
    return " ".join(question.split()).casefold()


def read_rows(path: Path) -> list[dict]:
    """The rows of a saved-rows file ([] if there is none yet); a damaged line is named."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{path}: line {n} is not JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {n} is not a JSON object")
        rows.append(row)
    return rows


def save_row(row: Row, name: str = DEFAULT_NAME) -> tuple[Path, int, bool]:
    """Add ``row`` to the file ``name`` (replacing a row with the same question): (file, rows it now
    holds, whether an earlier row was replaced)."""
    for field, value in (("question", row.question), ("reasoning", row.reasoning), ("answer", row.answer)):
        if not value.strip():
            raise UsageError(f"the {field} is empty; a training row needs a question, reasoning and an answer")
    row = Row(row.question.strip(), row.reasoning.strip(), row.answer.strip())
    path = file_for(name)
    rows = read_rows(path)
    key = _key(row.question)
    kept = [r for r in rows if _key(str(r.get("Question", ""))) != key]
    replaced = len(kept) != len(rows)
    kept.append(row.as_json())
    paths.ensure_private_dir(paths.data_dir())
    paths.ensure_private_dir(path.parent)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
    paths.atomic_write_text(path, text, mode=0o600)
    return path, len(kept), replaced


def list_files() -> list[tuple[str, Path, int]]:
    """(name, file, rows) for every saved-rows file, by name."""
    folder = rows_dir()
    if not folder.is_dir():
        return []
    return [(p.stem, p, len(read_rows(p))) for p in sorted(folder.glob("*.jsonl"))]
