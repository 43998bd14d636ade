"""A sweep on a real two-node Ray cluster on 127.0.0.1: trials land on both nodes; losing a node is survived."""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from search.cli import main
from tests.integration.conftest import planted_sweep_args

pytestmark = pytest.mark.slow


@pytest.fixture
def two_nodes():
    """A head and a worker node (ray.cluster_utils), one CPU each; only they are stopped after."""
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 100 * 2**20, "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20)
        cluster.wait_for_nodes()
        yield cluster, worker
    finally:
        cluster.shutdown()


def child_runs(folder: Path) -> list:
    state = json.loads((folder / "state.json").read_text())
    client = MlflowClient(f"sqlite:///{folder.resolve() / 'mlflow.db'}")
    runs = client.search_runs([state["experiment_id"]], max_results=1000)
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == state["parent_run_id"]]


def test_sweep_runs_on_both_nodes_and_records_them(two_nodes, planted_model, tmp_path, deadline):
    cluster, _ = two_nodes
    deadline(600)
    folder = tmp_path / "sweep"
    assert main(planted_sweep_args(planted_model, folder, "--address", cluster.address, "--scheduler", "fifo",
                                   "--set", "controls.top_k=0", "--set", "hypotheses.seeds=[0, 1]")) == 0
    runs = child_runs(folder)
    assert len(runs) == 16
    nodes = {run.data.tags["node_id"] for run in runs}
    assert len(nodes) == 2, f"trials ran on {len(nodes)} node(s)"


def test_losing_the_worker_node_retries_its_trials_on_the_head(two_nodes, planted_model, tmp_path, deadline):
    cluster, worker = two_nodes
    deadline(900)
    folder = tmp_path / "lost"
    args = planted_sweep_args(planted_model, folder, "--address", cluster.address, "--scheduler", "fifo",
                              "--set", "controls.top_k=0", "--set", "hypotheses.seeds=[0, 1]",
                              "--set", "train.max_steps=120", "--set", "resources.max_failures=3")
    killed = threading.Event()

    def kill_worker_node_mid_sweep() -> None:
        deadline_at = time.time() + 300
        while time.time() < deadline_at and len(list(folder.glob("trials/*/summary.json"))) < 2:
            time.sleep(0.5)
        cluster.remove_node(worker, allow_graceful=False)
        killed.set()

    killer = threading.Thread(target=kill_worker_node_mid_sweep, daemon=True)
    killer.start()
    assert main(args) == 0
    killer.join(timeout=60)
    assert killed.is_set()
    rows = list(csv.DictReader((folder / "results.csv").read_text().splitlines()))
    assert len(rows) == 16 and all(row["status"] == "finished" for row in rows)
    assert len(child_runs(folder)) == 16
