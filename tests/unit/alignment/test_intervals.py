"""The bootstrap interval of a test IIA."""

import math
import random

from alignment.intervals import bootstrap_interval, decode, encode


def test_the_interval_holds_the_mean_narrows_with_more_pairs_and_is_reproducible():
    rng = random.Random(0)
    small = [int(rng.random() < 0.8) for _ in range(100)]
    large = small * 16
    low, high = bootstrap_interval(small)
    assert low < sum(small) / 100 < high
    assert bootstrap_interval(small) == (low, high)
    large_low, large_high = bootstrap_interval(large)
    assert large_high - large_low < (high - low) / 2  # 16x the pairs: about a quarter of the width
    # Binomial standard error at p = 0.8, n = 400: the 95% interval is about +-0.039.
    rows = [int(rng.random() < 0.8) for _ in range(400)]
    low, high = bootstrap_interval(rows)
    assert abs((high - low) / 2 - 1.96 * math.sqrt(0.8 * 0.2 / 400)) < 0.01


def test_runs_on_the_same_pairs_are_resampled_together():
    rows = [1, 0, 1, 1, 0, 1, 1, 1] * 10
    assert bootstrap_interval([rows, rows, rows]) == bootstrap_interval(rows)
    opposite = [1 - x for x in rows]  # every pair right in exactly one run: the mean never moves
    assert bootstrap_interval([rows, opposite]) == (0.5, 0.5)


def test_correctness_round_trips_as_a_string():
    assert encode([True, False, 1, 0]) == "1010" and decode("1010") == [1, 0, 1, 0]
    assert all(math.isnan(x) for x in bootstrap_interval([]))
