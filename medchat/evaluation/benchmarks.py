"""Benchmark readers: rows of a public medical benchmark -> evaluation items, recognised by their keys.

Shapes (lm-evaluation-harness style: each is a reader and a prompt; scoring is shared):

* ``medqa``      question, options {A..D or A..E}, answer_idx (answer, meta_info … ignored)
* ``medmcqa``    question, opa..opd, cop. The original release (JSON lines from the MedMCQA GitHub)
                 numbers cop 1-4; the hub copy (openlifescienceai/medmcqa) numbers it 0-3 and marks
                 the test split's unknown answers -1. The convention is read from the values (a 0
                 means 0-3, a 4 means 1-4); when neither occurs, local files are taken as 1-4 and hub
                 data as 0-3, and the report says which was assumed.
* ``pubmedqa``   PQA-L's ori_pqal.json: one object keyed by PMID, each with QUESTION, CONTEXTS and
                 final_decision (yes/no/maybe); ``labels`` (PMID -> decision) may supply the gold.
* ``mmlu``       question, choices [..], answer (index, or a letter)
* ``medical-o1`` Question / Response rows that carry options + answer_idx (HuatuoGPT-o1's MCQ rows)

A row without a gold answer is skipped and counted, never guessed; a malformed row is an error
naming the row and the key.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from medchat.chatformat.example import Example
from medchat.errors import DataError

LETTERS = "ABCDEFGHIJ"
DECISIONS = ("yes", "no", "maybe")
MCQ_INSTRUCTION = "Answer with the letter of the correct option."
YESNO_INSTRUCTION = "Answer yes, no or maybe."
SHAPES = {
    "medqa": "question, options {A..}, answer_idx",
    "medmcqa": "question, opa..opd, cop",
    "pubmedqa": "{PMID: {QUESTION, CONTEXTS, final_decision}}",
    "mmlu": "question, choices [..], answer",
    "medical-o1": "Question, Response, options, answer_idx",
}


@dataclass(frozen=True)
class Item:
    """One evaluation question. ``gold`` is a letter (multiple choice) or yes/no/maybe."""

    id: str
    question: str  # the question alone (compared for contamination)
    prompt: str  # what the model is asked: question, options or context, the answer instruction
    gold: str
    options: tuple[tuple[str, str], ...] = ()
    kind: str = "mcq"  # "mcq" or "yesno"; "open" for held-out rows without a gold answer

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.options) if self.kind == "mcq" else DECISIONS


@dataclass
class Benchmark:
    name: str  # the spec as given
    shape: str
    items: list[Item]
    skipped: int = 0  # rows with no gold answer
    notes: list[str] = field(default_factory=list)  # conventions assumed (MedMCQA's cop)
    digest: str = ""  # sha256 of the file, or the hub data set's fingerprint
    split: str = ""


def mcq_prompt(question: str, options: Sequence[tuple[str, str]]) -> str:
    lines = [question.strip(), ""] + [f"{k}. {str(v).strip()}" for k, v in options] + ["", MCQ_INSTRUCTION]
    return "\n".join(lines)


def yesno_prompt(question: str, context: str) -> str:
    return f"Context: {context.strip()}\n\nQuestion: {question.strip()}\n\n{YESNO_INSTRUCTION}"


# -------------------------------------------------------------------------------------------------
# Shape detection

def _keys(row: Mapping[str, Any]) -> set[str]:
    return {str(k).lower() for k in row}


def shape_of(row: Mapping[str, Any]) -> str | None:
    keys = _keys(row)
    if {"question", "response"} <= keys and "options" in keys:
        return "medical-o1"
    if {"question", "options"} <= keys and ("answer_idx" in keys or "answer" in keys):
        return "medqa"
    if {"question", "opa", "opb"} <= keys:
        return "medmcqa"
    if {"question", "choices", "answer"} <= keys:
        return "mmlu"
    if {"question", "contexts"} <= keys:
        return "pubmedqa"
    return None


def detect_shape(rows: Sequence[Mapping[str, Any]], source: str) -> str:
    for row in rows[:20]:
        shape = shape_of(row)
        if shape:
            return shape
    keys = sorted(map(str, rows[0]))[:8] if rows else []
    known = "; ".join(f"{k} ({v})" for k, v in SHAPES.items())
    raise DataError(f"{source}: unrecognised benchmark shape: row 1 has keys {keys}; expected one of {known}")


# -------------------------------------------------------------------------------------------------
# Reading

def pubmedqa_rows(data: Any) -> list[dict[str, Any]] | None:
    """PQA-L's one-object-keyed-by-PMID layout as rows (with a ``pmid`` key), or None if not that."""
    if not isinstance(data, dict) or not data:
        return None
    if not all(isinstance(v, dict) for v in data.values()):
        return None
    first = next(iter(data.values()))
    if "QUESTION" not in first and "question" not in first:
        return None
    return [{"pmid": str(k), **v} for k, v in data.items()]


def read_labels(path: Path) -> dict[str, str]:
    """A PubMedQA ground-truth file: a JSON object PMID -> yes/no/maybe."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"labels file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object PMID -> yes/no/maybe, got {type(data).__name__}")
    out = {}
    for pmid, value in data.items():
        if isinstance(value, dict):  # {"PMID": {"final_decision": ...}} also accepted
            value = value.get("final_decision", value.get("answer"))
        if not isinstance(value, str) or value.strip().lower() not in DECISIONS:
            raise DataError(f"{path}: PMID {pmid}: expected yes, no or maybe, got {value!r}")
        out[str(pmid)] = value.strip().lower()
    return out


def _text(row: Mapping[str, Any], key: str, n: int, source: str, required: bool = True) -> str:
    actual = next((k for k in row if str(k).lower() == key.lower()), None)
    value = row.get(actual) if actual is not None else None
    if value is None:
        if required:
            raise DataError(f"{source}: row {n}: missing key '{key}' (row has: {', '.join(map(str, list(row)[:8]))})")
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise DataError(f"{source}: row {n}: key '{actual}' must be text, got {type(value).__name__}")
    if required and not value.strip():
        raise DataError(f"{source}: row {n}: key '{actual}' is empty")
    return value


def _get(row: Mapping[str, Any], key: str) -> Any:
    actual = next((k for k in row if str(k).lower() == key.lower()), None)
    return row.get(actual) if actual is not None else None


def _options(row: Mapping[str, Any], key: str, n: int, source: str) -> list[tuple[str, str]]:
    raw = _get(row, key)
    if isinstance(raw, str):  # some exports store the options object as a JSON string
        try:
            raw = json.loads(raw)
        except ValueError:
            pass
    if isinstance(raw, Mapping):
        options = [(str(k).strip().upper(), str(v)) for k, v in raw.items()]
    elif isinstance(raw, list) and all(isinstance(v, (str, int, float)) for v in raw):
        options = [(LETTERS[i], str(v)) for i, v in enumerate(raw[: len(LETTERS)])]
    elif isinstance(raw, list) and all(isinstance(v, Mapping) and "key" in v for v in raw):
        options = [(str(v["key"]).strip().upper(), str(v.get("value", ""))) for v in raw]  # bigbio style
    else:
        raise DataError(f"{source}: row {n}: key '{key}' must be an object {{A: …, B: …}} or a list of options")
    if len(options) < 2:
        raise DataError(f"{source}: row {n}: key '{key}' has fewer than two options")
    return options


def _cop_base(rows: Sequence[Mapping[str, Any]], source_kind: str) -> tuple[int, str]:
    values = set()
    for row in rows:
        v = _get(row, "cop")
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            v = int(v.strip())
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            values.add(v)
    if 0 in values and 4 in values:
        raise DataError("MedMCQA 'cop' values run from 0 to 4: neither the 0-3 nor the 1-4 convention")
    if 0 in values:
        return 0, "MedMCQA cop read as 0-3 (a 0 occurs)"
    if 4 in values:
        return 1, "MedMCQA cop read as 1-4 (a 4 occurs)"
    if source_kind == "hub":
        return 0, "MedMCQA cop assumed 0-3 (hub copy's convention; no 0 or 4 among these rows)"
    return 1, "MedMCQA cop assumed 1-4 (the original release's convention; no 0 or 4 among these rows)"


def to_items(rows: Sequence[Mapping[str, Any]], shape: str, source: str, *, source_kind: str = "file",
             labels: Mapping[str, str] | None = None) -> Benchmark:
    """Rows of one shape -> items; rows with no gold answer are skipped and counted."""
    items: list[Item] = []
    skipped = 0
    notes: list[str] = []
    base = 1
    if shape == "medmcqa":
        base, note = _cop_base(rows, source_kind)
        notes.append(note)
    for n, row in enumerate(rows, 1):
        if not isinstance(row, Mapping):
            raise DataError(f"{source}: row {n}: expected an object with named fields")
        item = _item(row, shape, n, source, base, labels)
        if item is None:
            skipped += 1
        else:
            items.append(item)
    if labels is not None and shape == "pubmedqa":
        notes.append(f"gold answers from the labels file ({len(labels)} PMIDs)")
    return Benchmark(source, shape, items, skipped, notes)


def _item(row: Mapping[str, Any], shape: str, n: int, source: str, cop_base: int,
          labels: Mapping[str, str] | None) -> Item | None:
    rid = str(_get(row, "id") or _get(row, "pmid") or n)
    if shape == "pubmedqa":
        question = _text(row, "QUESTION", n, source)
        contexts = _get(row, "CONTEXTS")
        if isinstance(contexts, Mapping) and "contexts" in contexts:  # the hub copy nests them
            contexts = contexts["contexts"]
        if isinstance(contexts, str):
            contexts = [contexts]
        if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
            raise DataError(f"{source}: row {n}: key 'CONTEXTS' must be a list of texts")
        gold = labels.get(rid) if labels is not None else _get(row, "final_decision")
        if not isinstance(gold, str) or gold.strip().lower() not in DECISIONS:
            if gold not in (None, ""):
                raise DataError(f"{source}: row {n}: key 'final_decision' must be yes, no or maybe, got {gold!r}")
            return None
        return Item(rid, question, yesno_prompt(question, " ".join(contexts)), gold.strip().lower(), kind="yesno")
    if shape == "medmcqa":
        question = _text(row, "question", n, source)
        options = [(LETTERS[i], _text(row, f"op{c}", n, source, required=False)) for i, c in enumerate("abcd")]
        options = [(k, v) for k, v in options if v.strip()] if not all(v.strip() for _, v in options) else options
        cop = _get(row, "cop")
        if isinstance(cop, str) and cop.strip().upper() in LETTERS[:4]:  # some copies give the letter
            gold = cop.strip().upper()
        else:
            try:
                index = int(cop) - cop_base if cop is not None and str(cop).strip() != "" else -1
            except (TypeError, ValueError):
                raise DataError(f"{source}: row {n}: key 'cop' must be an option number, got {cop!r}") from None
            if index < 0:
                return None  # -1 / missing: the test split's hidden answers
            if index > 3:
                raise DataError(f"{source}: row {n}: key 'cop' is {cop}, outside the four options")
            gold = LETTERS[index]
        return Item(rid, question, mcq_prompt(question, options), gold, tuple(options))
    if shape == "mmlu":
        question = _text(row, "question", n, source)
        options = _options(row, "choices", n, source)
        answer = _get(row, "answer")
        gold = _gold_from(answer, options)
        if gold is None:
            if answer in (None, "", -1):
                return None
            raise DataError(f"{source}: row {n}: key 'answer' {answer!r} is not an option index or letter")
        return Item(rid, question, mcq_prompt(question, options), gold, tuple(options))
    # medqa and medical-o1: options + answer_idx
    if shape == "medical-o1" and _get(row, "options") in (None, "", [], {}):
        return None  # an open-ended reasoning row: no gold letter to score
    question = _text(row, "question", n, source)
    options = _options(row, "options", n, source)
    letters = [k for k, _ in options]
    raw = _get(row, "answer_idx")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        answer = _get(row, "answer")  # fall back to an answer text equal to one option's text
        match = [k for k, v in options if isinstance(answer, str) and v.strip() == answer.strip()]
        if len(match) != 1:
            return None
        gold = match[0]
    else:
        gold = str(raw).strip().upper()
        if gold not in letters:
            raise DataError(f"{source}: row {n}: key 'answer_idx' is {raw!r}, not one of the options {letters}")
    return Item(rid, question, mcq_prompt(question, options), gold, tuple(options))


def _gold_from(answer: Any, options: Sequence[tuple[str, str]]) -> str | None:
    letters = [k for k, _ in options]
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int) and 0 <= answer < len(letters):
        return letters[answer]
    if isinstance(answer, str):
        a = answer.strip()
        if a.isdigit() and int(a) < len(letters):
            return letters[int(a)]
        if a.upper() in letters:
            return a.upper()
    return None


def heldout_items(examples: Sequence[Example], indices: Sequence[int]) -> list[Item]:
    """The adapter's own held-out rows. Multiple-choice rows are scored; the others (``open``) are
    still generated, for the reasoning measures, but have no accuracy."""
    out = []
    for i, ex in zip(indices, examples):
        if ex.options and ex.gold:
            listed = all(text.strip() in ex.question for _, text in ex.options)  # options already in the text
            prompt = ex.question if listed else mcq_prompt(ex.question, ex.options)
            out.append(Item(str(i), ex.question, prompt, ex.gold, ex.options))
        else:
            out.append(Item(str(i), ex.question, ex.question, "", kind="open"))
    return out


def sample(items: Sequence[Item], rows: int | None, seed: int) -> list[Item]:
    """A seeded sample of ``rows`` items, in file order (all of them when ``rows`` is None)."""
    if rows is None or rows >= len(items):
        return list(items)
    chosen = sorted(random.Random(seed).sample(range(len(items)), rows))
    return [items[i] for i in chosen]
