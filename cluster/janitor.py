"""Freeing a sharded trial's workers when its Train controller dies without doing it.

Ray Train v2 reserves a trial's workers in a placement group that its controller actor
removes when the run ends. When Tune stops a sharded trial (ASHA), it kills the trial's
actor right away (`FunctionTrainable.cleanup` waits 0 s), and with it the controller it
owns, often before the controller has removed the group: the workers die, their CPUs and
GPUs stay reserved, and a sweep of stopped trials ends up waiting for resources that no one
holds. Ray's own `PlacementGroupCleaner` watches for this through the State API, which needs
the full dashboard (`ray[default]`); a `ray[tune]` install lacks it (we saw the group stay
reserved after a stop, the cleaner logging "State API may be temporarily unavailable").

`PlacementGroupJanitor` is a Train callback that, once the workers start, launches a small
detached actor holding the controller's handle and the placement group. It waits on a call
to the controller, which fails only when the controller is dead, then removes the group
(if the controller has not) and exits. It uses Ray Train v2's internal callback interfaces
(the ones Ray's cleaner uses), so it is tied to Ray 2.5x-2.6x.

Not fixed here: without the State API, Ray's own cleaner of a killed run never learns that
its controller died, so that detached actor (0 CPUs, one idle process on the head node) stays
until Ray shuts down, logging "State API may be temporarily unavailable". Installing
`ray[default]` on a cluster (cluster/configs do) gives Ray's cleaner its State API back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray
from ray._common.constants import HEAD_NODE_RESOURCE_NAME
from ray.train.v2._internal.execution.callback import ControllerCallback, WorkerGroupCallback

log = logging.getLogger(__name__)


class _Watch:
    """Detached actor: remove `placement_group` once `controller` is dead, then exit."""

    def watch(self, controller: Any, placement_group: Any, poll_s: float = 2.0) -> None:
        from ray.util.placement_group import placement_group_table, remove_placement_group

        while _alive(controller, poll_s):
            time.sleep(poll_s)
        if placement_group_table(placement_group).get("state") != "REMOVED":
            log.warning("the Train controller of a sharded trial died; removing its placement group %s",
                        placement_group.id)
            try:
                remove_placement_group(placement_group)
            except Exception as error:  # removed meanwhile
                log.info("placement group %s: %s", placement_group.id, error)
        ray.actor.exit_actor()


def _alive(actor: Any, poll_s: float) -> bool:
    """Whether `actor` answers; waits as long as it is busy (a call to a dead actor fails)."""
    pending = actor.__ray_ready__.remote()
    while not ray.wait([pending], timeout=poll_s)[0]:
        pass
    try:
        ray.get(pending)
    except ray.exceptions.RayActorError:
        return False
    return True


class PlacementGroupJanitor(ControllerCallback, WorkerGroupCallback):
    """Train callback (runs in the controller) that starts a `_Watch` over each worker group it starts."""

    def __init__(self) -> None:
        self._controller: Any = None

    def after_controller_start(self, train_run_context: Any) -> None:
        self._controller = ray.get_runtime_context().current_actor

    def after_worker_group_start(self, worker_group: Any) -> None:
        group = worker_group.get_worker_group_state().placement_group_handle.placement_group
        # "DEFAULT" keeps the watch out of the Tune trial's placement group, whose removal would kill it;
        # the head node outlives any worker node.
        watch: Any = ray.remote(num_cpus=0)(_Watch).options(
            lifetime="detached", scheduling_strategy="DEFAULT",
            resources={HEAD_NODE_RESOURCE_NAME: 0.001}).remote()
        watch.watch.remote(self._controller, group)
