"""Conversation history: a small SQLite store in the user data dir (file mode 0600), and exports.

Each turn is saved as it happens (a partial turn too, so nothing is lost on quit or crash) with the
model and adapter that produced it. Reasoning is stored for the user; `medchat.engine.session` never
sends it back to the model. Exports: Markdown (reasoning in a collapsed ``<details>`` block) and JSON.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medchat import paths
from medchat.errors import MedchatError
from medchat.safety import DISCLAIMER, notice_text

SCHEMA_VERSION = 1
_REPLY = """
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    user TEXT NOT NULL,
    reasoning TEXT NOT NULL DEFAULT '',
    answer TEXT NOT NULL DEFAULT '',
    finish_reason TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    adapter TEXT NOT NULL DEFAULT '',
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0,
    reasoning_seconds REAL,
    created REAL NOT NULL,
    PRIMARY KEY (conversation_id, position)
"""  # a turn's columns, shared by the two reply tables
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    adapter TEXT NOT NULL DEFAULT '',
    backend TEXT NOT NULL DEFAULT '',
    system_prompt TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS turns (
{_REPLY});
-- Compare mode: the base model's reply to turn `position` (the turn itself holds the adapter's reply).
CREATE TABLE IF NOT EXISTS base_replies (
{_REPLY});
"""

IN_PROGRESS = "in_progress"  # finish_reason of a turn still generating (or cut by a crash)


@dataclass
class StoredTurn:
    user: str
    reasoning: str = ""
    answer: str = ""
    finish_reason: str = ""
    error: str = ""
    model: str = ""
    adapter: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    seconds: float = 0.0
    reasoning_seconds: float | None = None
    created: float = field(default_factory=time.time)


@dataclass
class ConversationSummary:
    id: int
    title: str
    created: float
    updated: float
    model: str = ""
    adapter: str = ""
    turns: int = 0


@dataclass
class Conversation:
    id: int
    title: str
    created: float
    updated: float
    model: str = ""
    adapter: str = ""
    backend: str = ""
    system_prompt: str = ""
    turns: list[StoredTurn] = field(default_factory=list)
    base_replies: dict[int, StoredTurn] = field(default_factory=dict)  # compare mode: position -> base reply


def title_from(text: str, limit: int = 60) -> str:
    """A one-line title from the first user message."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _create_private_file(path: Path) -> None:
    """Create the database file with mode 0600 before SQLite opens it (SQLite would use the umask)."""
    paths.ensure_private_dir(path.parent)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


class HistoryStore:
    """The conversation database. Use from one thread (the UI thread); every write commits at once."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else paths.history_db()
        try:
            _create_private_file(self.path)
            self._db = sqlite3.connect(self.path, timeout=5.0)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise MedchatError(f"cannot open the history database {self.path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "HistoryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------------
    def new_conversation(
        self, title: str, *, model: str = "", adapter: str = "", backend: str = "", system_prompt: str = ""
    ) -> int:
        now = time.time()
        with self._db:
            cur = self._db.execute(
                "INSERT INTO conversations (title, created, updated, model, adapter, backend, system_prompt)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (title_from(title), now, now, model, adapter, backend, system_prompt),
            )
        return int(cur.lastrowid)

    def save_turn(self, conversation_id: int, position: int, turn: StoredTurn) -> None:
        """Insert or replace turn ``position`` (0-based); later positions are dropped (a regenerate)."""
        row = asdict(turn)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._db:
            for table in ("turns", "base_replies"):
                self._db.execute(
                    f"DELETE FROM {table} WHERE conversation_id = ? AND position > ?", (conversation_id, position)
                )
            self._db.execute(
                f"INSERT OR REPLACE INTO turns (conversation_id, position, {cols}) VALUES (?, ?, {marks})",
                (conversation_id, position, *row.values()),
            )
            self._db.execute(
                "UPDATE conversations SET updated = ?, model = ?, adapter = ? WHERE id = ?",
                (time.time(), turn.model, turn.adapter, conversation_id),
            )

    def save_base_reply(self, conversation_id: int, position: int, turn: StoredTurn) -> None:
        """Compare mode: insert or replace the base model's reply to turn ``position``."""
        row = asdict(turn)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._db:
            self._db.execute(
                f"INSERT OR REPLACE INTO base_replies (conversation_id, position, {cols}) VALUES (?, ?, {marks})",
                (conversation_id, position, *row.values()),
            )
            self._db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (time.time(), conversation_id))

    def rename(self, conversation_id: int, title: str) -> None:
        with self._db:
            self._db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title_from(title), conversation_id))

    def delete(self, conversation_id: int) -> None:
        self._require(conversation_id)
        with self._db:
            self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # -- reading --------------------------------------------------------------------------------
    def list(self, limit: int | None = None) -> list[ConversationSummary]:
        """Conversations, most recently updated first."""
        sql = (
            "SELECT c.*, (SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id) AS n"
            " FROM conversations c ORDER BY c.updated DESC, c.id DESC"
        )
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [
            ConversationSummary(r["id"], r["title"], r["created"], r["updated"], r["model"], r["adapter"], r["n"])
            for r in self._db.execute(sql)
        ]

    def _require(self, conversation_id: int) -> sqlite3.Row:
        row = None
        if -(2**63) <= conversation_id < 2**63:  # SQLite ids are 64-bit: a larger number names none (and overflows)
            row = self._db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise MedchatError(f"no conversation with id {conversation_id} (see `medchat history list`)")
        return row

    def load(self, conversation_id: int) -> Conversation:
        row = self._require(conversation_id)
        turn_fields = [f for f in StoredTurn.__dataclass_fields__]
        turns = [
            StoredTurn(**{k: t[k] for k in turn_fields})
            for t in self._db.execute(
                "SELECT * FROM turns WHERE conversation_id = ? ORDER BY position", (conversation_id,)
            )
        ]
        base_replies = {
            int(t["position"]): StoredTurn(**{k: t[k] for k in turn_fields})
            for t in self._db.execute("SELECT * FROM base_replies WHERE conversation_id = ?", (conversation_id,))
        }
        return Conversation(
            row["id"], row["title"], row["created"], row["updated"], row["model"], row["adapter"],
            row["backend"], row["system_prompt"], turns, base_replies,
        )


# -- conversion from the engine's turns (the engine converts back: engine.session.turns_for_session) ----------------------------------------------------

def stored_from_turn(turn: Any, *, model: str = "", adapter: str = "", finish_reason: str | None = None) -> StoredTurn:
    """A `medchat.engine.session.Turn` (finished or partial) as a row."""
    stats = turn.stats
    return StoredTurn(
        user=turn.user,
        reasoning=turn.reasoning,
        answer=turn.answer,
        finish_reason=finish_reason if finish_reason is not None else (turn.finish_reason or IN_PROGRESS),
        error=turn.error,
        model=model,
        adapter=adapter,
        prompt_tokens=stats.prompt_tokens if stats else 0,
        completion_tokens=stats.completion_tokens if stats else 0,
        reasoning_tokens=stats.reasoning_tokens if stats else 0,
        seconds=stats.seconds if stats else 0.0,
        reasoning_seconds=stats.reasoning_seconds if stats else None,
        created=turn.created,
    )


# -- exports ----------------------------------------------------------------------------------------

_FINISH_NOTES = {
    "length": "The reply was cut off: it reached its token budget.",
    "length_in_reasoning": "The reply was cut off while still reasoning.",
    "cancelled": "Stopped by the user.",
    IN_PROGRESS: "This reply was interrupted before it finished.",
}


def when_text(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def export_markdown(conv: Conversation) -> str:
    """The conversation as Markdown; each reasoning sits in a collapsed ``<details>`` block."""
    out = [f"# {conv.title or 'Conversation'}", ""]
    meta = [f"Conversation {conv.id}", f"started {when_text(conv.created)}"]
    if conv.model:
        meta.append(f"model {conv.model}")
    meta.append(f"adapter {conv.adapter or 'none'}")
    out += [" · ".join(meta), "", f"> {DISCLAIMER}", ""]
    for i, t in enumerate(conv.turns, 1):
        out += [f"## {i}. You", "", t.user.strip(), ""]
        if notice := notice_text(t.user):
            out += ["> **Emergency notice:** " + notice.replace("\n", "\n> "), ""]
        if (base := conv.base_replies.get(i - 1)) is not None:  # compare mode: the base model first
            out += _reply_markdown(base, "base model")
            out += _reply_markdown(t, "adapter")
        else:
            out += _reply_markdown(t)
    return "\n".join(out).rstrip() + "\n"


def _reply_markdown(t: StoredTurn, side: str = "") -> list[str]:
    """One reply (reasoning folded, answer, how it ended) under a heading naming what produced it."""
    out: list[str] = []
    label = "medchat" + (f" · {side}" if side else "")
    if t.model:
        label += f" ({t.model}{' + ' + t.adapter if t.adapter else ''})"
    out += [f"### {label}", ""]
    if t.reasoning.strip():
        summary = "Reasoning"
        if t.reasoning_seconds:
            summary += f" ({t.reasoning_seconds:.0f} s"
            summary += f", {t.reasoning_tokens} tokens)" if t.reasoning_tokens else ")"
        elif t.reasoning_tokens:
            summary += f" ({t.reasoning_tokens} tokens)"
        # A blank line after <summary> lets Markdown inside the block render on GitHub and others.
        out += ["<details>", f"<summary>{summary}</summary>", "", _html_escape(t.reasoning.strip()), "", "</details>", ""]
    if t.answer.strip():
        out += [t.answer.strip(), ""]
    if t.error:
        out += [f"> **Error:** {t.error}", ""]
    elif note := _FINISH_NOTES.get(t.finish_reason):
        out += [f"*{note}*", ""]
    return out


def export_json(conv: Conversation) -> str:
    """The whole conversation, reasoning and per-turn statistics included, as pretty JSON."""
    data = asdict(conv)
    data["format"] = "medchat-conversation"
    data["version"] = SCHEMA_VERSION
    data["disclaimer"] = DISCLAIMER
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def export(conv: Conversation, fmt: str) -> str:
    if fmt in {"md", "markdown"}:
        return export_markdown(conv)
    if fmt == "json":
        return export_json(conv)
    raise MedchatError(f"unknown export format {fmt!r}: use md or json")
