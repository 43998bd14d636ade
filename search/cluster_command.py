"""`align-search cluster status`: the nodes of the Ray cluster a sweep would run on, and their free resources."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from search.flags import Parser


def register(sub: Any) -> None:
    p = sub.add_parser("cluster", help="the Ray cluster sweeps run on")
    actions = p.add_subparsers(dest="cluster_command", required=True, parser_class=Parser)
    status = actions.add_parser("status", help="nodes and free CPUs, GPUs, memory and custom resources")
    status.add_argument("--address", default="auto",
                        help="'auto' (the cluster this machine joined, the default), HOST:PORT or "
                             "ray://HOST:PORT")
    status.add_argument("--json", action="store_true", help="print JSON instead of lines")
    status.set_defaults(handler=cluster_status)


def cluster_status(args: argparse.Namespace, announce: Callable[[str], None]) -> Any:
    from alignment.config_io import ConfigError
    from cluster.ray_cluster import address_kind, cluster_status, connected, format_status

    if not args.address.strip():  # an empty address would quietly mean "start or join whatever is local"
        raise ConfigError("--address must be 'auto', 'HOST:PORT' or 'ray://HOST:PORT', got ''")
    address_kind(args.address)  # a malformed address is a user error before any connection attempt
    with connected(args.address):
        status = cluster_status()
    return status.to_dict() if args.json else format_status(status)
