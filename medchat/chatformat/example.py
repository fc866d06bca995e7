"""A question with its reasoning and answer (a training row, an evaluation item), and which option of a
multiple-choice question an answer picks."""

from __future__ import annotations

import re
from dataclasses import dataclass

_LEADING_LETTER = re.compile(r"^\s*(?:\*\*)?\(?([A-J])(?:[.):]|\s*$|\s+[-–—])")
_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*\(?\**([A-J])\b", re.I)


@dataclass(frozen=True)
class Example:
    """One row of a data set, whatever file shape it came from."""

    question: str
    reasoning: str
    answer: str
    options: tuple[tuple[str, str], ...] = ()  # (letter, text) of a multiple-choice question
    gold: str = ""  # the correct option letter, when known


def predicted_letter(answer: str, options: tuple[tuple[str, str], ...]) -> str:
    """The option an answer picks: a leading letter, "answer is X", or the one option text it quotes."""
    letters = {k for k, _ in options}
    for pattern in (_LEADING_LETTER, _ANSWER_IS):
        m = pattern.search(answer)
        if m and m.group(1).upper() in letters:
            return m.group(1).upper()
    low = answer.lower()
    quoted = [k for k, text in options if text.strip() and text.strip().lower() in low]
    return quoted[0] if len(quoted) == 1 else ""
