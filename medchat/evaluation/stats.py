"""Statistics for a paired evaluation: bootstrap intervals and McNemar's exact test.

McNemar's exact test is a two-sided binomial test on the discordant pairs (rows one model got right
and the other wrong), computed with exact integers here: scipy is not a dependency, and the sum is a
few lines. Bootstrap intervals are percentile intervals over rows resampled with a fixed seed, so the
same results always give the same interval.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

RESAMPLES = 2000
SEED = 0


def mcnemar_exact(base: Sequence[bool], tuned: Sequence[bool]) -> float:
    """Two-sided exact p of "the two models are equally often right", from paired outcomes."""
    b = sum(1 for x, y in zip(base, tuned) if x and not y)
    c = sum(1 for x, y in zip(base, tuned) if y and not x)
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def _percentiles(values: list[float], level: float) -> tuple[float, float]:
    values.sort()
    lo = (1 - level) / 2
    last = len(values) - 1
    return values[int(round(lo * last))], values[int(round((1 - lo) * last))]


def bootstrap_ci(outcomes: Sequence[bool], level: float = 0.95, resamples: int = RESAMPLES,
                 seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the share of True outcomes."""
    n = len(outcomes)
    if n == 0:
        return (0.0, 0.0)
    rng = random.Random(seed)
    data = [1 if o else 0 for o in outcomes]
    means = [sum(data[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples)]
    return _percentiles(means, level)


def paired_bootstrap_ci(base: Sequence[bool], tuned: Sequence[bool], level: float = 0.95,
                        resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy(tuned) - accuracy(base), resampling rows as pairs."""
    n = len(base)
    if n == 0:
        return (0.0, 0.0)
    rng = random.Random(seed)
    diffs = [(1 if y else 0) - (1 if x else 0) for x, y in zip(base, tuned)]
    means = [sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples)]
    return _percentiles(means, level)
