"""The statistics behind every error rate zoo prints: intervals, chance level, paired tests, rank trends.

Errors are in percent. The formulas are the textbook ones (Wilson 1927; McNemar's test as the exact
binomial test on the discordant pairs, Dietterich 1998); scipy computes them.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05  # a finding calls a difference or a trend real only below this p-value


def top_k(num_classes: int) -> int | None:
    """The k of the top-k error: 5, but below the class count, so it can still miss; none for 2 classes."""
    k = min(5, num_classes - 1)
    return k if k >= 2 else None


def wilson_interval(errors: int, total: int) -> tuple[float, float]:
    """The 95% Wilson score interval of an error rate of ``errors`` out of ``total``, in percent."""
    if not 0 <= errors <= total or total < 1:
        raise ValueError(f"an error count must lie between 0 and the number of images, got {errors} of {total}")
    from scipy.stats import binomtest

    interval = binomtest(errors, total).proportion_ci(CONFIDENCE, method="wilson")
    return 100.0 * float(interval.low), 100.0 * float(interval.high)


def chance_error(labels: Sequence[int]) -> float:
    """The error of always predicting the most frequent class of ``labels``, in percent."""
    if not labels:
        raise ValueError("chance level needs at least one label")
    return 100.0 * (1.0 - max(Counter(labels).values()) / len(labels))


def learned(interval: Sequence[float], chance: float) -> bool:
    """True when the whole 95% interval of the error lies below the chance level."""
    return interval[1] < chance


@dataclass(frozen=True)
class PairedTest:
    """McNemar's test of two classifiers on the same images: who was right where the other was wrong."""

    only_first_right: int
    only_second_right: int
    p_value: float


def mcnemar(first_correct: Sequence[bool], second_correct: Sequence[bool]) -> PairedTest:
    """The two-sided exact McNemar test (binomial test on the discordant pairs, p = 0.5 under the null)."""
    if len(first_correct) != len(second_correct):
        raise ValueError(f"a paired test needs the same images: got {len(first_correct)} and {len(second_correct)}")
    first_only = sum(1 for a, b in zip(first_correct, second_correct, strict=True) if a and not b)
    second_only = sum(1 for a, b in zip(first_correct, second_correct, strict=True) if b and not a)
    discordant = first_only + second_only
    if discordant == 0:
        return PairedTest(0, 0, 1.0)
    from scipy.stats import binomtest

    p_value = binomtest(min(first_only, second_only), discordant, 0.5).pvalue
    return PairedTest(first_only, second_only, min(1.0, float(p_value)))


@dataclass(frozen=True)
class Trend:
    """Spearman's rank correlation with its two-sided p-value, over ``count`` points."""

    rho: float
    p_value: float
    count: int

    @property
    def significant(self) -> bool:
        return self.p_value < SIGNIFICANCE


EXACT_UP_TO = 8  # points: below this the p-value counts every ordering (8! = 40,320) instead of approximating


def smallest_spearman_p(count: int) -> float:
    """The smallest two-sided exact p-value a rank trend over ``count`` distinct points can reach: 2 / count!
    (the two perfect orderings), 1/3 for three models; a trend needs 5 points before it can fall below 0.05."""
    return min(1.0, 2 / math.factorial(count)) if count >= 2 else 1.0


def spearman(xs: Sequence[float], ys: Sequence[float]) -> Trend | None:
    """The rank trend of ``ys`` over ``xs``; None with fewer than 3 points or no spread to rank.

    The two-sided p-value is exact (every ordering of ``ys`` counted) up to ``EXACT_UP_TO`` points: scipy's
    t approximation gives p ≈ 0 to three perfectly ordered points, whose exact p is 1/3.
    """
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    import numpy as np
    from scipy.stats import rankdata, spearmanr

    result = spearmanr(xs, ys)
    rho, p_value = float(result.statistic), float(result.pvalue)
    if len(xs) <= EXACT_UP_TO:
        x_ranks, y_ranks = rankdata(xs), rankdata(ys)
        orderings = np.array(list(itertools.permutations(y_ranks)))
        x_centred = x_ranks - x_ranks.mean()
        y_centred = orderings - y_ranks.mean()
        rhos = (y_centred @ x_centred) / (np.linalg.norm(x_centred) * np.linalg.norm(y_centred, axis=1))
        p_value = float(np.mean(np.abs(rhos) >= abs(rho) - 1e-12))
    return Trend(rho, p_value, len(xs))
