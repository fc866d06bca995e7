"""Strict answer extraction: the choice a reply makes, read from its *answer* only (never its reasoning).

Accepted forms: the answer is just the letter ("B", "(B)", "**B.**"), starts with it ("B. Flumazenil",
"B) …", "B - …"), says "answer is B" / "Answer: B" / "option B" / "\\boxed{B}", or is exactly one
option's text. Yes/no/maybe the same way ("Yes.", "The answer is maybe"). Every form found must agree:
two different letters is a failure, as is none. There is no fuzzy or best-of-several fallback: a reply
without a readable answer is an extraction failure, scored wrong and reported as its own rate.
"""

from __future__ import annotations

import re
from typing import Sequence

_MARK = r"[\s*_\"'`]*"  # markdown emphasis and quotes around a letter
_ONLY_LETTER = re.compile(rf"^{_MARK}[\(\[]?{_MARK}([A-J]){_MARK}[\)\]]?{_MARK}[.:]?{_MARK}$")
_LEADING = re.compile(rf"^{_MARK}[\(\[]?([A-J])(?:[\)\]]|[.:](?!\d)|\s+[-–—])")
_STATED = re.compile(
    r"(?i:\b(?:answer|option|choice)\b(?:\s+(?:is|would\s+be|=))?\s*[:\-–—]?\s*(?:option\s+)?)"
    rf"{_MARK}[\(\[]?{_MARK}([A-J])\b(?![-'’])"
)
_BOXED = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*([A-J])\s*\}?\s*\}")
_DECISION_LEADING = re.compile(r"^[\W_]*(yes|no|maybe)\b", re.I)
_DECISION_STATED = re.compile(r"\b(?:answer|decision|conclusion)\b(?:\s+(?:is|would\s+be))?\s*[:\-–—]?\s*[\W_]*"
                              r"(yes|no|maybe)\b", re.I)
_SPACES = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _SPACES.sub(" ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def extract_letter(answer: str, options: Sequence[tuple[str, str]]) -> str:
    """The option letter the answer picks, or "" (an extraction failure)."""
    letters = {k for k, _ in options}
    text = answer.strip()
    if not text:
        return ""
    found: set[str] = set()
    m = _ONLY_LETTER.match(text) or _LEADING.match(text)
    if m:
        found.add(m.group(1))
    found.update(m.group(1) for m in _STATED.finditer(text))
    found.update(m.group(1) for m in _BOXED.finditer(text))
    found &= letters  # a letter that is not an option (e.g. "answer is E" with four options) is no answer
    if len(found) == 1:
        return found.pop()
    if found:
        return ""  # the answer names two different options
    whole = _norm(text)
    same = [k for k, v in options if _norm(v) and _norm(v) == whole]
    return same[0] if len(same) == 1 else ""


def extract_decision(answer: str) -> str:
    """yes / no / maybe as the answer states it, or "" (an extraction failure)."""
    text = answer.strip()
    found = set()
    m = _DECISION_LEADING.match(text)
    if m:
        found.add(m.group(1).lower())
    found.update(m.group(1).lower() for m in _DECISION_STATED.finditer(text))
    return found.pop() if len(found) == 1 else ""


def extract(answer: str, kind: str, options: Sequence[tuple[str, str]] = ()) -> str:
    if kind == "yesno":
        return extract_decision(answer)
    if kind == "mcq":
        return extract_letter(answer, options)
    return ""
