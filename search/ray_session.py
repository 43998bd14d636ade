"""The Ray a sweep runs its trials on: started (or joined) once for both Tune runs, shut down once.

Ray starts on a thread of its own (`RaySession`), beside the driver's caches build, and Tune's
trial actors take the idle workers Ray starts with the driver (`_reuse_prestarted_workers`)
instead of starting their own after the grid has begun. Its shutdown runs with the driver
waiting and its automatic garbage collection off (`RaySession.close`): a Ray object (an
ObjectRef, an actor handle) freed while Ray's core worker shuts down ends the process at once,
exit status 1 and no traceback (Ray's `QuickExit`). An earlier version shut Ray down beside
the report, to save its 1.4 s; a collection during the report then ended a sweep resumed in
the slow suite's own process (exit status 1, nothing printed).

Having those workers import the trainable ahead (Ray's `preload_python_modules`) was tried and
left out: the price grid gained at most 5 % (with Ray started before the config's checks, so that
bad input would wait for Ray), and the README's sweep once ran 5 % longer with it
(benchmarks/README.md). Nor can a Ray task warm those workers: Ray gives an actor only a worker
that never ran a task, so Tune's actors then start workers of their own.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from alignment.timing import phase
from cluster.ray_cluster import ClusterStatus, NodeStatus, check_fits
from search.config import SweepConfig


def trial_resources(config: SweepConfig) -> dict[str, float]:
    return {"CPU": config.resources.cpu, "GPU": config.resources.gpu, **config.resources.custom}


def local_cpus(config: SweepConfig) -> int:
    per_trial = config.resources.cpu + (config.hypotheses.shard if config.hypotheses.shard > 1 else 0)
    return max(os.cpu_count() or 1, int(config.resources.concurrency * per_trial))


def local_status(config: SweepConfig) -> ClusterStatus:
    """What the local Ray this sweep would start has: its CPUs and the GPUs torch sees."""
    import torch

    total = {"CPU": float(local_cpus(config)), "GPU": float(torch.cuda.device_count())}
    return ClusterStatus((NodeStatus("local", "127.0.0.1", True, True, total, None),), total, None)


class RaySession:
    """Ray for one sweep, started (or joined) on a thread that keeps it until the sweep ends.

    Ray ties its processes' lives to the thread that starts them (PR_SET_PDEATHSIG), so that
    thread lives as long as Ray runs: `wait()` returns once Ray is up, `close()` shuts it down
    there and waits. `started` says whether this process started (or joined) it, and so shuts
    it down. Ray sets its SIGTERM handler (exit, which runs the shutdown) only from the main
    thread; the session sets the same one there while it lasts.
    """

    def __init__(self, config: SweepConfig) -> None:
        self.started = False
        self._error: BaseException | None = None
        self._ready, self._stop = threading.Event(), threading.Event()
        self._closed = False
        self._sigterm = _exit_on_sigterm()
        self._keeper = threading.Thread(target=self._keep, args=(config,), name="align-search-ray", daemon=True)
        self._keeper.start()

    def _keep(self, config: SweepConfig) -> None:
        try:
            self.started = _init_ray(config)
            if self.started and config.ray_address:  # a trial no node can hold would wait forever
                from cluster.ray_cluster import cluster_status
                check_fits(trial_resources(config), cluster_status(), f"the cluster at {config.ray_address}")
        except BaseException as error:  # handed to the main thread by wait(); close() shuts a joined cluster down
            self._error = error
        finally:
            self._ready.set()
        if self.started:
            self._stop.wait()
            import ray

            ray.shutdown()

    def wait(self) -> None:
        """Return once Ray is up; raise what its start raised."""
        with phase("ray_start"):
            self._ready.wait()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Shut Ray down if this session started it, once Ray is up, and wait for that; again, it does nothing.

        No Python runs here meanwhile and no thread collects garbage: Ray exits the process when
        a Ray object is freed during its shutdown. Garbage left holds them until after it.
        """
        if self._closed:
            return
        self._closed = True
        self._ready.wait()
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._stop.set()
            with phase("ray_stop") if self.started else contextlib.nullcontext():
                self._keeper.join()
        finally:
            if collecting:
                gc.enable()
        if self._sigterm is not None:
            signal.signal(signal.SIGTERM, self._sigterm)


@contextlib.contextmanager
def ray_session(config: SweepConfig) -> Iterator[RaySession]:
    """Ray for the block: its start begins now, beside the block's work (`RaySession.wait()` before using it); it is
    shut down when the block ends, if this process started it."""
    session = RaySession(config)
    try:
        yield session
    finally:
        session.close()


def _exit_on_sigterm() -> Any:
    """On the main thread, make SIGTERM exit (running every `finally`, Ray's shutdown among them), as Ray's own handler
    does; return the handler it replaced (None elsewhere, where signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))


class _StartedOffMainThread(logging.Filter):
    """Ray warns that it set no SIGTERM handler when started off the main thread: the session sets one there."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SIGTERM handler is not set")


def _reuse_prestarted_workers() -> dict[str, Any]:
    """Let the grid's trials run on the workers Ray starts with the driver; return Ray's settings for it.

    Ray starts one idle worker per CPU as soon as the driver connects. Tune's trial actors did
    not take them: Tune gives each a runtime env of its own, `{"env_vars": {"PL_DISABLE_FORK":
    "1"}}` (for PyTorch Lightning), and Ray gives an actor only a worker started with the same
    runtime env; the idle ones are then killed as surplus. So the variable is set for every
    worker instead (Ray's processes inherit the driver's environment), Tune's default is
    cleared, and no idle worker is killed. A variable Tune passes on from the driver
    (`class_cache.ENV_VARS_TO_PROPAGATE`) gives the actors a runtime env again: they then start
    workers of their own, as before.
    """
    from ray.tune.execution import class_cache

    defaults = getattr(class_cache, "DEFAULT_ENV_VARS", None)
    if isinstance(defaults, dict):
        for name, value in defaults.items():
            os.environ.setdefault(name, value)
        defaults.clear()
    return {"kill_idle_workers_interval_ms": 0}


def _init_ray(config: SweepConfig) -> bool:
    """Start a local Ray (or join `ray_address`); True when this process started it."""
    import ray

    if ray.is_initialized():
        return False
    if config.ray_address:
        from cluster.ray_cluster import connect
        connect(config.ray_address)
        return True
    cpus = local_cpus(config)
    # "local": a Ray of its own, even when a cluster started with `ray start` runs on this machine (ray.init()
    # would join that one, through /tmp/ray/ray_current_cluster, and refuse num_cpus); --address joins one.
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, object_store_memory=200 * 2**20,
             log_to_driver=False, configure_logging=False, _system_config=_reuse_prestarted_workers())
    return True


logging.getLogger("ray._private.worker").addFilter(_StartedOffMainThread())
