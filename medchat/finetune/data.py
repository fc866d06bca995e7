"""Training data: load rows, recognise their shape, turn them into examples, pick the rows to use.

Everything here runs before any model loads, so a bad file costs the user seconds, not a model load.
Loading touches files or the hub; everything after loading is a pure function of the rows.

Row numbers in messages are 1-based positions among the records (for JSONL, blank lines are skipped;
parse errors name the line instead).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from medchat.chatformat.example import Example, predicted_letter
from medchat.chatformat.think import CLOSE, OPEN, split_text
from medchat.errors import DataError, UsageError
from medchat.store import saved_rows

SAMPLE = "sample"
SAMPLE_FILE = "medical_cot_sample.jsonl"
FILE_SUFFIXES = {".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet"}
ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                "bot": "assistant", "model": "assistant", "system": "system"}
_LETTERS = "ABCDEFGHIJ"
_OPTION_LINE = re.compile(r"^\s*\(?([A-J])[.):]\s+(.+?)\s*$", re.M)


@dataclass(frozen=True)
class DataSource:
    """Where the rows came from, as recorded in the adapter manifest."""

    id: str  # 'sample', a file path, or a hub id
    kind: str  # 'sample' | 'file' | 'hub'
    subset: str = ""
    split: str = ""
    revision: str = ""  # sha256 of a file, or the hub data set's fingerprint

    def describe(self) -> str:
        extra = "/".join(p for p in (self.subset, self.split) if p)
        return f"{self.id} ({extra})" if extra and self.kind == "hub" else self.id


@dataclass
class Dataset:
    source: DataSource
    shape: str
    examples: list[Example]


@dataclass(frozen=True)
class Selection:
    """Row indices (0-based, into the loaded rows) to train on and to hold out for evaluation."""

    train: tuple[int, ...]
    eval: tuple[int, ...]
    note: str = ""  # set when fewer rows were available than asked for


# -------------------------------------------------------------------------------------------------
# Loading raw rows

def sample_path() -> Path:
    return Path(str(resources.files("medchat") / "data" / SAMPLE_FILE))


def classify(spec: str) -> str:
    """'sample', 'file' or 'hub' for a ``--dataset`` value; a missing local path is an error."""
    if spec == SAMPLE:
        return SAMPLE
    path = Path(spec).expanduser()
    if path.exists():
        return "file"
    if path.suffix.lower() in FILE_SUFFIXES or spec.startswith((".", "/", "~")):
        raise DataError(f"data file {spec} does not exist")
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", spec):
        raise DataError(f"--dataset {spec!r} is neither a file, 'sample', nor a hub data set id (owner/name)")
    return "hub"


def load_rows(
    spec: str, subset: str = "", split: str = "train", offline: bool = False
) -> tuple[DataSource, list[dict[str, Any]]]:
    """Read every row of a data set as a dict. Raises DataError for anything unusable."""
    if (saved := saved_rows.dataset_path(spec)) is not None:  # `saved` / `saved:NAME`: rows kept in the chat
        if not saved.exists():
            raise DataError(f"no saved rows at {saved}: in the chat, press s on a reply to keep it as a training row")
        spec = str(saved)
    kind = classify(spec)
    if kind == SAMPLE:
        path = sample_path()
        rows = read_file(path)
        return DataSource(SAMPLE, SAMPLE, revision=file_sha256(path)), rows
    if kind == "file":
        path = Path(spec).expanduser()
        rows = read_file(path)
        return DataSource(str(path.resolve()), "file", revision=file_sha256(path)), rows
    return _load_hub(spec, subset, split, offline)


def read_file(path: Path) -> list[dict[str, Any]]:
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a .json, .jsonl, .csv or .parquet file")
    if not path.is_file():  # a FIFO or device: reading it would wait forever
        raise DataError(f"{path} is not a regular file; give a .json, .jsonl, .csv or .parquet file")
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise DataError(f"{path}: unsupported file type '{suffix or '(none)'}' (use .json, .jsonl, .csv or .parquet)")
    try:
        if suffix == ".parquet":
            rows = _read_parquet(path)
        else:
            text = path.read_bytes().decode("utf-8-sig")  # tolerate a byte-order mark
            if suffix in (".csv", ".tsv"):
                rows = _read_csv(text, path, "\t" if suffix == ".tsv" else ",")
            elif suffix == ".json":
                rows = _read_json(text, path)
            else:
                rows = _read_jsonl(text, path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not rows:
        raise DataError(f"{path}: no rows (the file is empty)")
    return rows


def _objects(items: Iterable[Any], path: Path) -> list[dict[str, Any]]:
    out = []
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise DataError(f"{path}: row {i}: expected an object with named fields, got {type(item).__name__}")
        out.append(item)
    return out


def _read_json(text: str, path: Path) -> list[dict[str, Any]]:
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # Many ".json" files are really JSON Lines.
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            return _read_jsonl(text, path)
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    if isinstance(data, dict):
        # {"data": [...]}-style wrappers: exactly one key holding a list of rows.
        lists = [v for v in data.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
        if len(lists) != 1:
            raise DataError(f"{path}: expected a JSON array of rows, got an object with keys {sorted(data)[:6]}")
        data = lists[0]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of rows, got {type(data).__name__}")
    return _objects(data, path)


def _read_jsonl(text: str, path: Path) -> list[dict[str, Any]]:
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {lineno}: not valid JSON ({exc.msg})") from exc
        if not isinstance(item, dict):
            raise DataError(f"{path}: line {lineno}: expected a JSON object, got {type(item).__name__}")
        rows.append(item)
    return rows


def _read_csv(text: str, path: Path, delimiter: str) -> list[dict[str, Any]]:
    if not text.strip():
        return []
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = reader.fieldnames or []
        if not header or all(not (h or "").strip() for h in header):
            raise DataError(f"{path}: no header row")
        rows = []
        for i, row in enumerate(reader, 1):
            if None in row:  # more cells than header columns
                raise DataError(f"{path}: row {i}: more cells than the header has columns")
            rows.append({k.strip(): v for k, v in row.items() if k is not None})
        return rows
    except csv.Error as exc:
        raise DataError(f"{path}: not valid CSV (line {reader.line_num}: {exc})") from exc


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow comes with `datasets`
        raise DataError("reading Parquet needs pyarrow (pip install pyarrow)") from exc
    try:
        return _objects(pq.read_table(path).to_pylist(), path)
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc


def file_sha256(path: Path) -> str:
    """"sha256:<hex>" of a file, as the adapter manifest records a data file's revision."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def _load_hub(spec: str, subset: str, split: str, offline: bool) -> tuple[DataSource, list[dict[str, Any]]]:
    from medchat.models.catalog import hub_host, hub_reachable

    reachable = not offline and hub_reachable()
    if not reachable:
        # Only the local cache can help; say so to `datasets` before it tries the network.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise DataError("loading hub data sets needs the `datasets` package") from exc
    if not reachable:
        datasets.config.HF_HUB_OFFLINE = True
        try:
            import huggingface_hub.constants as hub_constants

            hub_constants.HF_HUB_OFFLINE = True
        except ImportError:  # pragma: no cover
            pass
    datasets.logging.set_verbosity_error()
    try:
        ds = datasets.load_dataset(spec, subset or None, split=split or None)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; all mean "cannot get it"
        where = f"{spec}" + (f" (subset {subset!r}, split {split!r})" if subset or split else "")
        if not reachable:
            why = "offline mode is on" if offline else f"the hub ({hub_host()}) is unreachable"
            raise DataError(
                f"cannot load data set {where}: {why} and it is not in the local cache; "
                "use a local file (--dataset ./rows.jsonl) or --dataset sample"
            ) from exc
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot load data set {where}: {first}") from exc
    if isinstance(ds, Mapping):  # no split given: a DatasetDict
        raise DataError(f"data set {spec} has splits {sorted(ds)}; choose one with --split")
    source = DataSource(spec, "hub", subset, split, revision=str(getattr(ds, "_fingerprint", "") or ""))
    rows = ds.to_list()
    if not rows:
        raise DataError(f"data set {source.describe()} has no rows")
    return source, rows


# -------------------------------------------------------------------------------------------------
# Shapes

def parse_columns(text: str) -> dict[str, str]:
    """``question=Q,reasoning=CoT,answer=A`` -> mapping; ``question`` and ``answer`` are required."""
    mapping: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        role, sep, column = part.partition("=")
        role, column = role.strip().lower(), column.strip()
        if not sep or not column:
            raise UsageError(f"--columns: expected ROLE=COLUMN, got {part!r}")
        if role not in ("question", "reasoning", "answer"):
            raise UsageError(f"--columns: unknown role {role!r} (use question, reasoning, answer)")
        mapping[role] = column
    missing = [r for r in ("question", "answer") if r not in mapping]
    if missing:
        raise UsageError(f"--columns must name {' and '.join(missing)} (e.g. question=prompt,answer=output)")
    return mapping


SHAPES = {
    "medical-o1": "Question / Complex_CoT / Response",
    "alpaca": "instruction / input / output",
    "messages": "messages: [{role, content}, ...]",
    "sharegpt": "conversations: [{from, value}, ...]",
    "columns": "columns named by --columns",
}


def _lower_keys(row: Mapping[str, Any]) -> dict[str, str]:
    return {str(k).lower(): k for k in row}


def _shape_of(row: Mapping[str, Any]) -> str | None:
    keys = _lower_keys(row)
    if "question" in keys and "response" in keys:
        return "medical-o1"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if isinstance(row.get("messages"), list):
        return "messages"
    if isinstance(row.get("conversations"), list):
        return "sharegpt"
    return None


def detect_shape(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str] | None = None) -> str:
    """The shape of a data set, from its first recognisable row (a bad first row is then reported
    with its own number by :func:`to_examples`)."""
    if columns:
        return "columns"
    for row in rows[:20]:
        shape = _shape_of(row)
        if shape:
            return shape
    keys = sorted(map(str, rows[0]))[:8] if rows else []
    expected = "; ".join(SHAPES[s] for s in ("medical-o1", "alpaca", "messages", "sharegpt"))
    raise DataError(
        f"unrecognised row shape: row 1 has keys {keys}; expected {expected}, "
        "or map yours with --columns question=…,reasoning=…,answer=…"
    )


def _get(row: Mapping[str, Any], key: str, n: int, *, required: bool = True, allow_empty: bool = False) -> str:
    """A text field by case-insensitive name; errors name the row and the key."""
    actual = key if key in row else _lower_keys(row).get(key.lower())
    if actual is None:
        if not required:
            return ""
        raise DataError(f"row {n}: missing key '{key}' (row has: {', '.join(map(str, list(row)[:8]))})")
    value = row[actual]
    if value is None:
        if not required or allow_empty:
            return ""
        raise DataError(f"row {n}: key '{actual}' is empty (null)")
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"row {n}: key '{actual}' is {value} (a missing value?), not text")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # A number is no training text: "nan", "1e+100" or a bare 42 would be learnt as an answer.
        raise DataError(f"row {n}: key '{actual}' must be text, got the number {value} "
                        "(write it as a string if it is meant as text)")
    if not isinstance(value, str):
        raise DataError(f"row {n}: key '{actual}' must be text, got {type(value).__name__}")
    if required and not allow_empty and not value.strip():
        raise DataError(f"row {n}: key '{actual}' is empty")
    return value


def _turns(row: Mapping[str, Any], n: int, shape: str) -> Example:
    key, role_key, text_key = ("messages", "role", "content") if shape == "messages" else ("conversations", "from", "value")
    turns = row[key]
    user = assistant = None
    reasoning = ""
    for j, turn in enumerate(turns, 1):
        if not isinstance(turn, Mapping):
            raise DataError(f"row {n}: {key}[{j}] must be an object with '{role_key}' and '{text_key}'")
        role_raw = turn.get(role_key, turn.get("role" if role_key == "from" else "from"))
        text = turn.get(text_key, turn.get("content" if text_key == "value" else "value"))
        if not isinstance(role_raw, str):
            raise DataError(f"row {n}: {key}[{j}] has no '{role_key}'")
        role = ROLE_ALIASES.get(role_raw.lower())
        if role is None:
            raise DataError(f"row {n}: {key}[{j}] has unknown {role_key} {role_raw!r}")
        if not isinstance(text, str):
            raise DataError(f"row {n}: {key}[{j}] '{text_key}' must be text")
        if role == "user" and user is None:
            user = text
        elif role == "assistant" and user is not None and assistant is None:
            assistant = text  # the first exchange is the training example
            extra = turn.get("reasoning_content") or turn.get("reasoning") or turn.get("thinking")
            reasoning = extra if isinstance(extra, str) else ""
    if not user or not user.strip():
        raise DataError(f"row {n}: {key} has no user message")
    if assistant is None or not assistant.strip():
        raise DataError(f"row {n}: {key} has no assistant reply after the first user message")
    think, answer, _closed = split_text(assistant)
    answer = answer.strip()
    if not answer:
        raise DataError(f"row {n}: the assistant reply has reasoning but no answer after </think>")
    return Example(user.strip(), (reasoning or think).strip(), answer)


def to_example(row: Mapping[str, Any], shape: str, n: int, columns: Mapping[str, str] | None = None) -> Example:
    """One row -> Example; ``n`` is the 1-based row number used in errors."""
    if shape == "medical-o1":
        ex = Example(_get(row, "Question", n).strip(), _get(row, "Complex_CoT", n).strip(), _get(row, "Response", n).strip())
    elif shape == "alpaca":
        instruction = _get(row, "instruction", n).strip()
        extra = _get(row, "input", n, required=False).strip()
        question = f"{instruction}\n\n{extra}" if extra else instruction
        ex = Example(question, "", _get(row, "output", n).strip())
    elif shape in ("messages", "sharegpt"):
        ex = _turns(row, n, shape)
    elif shape == "columns":
        assert columns
        reasoning = _get(row, columns["reasoning"], n, allow_empty=True).strip() if "reasoning" in columns else ""
        ex = Example(_get(row, columns["question"], n).strip(), reasoning, _get(row, columns["answer"], n).strip())
    else:  # pragma: no cover - shapes come from detect_shape
        raise ValueError(shape)
    options, gold = multiple_choice(row, ex)
    return Example(ex.question, ex.reasoning, ex.answer, options, gold) if options else ex


def to_examples(rows: Sequence[Mapping[str, Any]], shape: str, columns: Mapping[str, str] | None = None) -> list[Example]:
    return [to_example(row, shape, i, columns) for i, row in enumerate(rows, 1)]


def load_dataset(
    spec: str, *, subset: str = "", split: str = "train", columns: str = "", offline: bool = False
) -> Dataset:
    """Load, recognise and validate every row: the whole data layer before any model loads."""
    mapping = parse_columns(columns) if columns.strip() else None
    source, rows = load_rows(spec, subset, split, offline)
    shape = detect_shape(rows, mapping)
    try:
        examples = to_examples(rows, shape, mapping)
    except DataError as exc:
        raise DataError(f"{source.describe()}: {exc}") from None
    return Dataset(source, shape, examples)


# -------------------------------------------------------------------------------------------------
# Multiple choice (for the report card's accuracy)

def multiple_choice(row: Mapping[str, Any], ex: Example) -> tuple[tuple[tuple[str, str], ...], str]:
    """Options and gold letter of a multiple-choice row, from explicit fields (MedQA-style ``options`` +
    ``answer_idx``) or from "A. …" lines in the question and an answer that starts with the letter."""
    options: list[tuple[str, str]] = []
    raw = row.get("options", row.get("choices"))
    if isinstance(raw, Mapping):
        options = [(str(k).strip().upper(), str(v)) for k, v in raw.items()]
    elif isinstance(raw, list) and all(isinstance(v, str) for v in raw):
        options = list(zip(_LETTERS, raw))
    if not options:
        found = _OPTION_LINE.findall(ex.question)
        letters = [f[0] for f in found]
        if len(found) >= 2 and letters == list(_LETTERS[: len(letters)]):
            options = found
    if len(options) < 2:
        return (), ""
    letters = {k for k, _ in options}
    gold = ""
    for key in ("answer_idx", "gold", "correct", "label"):
        value = row.get(key)
        if isinstance(value, str) and value.strip().upper() in letters:
            gold = value.strip().upper()
            break
    if not gold:
        gold = predicted_letter(ex.answer, tuple(options))
    return (tuple(options), gold) if gold else ((), "")


# -------------------------------------------------------------------------------------------------
# Row selection

def select_rows(
    total: int,
    *,
    samples: int = 0,
    fraction: float = 0.0,
    first: bool = False,
    eval_rows: int = 0,
    seed: int = 3407,
    prefer_eval: Sequence[int] = (),
) -> Selection:
    """Held-out rows are picked first (seeded, from the rows not taken by ``first``), so they can
    never be trained on; then ``samples`` (or ``fraction``) training rows from the rest.

    ``prefer_eval`` (multiple-choice rows) fill up to half of the held-out rows, so the report card
    can measure accuracy even when such rows are rare."""
    if total <= 0:
        raise DataError("the data set has no rows")
    rng = random.Random(seed)
    want = round(total * fraction) if fraction > 0 else samples
    notes = []
    if fraction > 0 and want == 0:  # a share that rounds to no row still means few rows, not "all of them"
        want = 1
        notes.append(f"--fraction {fraction:g} of {total} rows rounds to none; training on 1 row")
    if eval_rows >= total:
        raise DataError(f"--eval-rows {eval_rows} leaves no rows to train on (the data set has {total})")
    def hold_out(candidates: list[int]) -> list[int]:
        preferred = set(prefer_eval)
        rng.shuffle(candidates)
        favoured = [i for i in candidates if i in preferred][: (eval_rows + 1) // 2]
        others = [i for i in candidates if i not in set(favoured)]
        return (favoured + others)[:eval_rows]

    if first:
        limit = want if want > 0 else total - eval_rows
        limit = min(limit, total - eval_rows)
        train = list(range(limit))
        held = sorted(hold_out(list(range(limit, total))))
    else:
        held = sorted(hold_out(list(range(total))))
        taken = set(held)
        pool = [i for i in range(total) if i not in taken]
        rng.shuffle(pool)
        train = sorted(pool[:want]) if want > 0 else pool
    if want > len(train):
        notes.append(f"asked for {want} training rows but only {len(train)} are left after holding out {eval_rows}")
    if not train:
        raise DataError("no rows left to train on")
    return Selection(tuple(train), tuple(held), "; ".join(notes))


# -------------------------------------------------------------------------------------------------
# Formatting (pure, given a tokenizer)

@dataclass(frozen=True)
class Formatted:
    prompt: str
    completion: str


def format_examples(
    tokenizer: Any, style: str, system_prompt: str, examples: Sequence[Example]
) -> list[Formatted]:
    """Each example as (prompt, completion) text, built by the same code chat uses for its prompts."""
    from medchat.chatformat.prompt import format_example

    return [
        Formatted(*format_example(tokenizer, style, system_prompt, ex.question, ex.reasoning, ex.answer))
        for ex in examples
    ]


def distribution(values: Sequence[int]) -> dict[str, int]:
    if not values:
        return {}
    s = sorted(values)

    def pct(p: float) -> int:
        return s[min(len(s) - 1, int(round(p * (len(s) - 1))))]

    return {"min": s[0], "p50": pct(0.5), "p90": pct(0.9), "max": s[-1], "mean": round(sum(s) / len(s))}


def render_check(
    tokenizer: Any,
    style: str,
    system_prompt: str,
    example: Example,
    max_len: int,
    encode: Callable[[str], list[int]] | None = None,
) -> dict[str, Any]:
    """Render one row the way training will and the way chat will; refuse to train if they disagree.

    Checks: the training prompt equals the chat prompt; the prompt's tokens are a prefix of the
    prompt+completion tokens (so the loss starts exactly where generation starts); the completion opens
    reasoning only when the prompt did not pre-fill ``<think>``; completion tokens remain after
    truncation. Returns facts for the manifest and ``--dry-run``.
    """
    from medchat.chatformat.messages import Message
    from medchat.chatformat.prompt import format_example, get_style, opens_in_reasoning, render_prompt

    prompt, completion = format_example(tokenizer, style, system_prompt, example.question, example.reasoning, example.answer)
    messages = [Message("system", system_prompt)] if system_prompt else []
    messages.append(Message("user", example.question.strip()))
    chat_prompt = render_prompt(tokenizer, messages, style)
    if prompt != chat_prompt:
        diff = next((i for i, (a, b) in enumerate(zip(prompt, chat_prompt)) if a != b), min(len(prompt), len(chat_prompt)))
        raise DataError(
            f"training and chat prompts differ at character {diff}: training {prompt[diff:diff + 40]!r} vs "
            f"chat {chat_prompt[diff:diff + 40]!r}; refusing to train a format chat will not use"
        )
    encode = encode or (lambda text: tokenizer(text, add_special_tokens=False)["input_ids"])
    prompt_ids = encode(prompt)
    full_ids = encode(prompt + completion)
    common = 0
    for a, b in zip(prompt_ids, full_ids):
        if a != b:
            break
        common += 1
    if common < len(prompt_ids):
        tail = tokenizer.decode(prompt_ids[common:])
        raise DataError(
            f"the prompt's last tokens {tail!r} merge with the completion when tokenized together, so the "
            "trained target would not start where generation starts; try another --prompt-style"
        )
    plain = get_style(style)
    reasoning = plain.reasoning if plain is not None else True
    prefilled = opens_in_reasoning(prompt)
    if reasoning and (prefilled == completion.lstrip().startswith(OPEN)):
        raise DataError("the completion must open <think> exactly when the prompt does not pre-fill it")
    if reasoning and CLOSE not in completion:
        raise DataError("the completion has no closing </think>: the model would never learn to answer")
    trained = min(len(full_ids), max_len) - len(prompt_ids)
    if trained <= 0:
        raise DataError(
            f"no completion tokens remain: the prompt alone is {len(prompt_ids)} tokens and --max-seq-length is {max_len}"
        )
    return {
        "prompt_tokens": len(prompt_ids),
        "completion_tokens": len(full_ids) - len(prompt_ids),
        "prefills_think": prefilled,
        "prompt": prompt,
        "completion": completion,
    }


def template_hash(tokenizer: Any, style: str) -> str:
    """Identifies the prompt format an adapter was trained with (chat template text or style name)."""
    from medchat.chatformat.prompt import CHAT_TEMPLATE, PROMPT_STYLES

    if style == CHAT_TEMPLATE:
        text = getattr(tokenizer, "chat_template", None) or ""
    else:
        s = PROMPT_STYLES[style]
        text = s.preamble + s.question + s.response + str(s.think_prefill)
    return "sha256:" + hashlib.sha256(str(text).encode("utf-8")).hexdigest()[:16]

