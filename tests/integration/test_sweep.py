"""Sweeps end to end on Ray Tune with MLflow: results, heatmaps, runs, ASHA, kill and resume."""

from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from alignment.results import TrialResult
from search.cli import main
from search.verdict import Control, Evidence, judge
from tests.integration.conftest import cli_process, kill_group, planted_sweep_args, wait_for

pytestmark = pytest.mark.slow


def runs_of(folder: Path) -> tuple[list, list]:
    client = MlflowClient(f"sqlite:///{folder.resolve() / 'mlflow.db'}")
    state = json.loads((folder / "state.json").read_text())
    runs = client.search_runs([state["experiment_id"]], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == state["parent_run_id"]]
    return parents, children


def test_sweep_writes_results_heatmaps_and_mlflow_runs(planted_model, tmp_path, capsys):
    folder = tmp_path / "sweep"
    assert main(planted_sweep_args(planted_model, folder, "--scheduler", "fifo")) == 0
    out = capsys.readouterr().out
    assert "heatmaps:" in out and "align-search ui" in out and "planted: FOUND (SUBSPACE)" in out
    rows = list(csv.DictReader((folder / "results.csv").read_text().splitlines()))
    grid = [r for r in rows if r["phase"] == "grid"]
    controls = {r["role"]: r for r in rows if r["phase"] == "controls"}
    # FIFO stops nothing, and das has a fixed width, so the collapse rule finds nothing to stop either.
    assert all(r["status"] == "finished" and r["stopped_by"] == "" for r in rows)
    assert len(grid) == 8
    # The best planted hypothesis got two more seeds and its three validity controls.
    assert set(controls) == {"hypothesis", "random_rotation", "random_model", "full_swap"} and len(rows) == 13
    assert (folder / "heatmap_planted.png").is_file() and (folder / "heatmap_key_low.png").is_file()
    for row in rows:  # every trial: test IIA with its interval, and the floors of its pairs
        assert float(row["test_iia_ci_low"]) <= float(row["test_iia"]) <= float(row["test_iia_ci_high"])
        assert row["floor_no_op"] and row["floor_copy_source"]
    best = {r["hypothesis"]: float(r["test_iia"]) for r in grid}
    assert best["planted:in_set@L1:last:das"] >= 0.95
    assert abs(best["planted:in_set@L0:filler:das"] - 0.5) <= 0.1
    assert controls["random_rotation"]["draws"] == "10" and float(controls["random_rotation"]["test_iia_sd"]) >= 0
    report = json.loads((folder / "report.json").read_text())
    verdict = report["verdict"]["causal_models"]["planted"]
    # The true site: found, as a subspace (1 of 32 dimensions, far above 1 random dimension).
    assert (verdict["found"], verdict["state"], verdict["kind"]) == (True, "found", "subspace"), verdict["reason"]
    assert ":last:das" in verdict["best"] and verdict["iia"] >= 0.95 and verdict["seeds"] == 3
    assert verdict["ci95"][0] <= verdict["iia"] <= verdict["ci95"][1]
    assert verdict["widths"] == {"in_set": 1} and verdict["site_width"] == 32
    # In this task the variable *is* the answer: copying the source's answer is always right, so that floor is
    # the claim itself; the no-op floor (at most half the pairs unchanged) still applies.
    assert verdict["floors"]["copy_source"] == 1.0 and verdict["floors"]["no_op"] <= 0.5
    assert set(verdict["controls"]) == {"random_rotation", "random_model", "full_swap"}
    assert all(c["state"] == "ran" for c in verdict["controls"].values())
    assert verdict["controls"]["random_rotation"]["iia"] < 0.8 and verdict["controls"]["random_model"]["iia"] < 0.8
    # At the last position a full swap does as well as the subspace; it is described beside the verdict, not a rival.
    assert verdict["controls"]["full_swap"]["iia"] >= 0.95 and "full swap at this site scores" in verdict["reason"]
    # The filler site carries nothing: judged by the same rules it is not found (it sits on its no-op floor).
    filler = next(e for e in report["ranking"] if e["hypothesis"] == "planted:in_set@L0:filler:das")
    at_filler = judge(Evidence(iia=filler["mean"], ci95=(filler["test_iia_ci_low"], filler["test_iia_ci_high"]),
                               task_accuracy=verdict["task_accuracy"], widths={"in_set": 1}, site_width=32,
                               floors={"no_op": filler["floor_no_op"], "copy_source": filler["floor_copy_source"]},
                               controls={k: Control("ran", c["iia"], c["sd"]) for k, c in verdict["controls"].items()}))
    assert at_filler.state == "not found" and "no-op floor" in " ".join(at_filler.failed)
    parents, children = runs_of(folder)
    assert len(parents) == 1 and len(children) == 13
    for run in children:
        assert {"causal_model", "variables", "layer", "position", "intervention", "seed"} <= set(run.data.params)
        assert run.data.tags["status"] == "finished" and run.data.tags["stopped_by"] == ""
        scored = {"prealign_accuracy", "test_iia", "test_iia_ci_low", "test_iia_ci_high", "floor_no_op"}
        trained = run.data.tags["role"] not in ("random_rotation", "full_swap")  # the untrained controls
        assert scored | ({"dev_iia", "loss"} if trained else set()) <= set(run.data.metrics)
        assert run.info.status == "FINISHED"
    assert {"best_iia.planted", "best_iia.key_low"} <= set(parents[0].data.metrics)
    assert parents[0].data.tags["verdict.planted"] == "found (subspace)"


def test_asha_stops_weak_hypotheses_early(planted_model, tmp_path):
    folder = tmp_path / "asha"
    extra = ["--set", "scheduler.grace_period=1", "--set", "scheduler.reduction_factor=2", "--set", "controls.top_k=0",
             "--set", 'hypotheses.causal_models=["planted"]', "--set", "hypotheses.seeds=[0, 1, 2]",
             "--set", "scheduler.collapse_width=-1"]
    assert main(planted_sweep_args(planted_model, folder, *extra)) == 0
    report = json.loads((folder / "report.json").read_text())
    # Which trials ASHA stops depends on the order they reach a rung, so only this is asserted: some were
    # stopped, before the end, and (the collapse rule being off) every one of them by ASHA, by its own record.
    assert len(report["stopped_early"]) >= 1
    assert all(s["stopped_by"] == "asha" and s["step"] < 60 for s in report["stopped_early"])
    stopped = {s["key"] for s in report["stopped_early"]}
    rows = {r["key"]: r for r in csv.DictReader((folder / "results.csv").read_text().splitlines())}
    assert all(rows[key]["test_iia"] for key in stopped)  # scored on test at their best dev state, like the rest
    assert report["ranking"][0]["position"] == "last"
    assert not any(":last:" in key and "@L1" in key for key in stopped)  # the strong hypothesis runs to the end
    # No control ran (controls.top_k=0), so even a perfect alignment is only "unchecked", never found.
    verdict = report["verdict"]["causal_models"]["planted"]
    assert verdict["iia"] >= 0.95 and verdict["state"] == "unchecked" and verdict["found"] is False


class _Trap:
    """Unpickling this writes a marker file: proof that something unpickled a file of the sweep folder."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_killed_driver_resumes_to_the_report_of_an_uninterrupted_sweep(planted_model, tmp_path):
    """kill -9 of the driver, then --resume: finished trials are not re-run, nothing is duplicated, no
    pickle Tune left in the folder is loaded, and the report equals an uninterrupted sweep's (same seeds)."""
    settings = ["--scheduler", "fifo", "--set", 'hypotheses.causal_models=["planted"]',
                "--set", "hypotheses.seeds=[0, 1]", "--set", "controls.top_k=0", "--set", "train.max_steps=120"]
    folder = tmp_path / "killed"
    driver = cli_process(planted_sweep_args(planted_model, folder, *settings, "--set", "resources.concurrency=1"))
    try:
        wait_for(lambda: len(list(folder.glob("trials/*/summary.json"))) >= 3, 300, "three finished trials")
        finished_before = {p: p.stat().st_mtime_ns for p in folder.glob("trials/*/summary.json")}
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        time.sleep(2)
        kill_group(driver.pid)  # the Ray processes this driver started
    assert len(finished_before) < 8, "the sweep finished before it was killed"
    marker = tmp_path / "unpickled"
    pickles = list(folder.rglob("*.pkl"))
    assert pickles, "Tune left no pickle in the sweep folder to booby-trap"
    for path in pickles:
        path.write_bytes(pickle.dumps(_Trap(str(marker))))

    assert main(["sweep", "--resume", str(folder)]) == 0
    assert not marker.exists(), "resume unpickled a file from the sweep folder"
    for path, stamp in finished_before.items():
        assert path.stat().st_mtime_ns == stamp, f"{path.parent.name} was re-run"
    rows = list(csv.DictReader((folder / "results.csv").read_text().splitlines()))
    assert len(rows) == 8 and len({r["key"] for r in rows}) == 8
    assert all(r["status"] == "finished" for r in rows)
    _, children = runs_of(folder)
    assert sorted(r.info.run_name for r in children) == sorted(r["key"] for r in rows)

    reference = tmp_path / "uninterrupted"
    assert main(planted_sweep_args(planted_model, reference, *settings)) == 0
    expected = {r["key"]: r for r in csv.DictReader((reference / "results.csv").read_text().splitlines())}
    assert {r["key"] for r in rows} == set(expected)
    for row in rows:
        assert abs(float(row["test_iia"]) - float(expected[row["key"]]["test_iia"])) <= 0.01, row["key"]
        assert abs(float(row["best_dev_iia"]) - float(expected[row["key"]]["best_dev_iia"])) <= 0.01, row["key"]
    resumed, uninterrupted = (json.loads((f / "report.json").read_text()) for f in (folder, reference))
    assert [r["hypothesis"] for r in resumed["ranking"]] == [r["hypothesis"] for r in uninterrupted["ranking"]]
    for mine, theirs in zip(resumed["ranking"], uninterrupted["ranking"]):
        assert abs(mine["mean"] - theirs["mean"]) <= 0.01
    assert {name: (v["best"], v["found"]) for name, v in resumed["verdict"]["causal_models"].items()} == {
        name: (v["best"], v["found"]) for name, v in uninterrupted["verdict"]["causal_models"].items()}


def test_a_sharded_sweep_runs_its_trials_on_two_workers(planted_model, tmp_path):
    folder = tmp_path / "sharded"
    args = planted_sweep_args(planted_model, folder, "--scheduler", "fifo", "--set", "hypotheses.shard=2",
                              "--set", 'hypotheses.causal_models=["planted"]', "--set", 'hypotheses.positions=["last"]',
                              "--set", 'hypotheses.layers="1"', "--set", "controls.top_k=0",
                              "--set", "resources.concurrency=1", "--set", "train.eval_every=30")
    assert main(args) == 0
    summary = TrialResult.read(next(folder.glob("trials/*/summary.json")))
    assert summary.workers == 2 and summary.test_iia >= 0.9
