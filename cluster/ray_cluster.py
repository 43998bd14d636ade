"""Joining a Ray cluster, and what it has: nodes and free CPUs, GPUs, memory and custom resources.

Addresses, as `align-search --address` takes them:
- none: start a Ray of this machine's own (small object store, no dashboard);
- "auto": the cluster a `ray start` on this machine joined (RAY_ADDRESS also works);
- "HOST:PORT": the head node's GCS port (6379 by default) from a machine of the cluster;
- "ray://HOST:PORT": Ray Client (port 10001) from a machine outside it.

Token authentication: Ray 2.60's `ray start --head` turns it on by default, and every client
then needs RAY_AUTH_MODE=token plus the cluster's token (in ~/.ray/auth_token, the file named
by RAY_AUTH_TOKEN_PATH, or RAY_AUTH_TOKEN). Ray turns the mode on by itself only for "auto".
`connect(auth_token=...)` sets both for this process; otherwise the environment decides, and
a refusal says what to set. Token mode is never guessed: a client in token mode breaks on a
cluster without it (we saw its actors die unstarted on a `cluster_utils` cluster).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal

from causal_models.errors import UserError

log = logging.getLogger(__name__)
AddressKind = Literal["local", "auto", "gcs", "client"]
STANDARD = ("CPU", "GPU", "memory", "object_store_memory")
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


class ClusterConnectError(UserError, ConnectionError):
    """No Ray cluster at the address, or one that refused us."""


class ClusterAddressError(UserError, ValueError):
    """An address that is none of the forms Ray accepts."""


class UnsatisfiableResources(UserError, ValueError):
    """A trial asks for more than any one node of the cluster has: it would wait forever."""


def address_kind(address: str | None) -> AddressKind:
    """Which kind of address this is; a malformed one raises ClusterAddressError naming the accepted forms."""
    if not address:
        return "local"
    if address == "auto":
        return "auto"
    rest = address.removeprefix("ray://")
    match = _HOST_PORT.match(rest)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise ClusterAddressError(f"address must be 'auto', 'HOST:PORT' or 'ray://HOST:PORT', "
                                  f"got {address!r}")
    return "client" if address.startswith("ray://") else "gcs"


def check_address(address: str | None) -> AddressKind:
    """The address's kind, once it is well-formed and, for HOST:PORT and ray://HOST:PORT, something listens
    there (ClusterAddressError, ClusterConnectError otherwise): what a sweep checks before its folder exists."""
    kind = address_kind(address)
    if kind in ("gcs", "client"):
        _reachable(str(address))
    return kind


def auth_environment(auth_token: str | None) -> dict[str, str]:
    """Variables that make this process present `auth_token` to a cluster with token authentication."""
    if auth_token is None:
        return {}
    if not auth_token.strip():
        raise ClusterConnectError("auth_token must be the cluster's token (`ray get-auth-token` on the "
                                  "head), got ''")
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": auth_token.strip()}


def connect(address: str | None = None, *, auth_token: str | None = None, num_cpus: int | None = None,
            num_gpus: int | None = None, object_store_mb: int = 200,
            resources: Mapping[str, float] | None = None) -> str:
    """Join the cluster at `address` (or start a local Ray); return the address joined.

    `num_cpus`, `num_gpus`, `object_store_mb` and `resources` size a local Ray only.
    """
    import ray

    kind = check_address(address)
    os.environ.update(auth_environment(auth_token))
    try:
        if kind == "local":
            context = ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, resources=dict(resources or {}),
                               object_store_memory=object_store_mb * 2**20, include_dashboard=False,
                               logging_level=logging.ERROR)
        else:
            context = ray.init(address=address, logging_level=logging.ERROR)
    except ConnectionError as error:
        reason = str(error).splitlines()[0].rstrip(".")
        raise ClusterConnectError(f"no Ray cluster answered at {address!r}: {reason}. "
                                  f"Start one with `ray start --head`, or check the address") from None
    except (ray.exceptions.AuthenticationError, RuntimeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if not isinstance(error, ray.exceptions.AuthenticationError) and "auth" not in message.lower():
            raise
        raise ClusterConnectError(f"the Ray cluster at {address!r} refused us: {message}. Set "
                                  f"RAY_AUTH_MODE=token and copy the head node's token (`ray get-auth-token` "
                                  f"there) to ~/.ray/auth_token") from None
    return str(getattr(context, "address_info", {}).get("address") or address or "local")


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at HOST:PORT (ray.init would retry for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ClusterConnectError(f"nothing answers at {address!r} ({error}). Is the head node up? The GCS "
                                  f"port is 6379 by default, the Ray Client port 10001") from None


@contextmanager
def connected(address: str | None = None, **options: Any) -> Iterator[None]:
    """Within the block Ray is connected; a connection made here is closed at the end."""
    import ray

    if ray.is_initialized():
        yield
        return
    connect(address, **options)
    try:
        yield
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class NodeStatus:
    """One node: its resources in all and free now (None when Ray cannot tell)."""

    node_id: str
    ip: str
    alive: bool
    head: bool
    total: dict[str, float]
    free: dict[str, float] | None


@dataclass(frozen=True)
class ClusterStatus:
    """The nodes of a cluster and its resources in all and free (None if unknown), summed over live nodes."""

    nodes: tuple[NodeStatus, ...]
    total: dict[str, float]
    free: dict[str, float] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(nodes: list[Mapping[str, Any]],
              free_by_node: Mapping[str, Mapping[str, float]] | None) -> ClusterStatus:
    """A ClusterStatus from `ray.nodes()` rows and free resources per node id (bookkeeping keys dropped)."""
    summary = []
    for node in nodes:
        node_id = str(node["NodeID"])
        total = _resources(node.get("Resources", {}))
        free = None if free_by_node is None else _resources(free_by_node.get(node_id, {}))
        head = "node:__internal_head__" in node.get("Resources", {})
        ip = str(node.get("NodeManagerAddress", ""))
        summary.append(NodeStatus(node_id, ip, bool(node.get("Alive")), head, total, free))
    summary.sort(key=lambda n: (not n.head, not n.alive, n.ip, n.node_id))
    live = [n for n in summary if n.alive]
    free_total = None if free_by_node is None else _add(n.free or {} for n in live)
    return ClusterStatus(tuple(summary), _add(n.total for n in live), free_total)


def cluster_status() -> ClusterStatus:
    """The status of the cluster Ray is connected to (connect first)."""
    import ray
    from ray._private import state  # free resources per node: no public API without the dashboard

    try:
        free = state.available_resources_per_node()
    except Exception as error:
        log.info("free resources per node unavailable: %s", error)
        free = None
    return summarize(ray.nodes(), free)


def format_status(status: ClusterStatus) -> str:
    """A few lines for people: one per node, then the totals."""
    lines = []
    for node in status.nodes:
        role = "head" if node.head else "worker"
        state = "" if node.alive else " (dead)"
        lines.append(f"{role} {node.ip} {node.node_id[:8]}{state}: {_describe(node.total, node.free)}")
    live = sum(n.alive for n in status.nodes)
    lines.append(f"cluster: {live} live nodes, {_describe(status.total, status.free)}")
    return "\n".join(lines)


def check_fits(request: Mapping[str, float], status: ClusterStatus, where: str = "the cluster") -> None:
    """Raise UnsatisfiableResources unless one live node has, in all, what one trial asks for.

    Ray Tune would otherwise keep the trial pending forever (a GPU on a CPU-only machine, a
    custom resource no node defines); free resources do not matter here, only totals.
    """
    wanted = {key: float(value) for key, value in request.items() if value}
    nodes = [node.total for node in status.nodes if node.alive]
    if any(all(node.get(key, 0.0) >= value for key, value in wanted.items()) for node in nodes):
        return
    asked = ", ".join(f"{key} {value:g}" for key, value in wanted.items())
    raise UnsatisfiableResources(
        f"resources per trial must fit on one node of {where}, got {asked}; {where} has "
        f"{_describe(status.total, None)} ({len(nodes)} live node{'s' if len(nodes) != 1 else ''}). Lower "
        f"resources.cpu / resources.gpu / resources.custom, or join a cluster that has them (--address)")


def _resources(raw: Mapping[str, float]) -> dict[str, float]:
    """Drop Ray's bookkeeping entries (node:<ip>, placement-group bundle shares); keep the rest."""
    return {k: float(v) for k, v in raw.items() if not k.startswith("node:") and "_group_" not in k
            and not k.startswith("bundle_group")}


def _add(parts: Any) -> dict[str, float]:
    total: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0.0) + value
    return total


def _describe(total: Mapping[str, float], free: Mapping[str, float] | None) -> str:
    def amount(key: str, value: float) -> str:
        return f"{value / 2**30:.1f} GiB" if key in ("memory", "object_store_memory") else f"{value:g}"

    keys = [k for k in STANDARD if k in total] + sorted(k for k in total if k not in STANDARD)
    parts = []
    for key in keys:
        used = f"{amount(key, free.get(key, 0.0))} free of " if free is not None else ""
        parts.append(f"{key} {used}{amount(key, total[key])}")
    return ", ".join(parts) or "no resources"
