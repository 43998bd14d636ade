"""A Ray Tune trial can be a sharded trial: its evals reach Tune, and a stop frees its workers."""

from __future__ import annotations

import time

import pytest

from cluster import run_sharded_trial
from tests.integration.cluster.test_sharded_trial import config_for

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_with_3_cpus():
    """One CPU for the Tune trial's own process and one for each of the two Train workers."""
    import ray
    ray.init(address="local", num_cpus=3, object_store_memory=200 * 2**20, include_dashboard=False,
             logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.mark.timeout(480)
def test_tune_sees_every_eval_and_a_stopped_trial_frees_its_workers(ray_with_3_cpus, saved_models, tmp_path):
    from ray import tune
    config = config_for(saved_models["gpt2"])

    def trainable(params):
        def report(row, snapshot):
            tune.report({"dev_iia": row["dev_iia"], "step": row["step"], "resumable_at": snapshot().step})
        run_sharded_trial(config, tmp_path / f"trial-{params['stop_early']}", workers=2, report=report,
                          zero_options={"stage3_param_persistence_threshold": 0}, timeout_s=300)

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"stop_early": tune.grid_search([False, True])},
        tune_config=tune.TuneConfig(metric="dev_iia", mode="max", max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="sharded", verbose=0,
                                  stop=lambda trial_id, result: result["config"]["stop_early"]))
    grid = tuner.fit()
    assert not grid.errors
    iterations = {r.config["stop_early"]: r.metrics["training_iteration"] for r in grid}
    assert iterations == {False: 2, True: 1}
    assert {r.config["stop_early"]: r.metrics["resumable_at"] for r in grid} == {False: 6, True: 3}
    assert (tmp_path / "trial-False" / "summary.json").is_file()
    assert not (tmp_path / "trial-True" / "summary.json").exists()
    for _ in range(30):  # the stopped trial's Train workers give their CPUs back
        if ray_with_3_cpus.available_resources().get("CPU") == 3:
            break
        time.sleep(1)
    assert ray_with_3_cpus.available_resources().get("CPU") == 3
