"""How sure a test IIA is: a percentile bootstrap over the test pairs.

A test IIA is a share of a few hundred pairs, so it moves by a few points with the sample:
0.80 on 400 pairs is anything from about 0.76 to 0.84. Each test IIA therefore comes with a
95% interval, from `RESAMPLES` resamples (with replacement) of the per-pair correctness, with
a fixed seed so that the same correctness gives the same interval wherever it is computed
(the trial's summary, the sweep's report).

Several runs of one hypothesis on the same test pairs (seeds, or random draws of a control)
give a matrix of correctness, one row per run. Their mean IIA gets its interval by
resampling the *pairs* once per resample, the same pairs for every run, and averaging over
runs: the interval says how far the mean could move with another sample of test pairs. The
spread between runs (seeds) is reported beside it as a standard deviation, not folded in.

Per-pair correctness travels as a string of "0"/"1", one character per test pair in split
order: short in JSON, and exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RESAMPLES = 1000
SEED = 0


def bootstrap_interval(correct: Sequence[Sequence[int]] | Sequence[int], resamples: int = RESAMPLES,
                       seed: int = SEED) -> tuple[float, float]:
    """The 95% percentile interval of the mean accuracy, pairs resampled jointly across runs.

    Args:
        correct: (runs, pairs) or (pairs,) of 0/1, every run on the same pairs in the same order.
    Returns:
        (low, high), rounded to 4 places; (nan, nan) for no pairs.
    """
    matrix = np.atleast_2d(np.asarray(correct, dtype=np.float64))
    n = matrix.shape[1]
    if n == 0 or matrix.shape[0] == 0:
        return float("nan"), float("nan")
    rows = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    means = matrix[:, rows].mean(axis=(0, 2))  # (resamples,): mean over runs and resampled pairs
    low, high = np.percentile(means, [2.5, 97.5])
    return round(float(low), 4), round(float(high), 4)


def encode(correct: Sequence[int] | Sequence[bool]) -> str:
    """Per-pair correctness as a "0"/"1" string."""
    return "".join("1" if value else "0" for value in correct)


def decode(text: str) -> list[int]:
    return [1 if character == "1" else 0 for character in text]
