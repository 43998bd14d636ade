"""The sweep's Ray (search/ray_session.py): started on a thread that keeps it, shut down once, and
trials that run on the workers Ray started with the driver, their imports already done."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import replace

import psutil
import pytest

from alignment.timing import Phases, recording
from search.config import SweepConfig, default_config
from search.ray_session import TRAINABLE, RaySession, preload_modules


def config_for(model) -> SweepConfig:
    return replace(default_config(), model_path=str(model))


def test_the_workers_import_the_trainable_and_the_models_own_transformers_code(tiny_planted, other_planted):
    assert preload_modules(config_for(tiny_planted)) == [TRAINABLE, "transformers.models.gpt2.modeling_gpt2"]
    assert preload_modules(config_for(other_planted)) == [TRAINABLE, "transformers.models.llama.modeling_llama"]


def test_a_ray_the_session_joined_is_left_running_and_its_end_is_not_timed(tiny_planted):
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, object_store_memory=100 * 2**20,
             log_to_driver=False, configure_logging=False)
    phases = Phases()
    try:
        with recording(phases):
            session = RaySession(config_for(tiny_planted))
            session.wait()
            session.close()
            session.close()  # a second close does nothing
        assert not session.started and ray.is_initialized()
        assert "ray_start" in phases.seconds and "ray_stop" not in phases.seconds
    finally:
        ray.shutdown()


def test_a_failed_start_is_raised_where_the_sweep_waits_and_sigterm_is_given_back(tiny_planted, monkeypatch):
    import search.ray_session as module

    def refused(config):
        raise ConnectionError("no Ray here")

    monkeypatch.setattr(module, "_init_ray", refused)
    before = signal.getsignal(signal.SIGTERM)
    session = RaySession(config_for(tiny_planted))
    assert signal.getsignal(signal.SIGTERM) is not before  # exits, running every finally, as Ray's own handler does
    with pytest.raises(ConnectionError, match="no Ray here"):
        session.wait()
    session.close()
    assert signal.getsignal(signal.SIGTERM) is before


def _report_the_worker(config):
    from ray import tune

    process = psutil.Process()
    tune.report({"pid": process.pid, "born": process.create_time(),
                 "preloaded": [name for name in config["modules"] if name in sys.modules]})


def test_trials_run_on_the_workers_ray_started_with_the_driver_with_their_imports_done(tiny_planted, tmp_path):
    """Tune gives its actors a runtime env of their own, and Ray kills idle workers it deems surplus: either would
    start every trial's worker anew, importing torch and transformers after the grid has started."""
    import ray
    from ray import tune

    config = replace(config_for(tiny_planted), resources=replace(default_config().resources, concurrency=2))
    modules = preload_modules(config)
    session = RaySession(config)
    try:
        session.wait()
        assert session.started
        time.sleep(8)  # the driver's prepare and caches, during which the workers import (about 4 s of a core each)
        tune_started = time.time()
        results = tune.Tuner(
            tune.with_resources(_report_the_worker, {"cpu": 1}),
            param_space={"modules": modules, "trial": tune.grid_search([0, 1])},
            run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
        reports = [result.metrics for result in results]
    finally:
        session.close()
    assert not ray.is_initialized()
    assert len({r["pid"] for r in reports}) == 2 and all(r["pid"] != os.getpid() for r in reports)
    for report in reports:
        assert report["preloaded"] == modules, report
        assert report["born"] < tune_started, "the trial's worker was started by Tune, not with the driver"
