"""Splitting batches across workers: every row once, sizes within one, weights adding up to the batch."""

import pytest
import torch

from alignment.config import InterventionConfig, TrainConfig
from alignment.train import train
from cluster.parallel import part_bounds, part_rows
from cluster.sharded import concurrent_sharded_trials
from tests.unit.alignment.test_frozen_paths import interchange_for


@pytest.mark.parametrize("n", [1, 2, 7, 15, 16, 33])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_parts_cover_every_row_once_and_weigh_the_batch(n, world):
    bounds = [part_bounds(n, rank, world) for rank in range(world)]
    assert [start for start, _ in bounds][0] == 0 and bounds[-1][1] == n
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(world - 1))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1
    weights = torch.cat([part_rows(n, rank, world)[1] for rank in range(world)])
    assert float(weights.sum()) == pytest.approx(1.0)


def test_a_worker_without_rows_computes_row_zero_with_weight_zero():
    rows, weights = part_rows(1, 1, 2)
    assert rows.tolist() == [0] and weights.tolist() == [0.0]


def test_bad_rank_is_refused():
    with pytest.raises(ValueError, match="rank must be in 0..1"):
        part_bounds(4, 2, 2)


class OneWorker:
    """The DataParallel of a single worker: the code path of a sharded trial, without collectives."""

    world_size = 1

    def part(self, n):
        return part_rows(n, 0, 1)

    def sum(self, value):
        return value.clone()

    def reduce_gradients(self, parameters):
        pass


def test_the_data_parallel_path_on_one_worker_takes_the_plain_steps(tiny_price):
    interchange, pairs = interchange_for(tiny_price, 0, "last")
    start = {k: v.clone() for k, v in interchange.intervention.state_dict().items()}
    config = TrainConfig(batch_size=5, max_steps=4, eval_every=2, log_every=1, eval_batch_size=7)
    runs = []
    for parallel in (None, OneWorker()):
        interchange.intervention.load_state_dict(start)
        rows = []
        result = train(interchange, pairs, pairs, torch.tensor([0, 1]), InterventionConfig(), config,
                       record=rows.append, parallel=parallel)
        runs.append((rows, result))
    (plain_rows, plain), (split_rows, split) = runs
    assert [r["loss"] for r in split_rows if "loss" in r] == pytest.approx(
        [r["loss"] for r in plain_rows if "loss" in r], rel=1e-6)
    assert [r["dev_iia"] for r in split.history] == [r["dev_iia"] for r in plain.history]
    for key, value in plain.best_intervention.items():
        torch.testing.assert_close(split.best_intervention[key], value, rtol=1e-5, atol=1e-6)


def test_how_many_sharded_trials_fit():
    assert concurrent_sharded_trials(free_cpus=3, free_gpus=0, workers=2, use_gpu=False) == 1
    assert concurrent_sharded_trials(free_cpus=2, free_gpus=0, workers=2, use_gpu=False) == 0
    # 8 nodes of 8 GPUs and 192 CPUs, 4 CPUs per worker: GPUs decide
    assert concurrent_sharded_trials(free_cpus=1536, free_gpus=64, workers=4, use_gpu=True,
                                     cpus_per_worker=4) == 16


def test_a_sharded_trial_refuses_a_missing_model_before_starting_ray(tmp_path):
    from alignment.config import TrialConfig
    from alignment.models import ModelLoadError
    from cluster import run_sharded_trial

    with pytest.raises(ModelLoadError, match="must be a Hugging Face model folder readable by every"):
        run_sharded_trial(TrialConfig(model_path=str(tmp_path / "none"), layer=0), tmp_path / "out",
                          workers=2)
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        run_sharded_trial(TrialConfig(model_path=str(tmp_path), layer=0), tmp_path / "out", workers=0)
