"""The planted task with one causal model that exists on the driver but not in Ray workers.

Loaded as `tests/faulty_task.py:FAULTY`. The driver plans the sweep and builds the pairs of
both causal models; inside a Ray worker the control causal model `key_low` is missing, so
every attempt of a `key_low` trial fails with an unknown causal model, while the `planted`
trials run normally. It is an honest fault: a user's task module that imports differently
on the cluster's workers than on the machine that launched the sweep.
"""

from dataclasses import replace

from causal_models import Task
from tests.planted_task import planted_task


def _in_ray_worker() -> bool:
    import ray

    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


def faulty_task() -> Task:
    task = planted_task()
    if not _in_ray_worker():
        return task
    return replace(task, causal_models={"planted": task.causal_models["planted"]}, controls=())


FAULTY = faulty_task  # a function, so each load asks again where it runs
