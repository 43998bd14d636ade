"""cluster/: beyond one machine: Ray cluster helpers and configs, DeepSpeed-sharded trials.

- `run_sharded_trial`: one hypothesis on several Ray Train workers sharing a ZeRO-3 model.
- `concurrent_sharded_trials`: how many such trials fit in the free resources at once.
- `connect` / `connected` / `cluster_status` / `format_status`: join a cluster, see its nodes.
- `configs/aws.yaml`, `configs/kuberay.yaml`: ready clusters of 8-GPU nodes.

Names load on first use, so importing `cluster` does not import Ray.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "run_sharded_trial": "cluster.sharded", "concurrent_sharded_trials": "cluster.sharded",
    "connect": "cluster.ray_cluster", "connected": "cluster.ray_cluster",
    "cluster_status": "cluster.ray_cluster", "format_status": "cluster.ray_cluster",
    "ClusterStatus": "cluster.ray_cluster", "check_fits": "cluster.ray_cluster",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cluster' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
