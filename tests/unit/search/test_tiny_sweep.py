"""One tiny real sweep in the fast suite: Ray Tune, MLflow, controls, the report and the verdict, end to end.

A model that solves the planted task (tests/unit/conftest.py `aligned`), two hypotheses (the
planted variable at the last token, where it lives, and at a filler token, where it cannot),
a few steps each under FIFO, then the random-rotation control of the best. Ray is started once
here and the sweep joins it (both phases), so the whole run takes well under a minute.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from alignment.timing import read_phases
from search.cli import main
from search.folder import SweepFolder
from tests.unit.search.cli_run import PLANTED

STRONG, WEAK = "planted:in_set@L1:last:das#s0", "planted:in_set@L1:filler:das#s0"


@pytest.fixture(scope="module")
def tiny_sweep(aligned, tmp_path_factory):
    """(sweep folder, what the CLI printed) of the tiny sweep, run once on a Ray this fixture starts."""
    import ray

    _, trained = aligned
    folder = tmp_path_factory.mktemp("tiny_sweep") / "sweep"
    sets = [f'model_path="{trained / "model"}"', f'task="{PLANTED}"', 'hypotheses.causal_models=["planted"]',
            'hypotheses.layers=[1]', 'hypotheses.positions=["filler", "last"]', 'hypotheses.interventions=["das"]',
            'intervention.kind="das"', "intervention.subspace_dim=1", "data.n_train=200", "data.n_dev=50",
            "data.n_test=50", "train.max_steps=60", "train.eval_every=20", "train.batch_size=32", "train.lr=0.01",
            'controls.kinds=["random_rotation"]', "controls.seeds=[1]", "resources.concurrency=2"]
    args = ["sweep", "--out", str(folder), "--scheduler", "fifo"] + [a for s in sets for a in ("--set", s)]
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False,
             configure_logging=False)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            code = main(args)
        assert ray.is_initialized(), "the sweep shut down the Ray it joined"
    finally:
        ray.shutdown()
    assert code == 0, printed.getvalue()[-3000:]
    return folder, printed.getvalue()


def rows_of(folder: Path) -> dict[str, dict[str, str]]:
    return {row["key"]: row for row in csv.DictReader((folder / "results.csv").read_text().splitlines())}


def test_the_sweep_writes_its_report_and_says_where(tiny_sweep):
    folder, printed = tiny_sweep
    for name in ("results.csv", "report.md", "report.json", "heatmap_planted.png"):
        assert (folder / name).is_file(), name
    assert f"results: {folder / 'results.csv'} and {folder / 'report.md'}" in printed
    assert f"align-search ui {folder}" in printed
    rows = rows_of(folder)
    grid = {key for key, row in rows.items() if row["phase"] == "grid"}
    controls = {row["role"] for row in rows.values() if row["phase"] == "controls"}
    assert grid == {STRONG, WEAK}
    assert {"random_rotation", "hypothesis"} <= controls  # the best hypothesis' control and its extra seed


def test_the_planted_site_wins_and_the_filler_stays_at_chance(tiny_sweep):
    folder, printed = tiny_sweep
    rows = rows_of(folder)
    assert rows[STRONG]["status"] == "finished" and float(rows[STRONG]["test_iia"]) >= 0.9
    assert float(rows[WEAK]["test_iia"]) <= 0.75  # a filler comes before the key: nothing there to swap
    control = next(row for row in rows.values() if row["role"] == "random_rotation")
    assert (control["layer"], control["position"], control["status"]) == ("1", "last", "finished")
    report = json.loads((folder / "report.json").read_text())
    assert report["ranking"][0]["position"] == "last"
    verdict = report["verdict"]["causal_models"]["planted"]
    assert verdict["best"].startswith("planted:in_set@L1:last")
    lines = printed.splitlines()
    said = [i for i, line in enumerate(lines) if line.strip().startswith("planted: ")]
    assert said and verdict["best"] in lines[said[0] + 1], "the closing lines name the verdict's hypothesis"


def test_every_trial_is_a_child_run_with_its_iia_curve(tiny_sweep):
    folder, _ = tiny_sweep
    state = json.loads((folder / "state.json").read_text())
    client = MlflowClient(f"sqlite:///{folder.resolve() / 'mlflow.db'}")
    runs = client.search_runs([state["experiment_id"]], max_results=100)
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == state["parent_run_id"]}
    assert set(children) == set(rows_of(folder))
    strong = children[STRONG]
    assert strong.info.status == "FINISHED" and strong.data.params["position"] == "last"
    steps = [m.step for m in client.get_metric_history(strong.info.run_id, "dev_iia")]
    assert sorted(steps) == [20, 40, 60]
    parent = client.get_run(state["parent_run_id"])
    assert parent.info.status == "FINISHED" and "best_iia.planted" in parent.data.metrics


def test_the_sweep_and_every_trial_say_where_their_seconds_went(tiny_sweep):
    folder, _ = tiny_sweep
    driver = read_phases(folder / "timings.json")
    assert {"prepare", "caches", "ray_start", "grid", "controls", "report", "tracking"} <= set(driver)
    assert driver["ray_start"]["count"] == 1  # one Ray (here: joined) for both Tune runs
    order = ("prepare", "caches", "ray_start", "grid")  # Ray starts beside the caches, once the data is checked
    assert [driver[name]["started"] for name in order] == sorted(driver[name]["started"] for name in order)
    built = [path.stat().st_mtime for path in (folder / "cache").glob("*.npy")]
    assert built and max(built) < driver["grid"]["started"]  # by the driver, before any trial
    for key in (STRONG, WEAK):  # FIFO: both ran all 60 steps, evaluated at 20, 40, 60
        trial = read_phases(SweepFolder(folder).trial_dir(key) / "timings.json")
        assert trial["step"]["count"] == 60 and trial["dev_eval"]["count"] == 3, trial
        assert trial["checkpoint"]["count"] == 3 and trial["tune_report"]["count"] == 3
        assert {"inputs", "model", "data", "site", "prealign", "test_eval", "save"} <= set(trial)
