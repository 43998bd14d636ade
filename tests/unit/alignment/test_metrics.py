"""Per-pair correctness: the same as the counts, and each pair scored by exactly one data-parallel worker."""

import pytest
import torch

from alignment.metrics import correct_per_pair, interchange_accuracy
from cluster.parallel import part_rows
from tests.unit.alignment.test_frozen_paths import interchange_for


class Rank:
    """Worker `rank` of `world`, its collective sum left out: the test adds the workers' results itself."""

    def __init__(self, rank, world):
        self.rank, self.world_size = rank, world

    def part(self, n):
        return part_rows(n, self.rank, self.world_size)

    def sum(self, value):
        return value.clone()


@pytest.mark.parametrize("world", [2, 3])
def test_per_pair_correctness_matches_the_counts_and_splits_across_workers(tiny_price, world):
    interchange, pairs = interchange_for(tiny_price, 1, "last")
    answer_ids = torch.tensor([0, 1])
    answers, full = correct_per_pair(interchange, pairs, answer_ids, batch_size=4)
    counts = interchange_accuracy(interchange, pairs, answer_ids, batch_size=4)
    assert len(answers) == len(pairs) and float(answers.float().mean()) == pytest.approx(counts.answers)
    assert float(full.float().mean()) == pytest.approx(counts.full_vocab)
    # Each worker fills its own rows; summed over workers (the collective) every pair is scored exactly once.
    parts = [correct_per_pair(interchange, pairs, answer_ids, batch_size=4, parallel=Rank(r, world))[0]
             for r in range(world)]
    assert torch.equal(torch.stack(parts).sum(dim=0), answers.long())
