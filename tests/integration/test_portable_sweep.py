"""A moved or copied sweep folder opens (ui), reports and resumes in place: nothing in it points elsewhere."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from search.cli import main
from tests.helpers import free_port
from tests.integration.conftest import cli_process, planted_sweep_args, wait_for
from tests.integration.test_mlflow_ui import stop_ui

pytestmark = pytest.mark.slow


def runs(folder: Path) -> dict[str, str]:
    """Every run in the folder's own store: run id -> artifact URI."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = json.loads((folder / "state.json").read_text())["experiment_id"]
    return {run.info.run_id: run.info.artifact_uri for run in client.search_runs([experiment])}


def test_a_moved_and_a_copied_sweep_open_report_and_resume_in_place(planted_model, tmp_path):
    original = tmp_path / "original"
    assert main(planted_sweep_args(planted_model, original, "--scheduler", "fifo", "--set", "controls.top_k=0",
                                   "--set", 'hypotheses.causal_models=["planted"]', "--set", 'hypotheses.layers="1"',
                                   "--set", 'hypotheses.positions=["last"]')) == 0
    before = runs(original)
    assert json.loads((original / "state.json").read_text())["tracking_uri"] == "mlflow.db"  # relative, not a path
    copied, moved = tmp_path / "copied", tmp_path / "moved"
    shutil.copytree(original, copied, symlinks=True)
    original.rename(moved)

    assert main(["report", str(moved)]) == 0
    assert main(["sweep", "--resume", str(moved)]) == 0  # every trial finished: it reports them again
    after = runs(moved)
    assert set(after) == set(before)  # the same parent and child runs: none made again elsewhere
    assert all(uri.startswith((moved / "mlartifacts").as_uri()) for uri in after.values()), after
    assert not original.exists()  # nothing recreated where the folder used to be

    port, log = free_port(), tmp_path / "ui.log"
    ui = cli_process(["ui", str(copied), "--port", str(port)], log)
    try:
        wait_for(lambda: "MLflow UI: " in log.read_text(), 240, "the UI's announcement", log)
        child = next(run for run, uri in runs(copied).items() if run != json.loads(
            (copied / "state.json").read_text())["parent_run_id"])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/artifacts/list?run_id={child}",
                                    timeout=30) as answer:
            files = {entry["path"] for entry in json.loads(answer.read())["files"]}
        assert {"summary.json", "config.json"} <= files  # served from the copy's own mlartifacts/
        assert all(uri.startswith((copied / "mlartifacts").as_uri()) for uri in runs(copied).values())
    finally:
        stop_ui(ui)
    assert not original.exists()
