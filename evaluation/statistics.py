"""Summaries over folds: mean, standard deviation and a 95% t-interval of the mean."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def summarise(values: Sequence[float]) -> dict:
    """n, mean, sample sd and the 95% Student-t interval of the mean (None where undefined).

    Folds are few (5-10), so the t quantile, not 1.96: with 5 folds it is 2.776.
    """
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci95_low": None, "ci95_high": None}
    mean = float(x.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "ci95_low": None, "ci95_high": None}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci95_low": mean - half, "ci95_high": mean + half}


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Per-fold ratios; a fold whose denominator is 0 has no ratio and is left out."""
    return [float(a) / float(b) for a, b in zip(numerator, denominator, strict=True)
            if b not in (None, 0) and a is not None]
