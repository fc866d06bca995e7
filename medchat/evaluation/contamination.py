"""Contamination check: benchmark questions the adapter was trained on are taken out of the evaluation.

Two tests against the training rows the manifest records: the same question after normalising
(lower case, punctuation and spacing folded), and near-duplicates, where at least ``NEAR`` of a
benchmark question's word 8-grams occur in one training question (a reworded stem, extra options).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

N = 8  # words per n-gram: long enough that shared medical phrases alone do not match
NEAR = 0.5  # share of a question's n-grams found in one training question that flags a near-duplicate
_WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def ngrams(text: str, n: int = N) -> set[tuple[str, ...]]:
    words = normalise(text).split()
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class Match:
    kind: str  # "exact" or "near"
    overlap: float  # share of the question's n-grams found in the training question (1.0 for exact)
    train_index: int  # position among the training questions given


def find_contaminated(questions: Sequence[str], trained: Iterable[str], near: float = NEAR) -> dict[int, Match]:
    """Index of each contaminated question -> how it matched a training question."""
    trained = list(trained)
    exact = {normalise(t): i for i, t in enumerate(trained)}
    index: dict[tuple[str, ...], list[int]] = {}
    for i, t in enumerate(trained):
        for g in ngrams(t):
            index.setdefault(g, []).append(i)
    out: dict[int, Match] = {}
    for q_i, q in enumerate(questions):
        key = normalise(q)
        if key and key in exact:
            out[q_i] = Match("exact", 1.0, exact[key])
            continue
        grams = ngrams(q)
        if not grams:
            continue
        hits: Counter[int] = Counter()
        for g in grams:
            for t_i in set(index.get(g, ())):
                hits[t_i] += 1
        if hits:
            t_i, shared = hits.most_common(1)[0]
            share = shared / len(grams)
            if share >= near:
                out[q_i] = Match("near", round(share, 3), t_i)
    return out
