"""The sweep's Ray (search/ray_session.py): started on a thread that keeps it, shut down once, and
trials that run on the workers Ray started with the driver."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from alignment.timing import Phases, recording
from search.config import SweepConfig, default_config
from search.ray_session import RaySession

ROOT = Path(__file__).resolve().parents[3]


def config_for(model) -> SweepConfig:
    return replace(default_config(), model_path=str(model))


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

    tune.report({"pid": os.getpid()})


def _idle_workers_since(begun: float, count: int, timeout: float = 120.0) -> set[int]:
    """Wait until Ray has `count` workers started after `begun` that are idle: each names itself `ray::IDLE` once it
    has joined Ray, then sits waiting for work, as it would while a sweep's driver builds its caches; return their
    process ids."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        workers = [p for p in psutil.process_iter(["cmdline", "create_time"])
                   if (p.info["cmdline"] or [""])[0].startswith("ray::IDLE") and p.info["create_time"] >= begun - 1]
        if len(workers) >= count:
            with contextlib.suppress(psutil.Error):
                if all(worker.cpu_percent(interval=1.0) < 5 for worker in workers):
                    return {worker.pid for worker in workers}
        time.sleep(0.2)
    raise AssertionError(f"Ray started fewer than {count} idle workers within {timeout:.0f} s")


def test_a_cluster_that_cannot_hold_a_trial_is_refused_where_the_sweep_waits_and_left(tiny_planted, monkeypatch):
    """The check runs on the session's thread; the connection it made is closed by close(), with the driver waiting,
    not beside the driver's caches build."""
    import ray

    import cluster.ray_cluster as clusters
    from cluster.ray_cluster import UnsatisfiableResources

    def connect(address):  # a Ray of its own stands in for the cluster at `address`
        ray.init(address="local", num_cpus=1, include_dashboard=False, object_store_memory=100 * 2**20,
                 log_to_driver=False, configure_logging=False)

    monkeypatch.setattr(clusters, "connect", connect)
    config = replace(config_for(tiny_planted), ray_address="10.0.0.1:6379",
                     resources=replace(default_config().resources, gpu=1))
    session = RaySession(config)
    with pytest.raises(UnsatisfiableResources, match="the cluster at 10.0.0.1:6379"):
        session.wait()
    assert ray.is_initialized()  # until the sweep closes the session
    session.close()
    assert not ray.is_initialized()


# Ray objects that became garbage before the shutdown; a thread that collects garbage whenever collection is on
# (as Python does on its own, from any thread that allocates) through the whole of the shutdown.
_GARBAGE_DURING_SHUTDOWN = textwrap.dedent("""
    import gc, sys, threading, time
    import ray
    from search.config import default_config
    from search.ray_session import RaySession

    session = RaySession(default_config())
    session.wait()
    gc.disable()
    batches = []
    for _ in range(200):
        batch = [ray.put(n) for n in range(10)]
        batch.append(batch)  # a cycle: only the collector frees it
        batches.append(batch)
    shutting_down, done = threading.Event(), threading.Event()
    shutdown = ray.shutdown
    ray.shutdown = lambda: (shutting_down.set(), shutdown())

    def collector():
        shutting_down.wait()
        while not done.is_set():
            if batches:
                batches.pop()
            if gc.isenabled():
                gc.collect()
            time.sleep(0.005)

    thread = threading.Thread(target=collector)
    thread.start()
    gc.enable()
    session.close()
    done.set()
    thread.join()
    batches.clear()
    gc.collect()
    print("the process outlived the shutdown", flush=True)
""")


def test_garbage_holding_ray_objects_is_not_collected_while_ray_shuts_down(tmp_path):
    """Ray ends the process (exit status 1, no traceback: its QuickExit) when a Ray object is freed while its core
    worker shuts down; it did so to the slow suite when Ray's shutdown ran beside the report."""
    done = subprocess.run([sys.executable, "-c", _GARBAGE_DURING_SHUTDOWN], capture_output=True, text=True,
                          timeout=240, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and "the process outlived the shutdown" in done.stdout, done.stderr[-3000:]


def test_trials_run_on_the_workers_ray_started_with_the_driver(tiny_planted, tmp_path):
    """Tune gives its actors a runtime env of their own, and Ray kills idle workers it deems surplus: either would
    start every trial's worker anew, after the grid has started."""
    import ray
    from ray import tune

    config = replace(config_for(tiny_planted), resources=replace(default_config().resources, concurrency=2))
    begun = time.time()
    session = RaySession(config)
    try:
        session.wait()
        assert session.started
        prestarted = _idle_workers_since(begun, count=2)  # in a sweep, the driver builds its caches meanwhile
        time.sleep(2.0)  # idle a while longer: Ray killed idle workers it deemed surplus after a second
        results = tune.Tuner(
            tune.with_resources(_report_the_worker, {"cpu": 1}),
            param_space={"trial": tune.grid_search([0, 1])},
            run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
        reports = [result.metrics for result in results]
    finally:
        session.close()
    assert not ray.is_initialized()
    assert len({r["pid"] for r in reports}) == 2 and all(r["pid"] != os.getpid() for r in reports)
    for report in reports:
        assert report["pid"] in prestarted, f"the trial's worker {report['pid']} was not one Ray started first"
