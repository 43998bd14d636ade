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
from search.folder import folder_name
from tests.helpers import no_process_left_behind
from tests.integration.conftest import planted_sweep_args

pytestmark = pytest.mark.slow


@pytest.fixture
def two_nodes():
    """A head and a worker node (ray.cluster_utils), one CPU each; only they are stopped after, and none of
    their processes (a killed node's orphaned workers included) may outlive the test."""
    from ray.cluster_utils import Cluster
    with no_process_left_behind():
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


def attempts_of(trial: Path) -> list[dict]:
    return [json.loads(line) for line in (trial / "attempts.jsonl").read_text().splitlines()]


@pytest.mark.timeout(600)
def test_sweep_runs_on_both_nodes_and_records_them(two_nodes, planted_model, tmp_path):
    cluster, _ = two_nodes
    folder = tmp_path / "sweep"
    assert main(planted_sweep_args(planted_model, folder, "--address", cluster.address, "--scheduler", "fifo",
                                   "--set", "controls.top_k=0", "--set", "hypotheses.seeds=[0, 1]")) == 0
    runs = child_runs(folder)
    assert len(runs) == 16
    nodes = {run.data.tags["node_id"] for run in runs}
    assert len(nodes) == 2, f"trials ran on {len(nodes)} node(s)"


@pytest.mark.timeout(900)
def test_losing_the_worker_node_retries_its_trials_on_the_head(two_nodes, planted_model, tmp_path):
    cluster, worker = two_nodes
    head, lost = cluster.head_node.node_id, worker.node_id
    folder = tmp_path / "lost"
    args = planted_sweep_args(planted_model, folder, "--address", cluster.address, "--scheduler", "fifo",
                              "--set", "controls.top_k=0", "--set", "hypotheses.seeds=[0, 1]",
                              "--set", "train.max_steps=400", "--set", "resources.max_failures=3")
    killed = threading.Event()

    def running_on_the_worker() -> bool:
        """Whether a trial has started on the worker node and not finished: the moment to lose the node (a
        trial takes a second or two, so "after two summaries" could fall between the worker's trials)."""
        try:
            return any(not (trial / "summary.json").exists() and (trial / "attempts.jsonl").exists()
                       and attempts_of(trial)[-1]["node_id"] == lost for trial in folder.glob("trials/*"))
        except ValueError:  # a line being written: look again
            return False

    def kill_worker_node_mid_sweep() -> None:
        deadline_at = time.time() + 300
        while time.time() < deadline_at and not running_on_the_worker():
            time.sleep(0.05)
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
    # The trials running on the worker when it died started again, on the head, and finished there.
    attempts = {trial.name: attempts_of(trial) for trial in folder.glob("trials/*")}
    retried = {name: [a["node_id"] for a in tries] for name, tries in attempts.items() if len(tries) > 1}
    assert retried, f"no trial was retried after the node loss: {attempts}"
    assert all(nodes[0] == lost and nodes[-1] == head for nodes in retried.values()), retried
    assert {folder_name(row["key"]) for row in rows if row["attempts"] != "1"} == set(retried)


@pytest.mark.timeout(300)
def test_without_an_address_a_sweep_starts_its_own_ray_beside_a_running_cluster(two_nodes, planted_model, tmp_path):
    """A cluster this machine runs (here the test's) leaves its address behind; `ray.init(num_cpus=...)` would
    then refuse to start. A sweep without --address runs on a Ray of its own, not on that cluster."""
    cluster, worker = two_nodes
    folder = tmp_path / "own"
    assert main(planted_sweep_args(planted_model, folder, "--scheduler", "fifo", "--set", "controls.top_k=0",
                                   "--set", 'hypotheses.causal_models=["planted"]', "--set", 'hypotheses.layers="1"',
                                   "--set", 'hypotheses.positions=["last"]')) == 0
    nodes = {run.data.tags["node_id"] for run in child_runs(folder)}
    assert len(nodes) == 1 and not nodes & {cluster.head_node.node_id, worker.node_id}
