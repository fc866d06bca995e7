"""Where did this answer come from: the training rows of an adapter closest to one of its replies.

The adapter's manifest records its data set (a file's path, or ``sample``), the file's sha256 and the
indices of the rows it trained on. Those rows are read again and indexed with BM25+ (``rank_bm25``;
its idf stays positive however few rows there are, unlike plain BM25's; word tokens, no model, no network), once per adapter and data file revision in a process; a reply's
reasoning and answer are the query. Each match also gets an overlap: the share of the reply's word
3-grams found in the row, so near-verbatim repetition of a training row reads as a number close to 1.

When the data file is gone, has changed since training (its hash differs), or was a hub data set
that is not on this disk, the result says so instead of matching against the wrong rows.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from medchat.chatformat.example import Example
from medchat.errors import MedchatError
from medchat.finetune import data as D
from medchat.store import adapters as adapter_store
from medchat.store.manifest import Manifest, read_manifest

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Match:
    row: int  # index of the row in the data file (as the manifest's train_indices count)
    example: Example
    score: float  # BM25+ score of the row for the reply (higher = closer; not bounded)
    overlap: float  # share of the reply's word 3-grams that the row contains (0..1)


@dataclass
class Provenance:
    adapter: str
    data: str = ""  # the data set as recorded ("sample", a path, a hub id)
    rows_trained: int = 0
    problem: str = ""  # why no rows can be shown (unrecorded, gone, changed); "" when they can
    matches: list[Match] = field(default_factory=list)


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _shingles(tokens: list[str], n: int = 3) -> set[tuple[str, ...]]:
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def overlap(reply: str, row_text: str) -> float:
    """Share of the reply's word 3-grams that appear in the row (1.0: the reply is all in the row)."""
    mine = _shingles(words(reply))
    return len(mine & _shingles(words(row_text))) / len(mine) if mine else 0.0


def _row_text(ex: Example) -> str:
    return "\n".join((ex.question, ex.reasoning, ex.answer))


class RowIndex:
    """BM25 over the rows an adapter trained on (built once; see `index_for`)."""

    def __init__(self, rows: list[tuple[int, Example]]) -> None:
        from rank_bm25 import BM25Plus

        self.rows = rows
        # BM25 divides by the corpus' mean length: an empty row must still count as a document.
        self.bm25 = BM25Plus([words(_row_text(ex)) or ["\0"] for _, ex in rows])

    def nearest(self, reply: str, k: int = 3) -> list[Match]:
        query = words(reply)
        if not query or not self.rows:
            return []
        scores = self.bm25.get_scores(query)
        best = sorted(range(len(self.rows)), key=lambda i: -scores[i])[:k]
        matches = [
            Match(self.rows[i][0], self.rows[i][1], float(scores[i]), overlap(reply, _row_text(self.rows[i][1])))
            for i in best
        ]
        return sorted(matches, key=lambda m: (-m.score, -m.overlap))


@functools.lru_cache(maxsize=4)
def _cached_index(spec: str, revision: str, columns: str, indices: tuple[int, ...], subset: str,
                  split: str) -> RowIndex:
    dataset = D.load_dataset(spec, subset=subset, split=split, columns=columns, offline=True)
    if indices and max(indices) >= len(dataset.examples):
        raise MedchatError(f"{spec} has {len(dataset.examples)} rows, fewer than the adapter trained on")
    return RowIndex([(i, dataset.examples[i]) for i in indices])


def _where_rows_are(manifest: Manifest) -> tuple[str, Path | None]:
    """(spec to load, the local file to hash, if any) for the recorded data set."""
    ds = manifest.dataset
    if ds.kind == D.SAMPLE:
        return D.SAMPLE, D.sample_path()
    if ds.kind == "file":
        return ds.id, Path(ds.id)
    return ds.id, None  # a hub data set: only its local cache can hold it


def index_for(adapter: str) -> tuple[Provenance, RowIndex | None]:
    """The provenance record of ``adapter`` (a name or folder) and its rows' index, or the reason
    there is none (``Provenance.problem``)."""
    path = adapter_store.resolve_adapter(adapter)
    record = Provenance(adapter=path.name)
    manifest = read_manifest(path)
    if manifest is None or not manifest.dataset.train_indices or not manifest.dataset.id:
        record.problem = "its manifest does not record which rows it was trained on"
        return record, None
    ds = manifest.dataset
    record.data, record.rows_trained = ds.id, len(ds.train_indices)
    spec, local = _where_rows_are(manifest)
    if local is not None:
        if not local.is_file():
            record.problem = f"its data file {local} is gone"
            return record, None
        if ds.revision and D.file_sha256(local) != ds.revision:
            record.problem = f"its data file {local} has changed since training (its hash differs)"
            return record, None
    columns = manifest.finetune_setting("columns", "") or ""
    try:
        index = _cached_index(spec, ds.revision, str(columns), tuple(ds.train_indices), ds.subset, ds.split or "train")
    except MedchatError as exc:
        what = "the hub data set" if local is None else "its data file"
        record.problem = f"{what} {ds.id} cannot be read here: {exc}"
        return record, None
    return record, index


def nearest_rows(adapter: str, reasoning: str, answer: str, k: int = 3) -> Provenance:
    """The ``k`` training rows of ``adapter`` closest to a reply (its reasoning and answer)."""
    record, index = index_for(adapter)
    if index is not None:
        record.matches = index.nearest("\n".join((reasoning, answer)), k)
    return record
