"""Comparing two rates: the standard tests A/B verdicts and holdout lifts rest on. Pure arithmetic, no sampling.

- :func:`z_test`: the two-proportion z-test with the pooled standard error (two-sided p-value); its square is
  Pearson's chi-square of the 2x2 table, as R's ``prop.test(correct = FALSE)`` reports it.
- :func:`wilson`: the Wilson score interval of one proportion.
- :func:`newcombe`: the interval of a difference of two proportions from the two Wilson intervals (Newcombe 1998,
  method 10, the "hybrid score" interval). Unlike the textbook Wald interval it stays inside [-1, 1] and keeps its
  coverage with few conversions, which small email tests have.
- :func:`probability_to_beat`: with uniform Beta(1, 1) priors, the posterior probability that one rate is above the
  other, in closed form (a finite sum; a normal approximation past :data:`EXACT_TERMS` terms).
"""

from __future__ import annotations

import math
from statistics import NormalDist

STANDARD_NORMAL = NormalDist()
EXACT_TERMS = 20_000
"""The closed form of :func:`probability_to_beat` sums this many terms at most; beyond, the posteriors are so narrow
that their normal approximation agrees to many decimals."""


def z_for(confidence: float) -> float:
    """The two-sided standard normal quantile of a confidence level (1.959964 for 0.95)."""
    return STANDARD_NORMAL.inv_cdf(1 - (1 - confidence) / 2)


def z_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """(z, two-sided p-value) of the pooled two-proportion z-test of x1/n1 against x2/n2; (0, 1) when it is
    undefined (an empty group, or no variation at all)."""
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance <= 0:
        return 0.0, 1.0
    z = (x1 / n1 - x2 / n2) / math.sqrt(variance)
    return z, 2 * STANDARD_NORMAL.cdf(-abs(z))


def wilson(x: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of the proportion x/n ((0, 1) for an empty sample)."""
    if n <= 0:
        return 0.0, 1.0
    z = z_for(confidence)
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """The interval of the difference x1/n1 - x2/n2 (Newcombe's hybrid score interval, method 10)."""
    if n1 <= 0 or n2 <= 0:
        return -1.0, 1.0
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, confidence)
    l2, u2 = wilson(x2, n2, confidence)
    difference = p1 - p2
    low = difference - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = difference + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return max(-1.0, low), min(1.0, high)


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _beats_exact(a1: int, b1: int, a2: int, b2: int) -> float:
    """P(X1 > X2) for X1 ~ Beta(a1, b1), X2 ~ Beta(a2, b2), whole-number parameters (Evan Miller's closed form,
    summed over ``a1`` terms)."""
    total = 0.0
    base = -_log_beta(a2, b2)
    for i in range(a1):
        total += math.exp(_log_beta(a2 + i, b1 + b2) - math.log(b1 + i) - _log_beta(1 + i, b1) + base)
    return total


def probability_to_beat(x1: int, n1: int, x2: int, n2: int) -> float:
    """The posterior probability that the rate behind x1/n1 is above the rate behind x2/n2, each with a uniform
    prior (Beta(1 + conversions, 1 + non-conversions) posteriors). Deterministic: a closed form, no sampling."""
    a1, b1, a2, b2 = 1 + x1, 1 + n1 - x1, 1 + x2, 1 + n2 - x2
    if min(a1, a2) <= EXACT_TERMS:
        # the sum has as many terms as its first shape parameter: sum over the smaller one
        value = _beats_exact(a1, b1, a2, b2) if a1 <= a2 else 1.0 - _beats_exact(a2, b2, a1, b1)
        return min(1.0, max(0.0, value))
    mean1, mean2 = a1 / (a1 + b1), a2 / (a2 + b2)
    var1 = a1 * b1 / ((a1 + b1) ** 2 * (a1 + b1 + 1))
    var2 = a2 * b2 / ((a2 + b2) ** 2 * (a2 + b2 + 1))
    return STANDARD_NORMAL.cdf((mean1 - mean2) / math.sqrt(var1 + var2))
