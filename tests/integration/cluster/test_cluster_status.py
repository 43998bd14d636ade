"""`cluster_status` and `align-search cluster status` on a real two-node Ray cluster on 127.0.0.1."""

from __future__ import annotations

import json
import time

import pytest

from cluster.ray_cluster import cluster_status, connected
from search.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture
def two_nodes():
    """A head and a worker node (ray.cluster_utils) with custom resources; only they are stopped after."""
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"sweep_driver": 1}, "object_store_memory": 100 * 2**20,
        "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, resources={"das_worker": 2}, object_store_memory=100 * 2**20)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


@pytest.mark.timeout(180)
def test_status_sees_both_nodes_and_what_is_taken(two_nodes, capsys):
    import ray
    assert main(["cluster", "status", "--address", two_nodes.address, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["nodes"]) == 2 and [n["head"] for n in printed["nodes"]] == [True, False]
    assert printed["total"]["das_worker"] == 2 and printed["total"]["sweep_driver"] == 1
    assert printed["total"]["CPU"] == 2

    with connected(two_nodes.address):
        @ray.remote(num_cpus=0, resources={"das_worker": 1})
        class Holder:
            def node(self):
                return ray.get_runtime_context().get_node_id()

        holder = Holder.remote()
        node = ray.get(holder.node.remote())
        for _ in range(20):  # free resources reach the GCS within a heartbeat or two
            status = cluster_status()
            if status.free is not None and status.free.get("das_worker") == 1:
                break
            time.sleep(0.5)
        worker = next(n for n in status.nodes if not n.head)
        assert worker.node_id == node and worker.free is not None and worker.free["das_worker"] == 1
        assert status.free["das_worker"] == 1 and status.free["sweep_driver"] == 1
        ray.kill(holder)
    assert not ray.is_initialized()  # `connected` closed the connection it opened
