"""Held-out splits over a small input space: reserve inputs for dev and test before sampling train.

Dev and test pairs never reuse an input (base or source) of a training pair, so their IIA
measures how an alignment carries over to inputs it was not trained on. Over a large input
space (price tagging: millions of inputs) excluding the training inputs costs nothing. Over a
small one it is impossible after the fact: the carry task of docs/your-own-task.md has 100
inputs, and 2,000 training pairs (4,000 inputs drawn) use every one of them, leaving nothing
to hold out.

So before the first split is sampled, `reserve_inputs` simulates its input draws with the
task's own sampler and measures how much of the sampler's probability mass they would
cover (on a second, independent set of draws). If that is more than `MAX_COVERED`, a random
set of the distinct inputs seen, holding at least the held-out splits' share of all pairs
(and at least `MIN_RESERVED_SHARE`) of the mass, is reserved: training pairs are drawn only
from the other inputs, and dev and test pairs, which still exclude every input training
used, are then drawn from the reserved ones. Otherwise nothing is reserved. Either way the
pairs' stats say what happened (`PairStats.reserved_inputs`, `held_out`, `shared_inputs`).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from causal_models.pairs import InputSampler, input_key

MAX_COVERED = 0.5
MIN_RESERVED_SHARE = 0.2
PROBE_DRAWS = 2000


@dataclass(frozen=True)
class Reservation:
    """Inputs kept out of the first split so that the held-out splits have inputs of their own."""

    keys: frozenset[str]
    distinct_seen: int
    covered: float


def training_coverage(sampler: InputSampler, training_draws: int, seed: int) -> tuple[float, Counter[str]]:
    """(share of fresh draws whose input `training_draws` draws already produced, counts of every input seen)."""
    rng = random.Random(seed)
    trained = Counter(input_key(sampler(rng)) for _ in range(training_draws))
    probe = [input_key(sampler(rng)) for _ in range(PROBE_DRAWS)]
    covered = sum(key in trained for key in probe) / len(probe)
    return covered, trained + Counter(probe)


def reserve_inputs(sampler: InputSampler, training_draws: int, heldout_share: float,
                   seed: int) -> Reservation | None:
    """The inputs to reserve for the held-out splits, or None when excluding training's inputs suffices.

    Args:
        sampler: the task's (or causal model's) input sampler.
        training_draws: inputs the first split will draw (pairs x inputs per pair, at least).
        heldout_share: the held-out splits' share of all pairs; the reserved mass is at least this.
        seed: seeds the simulation and the choice of reserved inputs.
    """
    covered, counts = training_coverage(sampler, training_draws, seed)
    if covered <= MAX_COVERED:
        return None
    target = max(MIN_RESERVED_SHARE, heldout_share) * sum(counts.values())
    keys = sorted(counts)
    random.Random(seed + 1).shuffle(keys)
    reserved: set[str] = set()
    mass = 0
    for key in keys:
        if mass >= target or len(reserved) == len(keys) - 1:  # training keeps at least one input
            break
        reserved.add(key)
        mass += counts[key]
    return Reservation(frozenset(reserved), len(counts), round(covered, 4))
