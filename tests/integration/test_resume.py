"""--resume after the driver is killed at the two moments test_sweep.py leaves out: after ASHA stopped trials,
and during the controls phase. Nothing finished or stopped runs again; the sweep ends as one sweep."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest

from search.cli import main
from tests.integration.conftest import cli_process, kill_group, planted_sweep_args, wait_for
from tests.integration.test_faults import attempts_of, children_of

pytestmark = pytest.mark.slow


def rows_of(folder: Path) -> dict[str, dict[str, str]]:
    rows = list(csv.DictReader((folder / "results.csv").read_text().splitlines()))
    assert len({r["key"] for r in rows}) == len(rows), "a trial has two rows"
    return {r["key"]: r for r in rows}


def statuses(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in folder.glob("trials/*/status.json")}


def kill_driver_when(args: list[str], tmp_path: Path, ready, what: str) -> None:
    """Start the sweep, kill -9 its driver once `ready()` holds, then everything it started."""
    log = tmp_path / "driver.log"
    driver = cli_process(args, log)
    try:
        wait_for(ready, 400, what, log)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        kill_group(driver.pid)
    assert not (tmp_path / "sweep" / "results.csv").exists(), "the sweep finished before it was killed"


def test_resume_after_asha_stopped_trials_keeps_them_stopped(planted_model, tmp_path):
    folder = tmp_path / "sweep"
    args = planted_sweep_args(planted_model, folder, "--set", "scheduler.grace_period=1",
                              "--set", "scheduler.reduction_factor=2", "--set", "scheduler.collapse_width=-1",
                              "--set", 'hypotheses.causal_models=["planted"]', "--set", "hypotheses.seeds=[0, 1, 2]",
                              "--set", "controls.top_k=0", "--set", "train.max_steps=150",
                              "--set", "resources.concurrency=1")

    def asha_stopped() -> list[str]:
        return [name for name, s in statuses(folder).items() if s.get("status") == "stopped_early"]

    kill_driver_when(args, tmp_path, lambda: len(asha_stopped()) >= 1, "a trial stopped by ASHA")
    stopped = {name: statuses(folder)[name] for name in asha_stopped()}
    tries = {name: len(attempts_of(folder / "trials" / name)) for name in stopped}

    assert main(["sweep", "--resume", str(folder)]) == 0
    after = statuses(folder)
    for name, status in stopped.items():
        assert after[name] == status, f"{name} was stopped by ASHA before the kill and changed on resume"
        assert len(attempts_of(folder / "trials" / name)) == tries[name], f"{name} ran again"
    rows = rows_of(folder)
    assert len(rows) == 12 and all(r["status"] in ("finished", "stopped_early") for r in rows.values())
    assert set(children_of(folder)) == set(rows)


def test_resume_during_the_controls_phase_finishes_it_without_rerunning_the_grid(planted_model, tmp_path):
    folder = tmp_path / "sweep"
    args = planted_sweep_args(planted_model, folder, "--scheduler", "fifo",
                              "--set", 'hypotheses.causal_models=["planted"]', "--set", 'hypotheses.layers="1"',
                              "--set", 'controls.kinds=["random_rotation", "full_swap"]', "--set", "controls.seeds=[1]",
                              "--set", "train.max_steps=200", "--set", "resources.concurrency=1")

    def controls_started() -> bool:
        return any(p.parent.name.endswith(("~random_rotation", "~full_swap", "#s1"))
                   for p in folder.glob("trials/*/attempts.jsonl"))

    kill_driver_when(args, tmp_path, controls_started, "a control trial started")
    grid = {p: p.stat().st_mtime_ns for p in folder.glob("trials/*#s0/summary.json")}
    assert len(grid) == 2, "both grid trials should have finished before the controls phase"

    assert main(["sweep", "--resume", str(folder)]) == 0
    assert {p: p.stat().st_mtime_ns for p in grid} == grid, "a grid trial ran again"
    rows = rows_of(folder)
    controls = sorted(r["role"] for r in rows.values() if r["phase"] == "controls")
    assert controls == ["full_swap", "hypothesis", "random_rotation"], rows.keys()
    assert all(r["status"] in ("finished", "stopped_early") for r in rows.values())
    assert set(children_of(folder)) == set(rows)
    verdict = json.loads((folder / "report.json").read_text())["verdict"]["causal_models"]["planted"]
    assert verdict["best"].startswith("planted:in_set@L1:last")
