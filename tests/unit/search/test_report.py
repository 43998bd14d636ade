"""The report on a hand-made sweep folder (no Ray, no model): one scoring rule, dev selects, test reports."""

import csv
import json
import random

import pytest

from causal_models import Hypothesis
from search.config import default_config
from search.folder import SweepFolder, TrialSpec, data_name
from search.report import COLUMNS, trial_rows, write_report
from tests.helpers import control_summary, trial_summary

TEST_PAIRS = 200


def correct(share: float, seed: int) -> str:
    rng = random.Random(seed)
    return "".join("1" if rng.random() < share else "0" for _ in range(TEST_PAIRS))


def scored(test: str, dev: float, widths: int = 4) -> dict:
    return {"prealign_accuracy": 1.0, "best_dev_iia": dev, "best_step": 300, "test_iia": test.count("1") / len(test),
            "test_iia_full_vocab": 0.9, "test_correct": test, "test_iia_ci_low": 0.0, "test_iia_ci_high": 1.0,
            "boundary_widths": {"left_boundary": widths}, "hidden_size": 64, "n_test": len(test)}


def untrained(test: str, **fields) -> dict:
    """An untrained control's scores (no dev IIA: it never trained)."""
    return {**{k: v for k, v in scored(test, 0.0).items() if k not in ("best_dev_iia", "best_step")}, **fields}


@pytest.fixture
def sweep(tmp_path):
    """left_boundary at L0 (finished, three seeds, with controls) and L1 (stopped by ASHA, better test IIA
    than L0 but worse dev IIA), and the control causal model mid_point_distance at L0."""
    folder = SweepFolder(tmp_path / "sweep")
    folder.path.mkdir()
    folder.write_config(default_config())
    l0, l1 = (Hypothesis("left_boundary", ("left_boundary",), layer, "last") for layer in (0, 1))
    grid = TrialSpec(l0, 0)
    specs = {grid: ("summary", scored(correct(0.97, 0), 0.96)),
             TrialSpec(l1, 0): ("stopped", scored(correct(0.99, 1), 0.7)),
             TrialSpec(Hypothesis("mid_point_distance", ("mid_point",), 0, "last"), 0): (
                 "summary", scored(correct(0.55, 2), 0.56)),
             TrialSpec(Hypothesis("bracket_identity", ("bracket",), 0, "last"), 0): (
                 "summary", scored(correct(0.5, 8), 0.52)),
             TrialSpec(l0, 1, "controls"): ("summary", scored(correct(0.96, 3), 0.95)),
             TrialSpec(l0, 2, "controls"): ("summary", scored(correct(0.98, 4), 0.97)),
             TrialSpec(l0, 0, "controls", "random_rotation", grid.key): (
                 "control", untrained(correct(0.5, 5), test_iia_sd=0.02, draws=10)),
             TrialSpec(l0, 0, "controls", "full_swap", grid.key): ("control", untrained(correct(0.99, 6))),
             TrialSpec(l0, 0, "controls", "random_model", grid.key): ("failed", {})}
    folder.write_trials(list(specs))
    for spec, (kind, values) in specs.items():
        folder.trial_dir(spec.key).mkdir(parents=True)
        if kind in ("summary", "control"):
            summary = trial_summary(**values) if kind == "summary" else control_summary(**values)
            (folder.trial_dir(spec.key) / "summary.json").write_text(json.dumps(summary))
        elif kind == "stopped":
            folder.write_best(spec.key, values)
            folder.write_status(spec.key, status="stopped_early", stopped_by="asha", step=100, best_dev_iia=0.7)
        else:
            folder.write_status(spec.key, status="failed", error="RuntimeError: out of memory")
    for name, variables in (("left_boundary", ("left_boundary",)), ("mid_point_distance", ("mid_point",)),
                            ("bracket_identity", ("bracket",))):
        data = folder.path / "data" / data_name(name, variables)
        data.mkdir(parents=True)
        (data / "stats.json").write_text(json.dumps({"test": {"unchanged_share": 0.5, "floor_copy_source": 0.74}}))
    return folder, grid


def test_every_trial_is_scored_on_test_and_hypotheses_are_ranked_on_dev(sweep):
    folder, _ = sweep
    report = write_report(folder)
    rows = {r["key"]: r for r in csv.DictReader((folder.path / "results.csv").read_text().splitlines())}
    assert list(next(iter(rows.values()))) == list(COLUMNS)
    stopped = rows["left_boundary@L1:last:boundless#s0"]
    assert (stopped["status"], stopped["stopped_by"], stopped["stopped_at_step"]) == ("stopped_early", "asha", "100")
    assert float(stopped["test_iia"]) == correct(0.99, 1).count("1") / TEST_PAIRS  # its test IIA at its best dev state
    assert rows["left_boundary@L0:last:boundless#s0~random_model"]["error"] == "RuntimeError: out of memory"
    assert all(rows[k]["floor_copy_source"] == "0.74" for k in rows)
    ranking = report["ranking"]
    assert [r["hypothesis"] for r in ranking][:2] == ["left_boundary@L0:last:boundless",
                                                      "left_boundary@L1:last:boundless"]  # by dev, not by test
    assert ranking[1]["mean"] > ranking[0]["mean"]
    first = ranking[0]
    assert first["seeds"] == 3 and first["floor_no_op"] == 0.5 and first["floor_copy_source"] == 0.74
    assert first["test_iia_ci_low"] < first["mean"] < first["test_iia_ci_high"]
    assert report["stopped_early"] == [{"key": "left_boundary@L1:last:boundless#s0", "step": 100, "stopped_by": "asha"}]


def test_a_failed_control_leaves_the_verdict_unchecked_with_its_evidence(sweep):
    folder, _ = sweep
    typed = write_report(folder)["verdict"].causal_models["left_boundary"]
    verdict = json.loads((folder.path / "report.json").read_text())["verdict"]["causal_models"]["left_boundary"]
    assert typed.to_dict() == verdict and typed.judgement.state == "unchecked"
    assert verdict["best"] == "left_boundary@L0:last:boundless" and verdict["seeds"] == 3
    assert (verdict["found"], verdict["state"], verdict["kind"]) == (False, "unchecked", None)
    assert verdict["controls"]["random_model"]["state"] == "failed"
    rotation = verdict["controls"]["random_rotation"]
    assert rotation["state"] == "ran" and rotation["sd"] == 0.02 and abs(rotation["iia"] - 0.5) < 0.06
    assert verdict["floors"] == {"no_op": 0.5, "copy_source": 0.74} and verdict["widths"] == {"left_boundary": 4}
    assert verdict["site_width"] == 64 and verdict["ci95"][0] < verdict["iia"] < verdict["ci95"][1]
    report_md = (folder.path / "report.md").read_text()
    assert "unchecked (random model failed (RuntimeError: out of memory))" in report_md


def test_with_every_control_run_the_same_sweep_is_found_as_a_subspace(sweep):
    folder, grid = sweep
    control = f"{grid.key}~random_model"
    (folder.trial_dir(control) / "status.json").unlink()
    (folder.trial_dir(control) / "summary.json").write_text(json.dumps(trial_summary(**scored(correct(0.6, 7), 0.6))))
    verdict = write_report(folder)["verdict"].causal_models["left_boundary"]
    assert (verdict.judgement.found, verdict.judgement.kind) == (True, "subspace"), verdict.judgement.reason
    assert verdict.evidence.control_models == {"mid_point_distance": pytest.approx(0.55, abs=0.06),
                                                "bracket_identity": pytest.approx(0.5, abs=0.06)}


def test_a_control_causal_model_left_out_of_the_sweep_is_a_missing_control(sweep):
    folder, _ = sweep
    folder.write_trials([s for s in folder.read_trials() if s.hypothesis.causal_model != "bracket_identity"])
    verdict = write_report(folder)["verdict"].causal_models["left_boundary"]
    assert "control causal model bracket_identity has no result" in " ".join(verdict.judgement.unchecked)


def test_the_verdict_stays_on_the_hypothesis_whose_controls_ran(sweep):
    """More seeds can reorder the dev ranking after the controls were planned: the verdict is on the
    hypothesis the controls were run for, never on one whose controls never ran."""
    folder, _ = sweep
    stopped = "left_boundary@L1:last:boundless#s0"
    folder.write_best(stopped, scored(correct(0.99, 1), 0.99))
    report = write_report(folder)
    assert report["ranking"][0]["hypothesis"] == "left_boundary@L1:last:boundless"
    assert report["verdict"].causal_models["left_boundary"].best == "left_boundary@L0:last:boundless"


def test_a_summary_that_is_not_a_trials_result_is_skipped_with_a_warning(sweep, caplog):
    """summary.json is read back strictly (`alignment.results`): one that is not a result counts as not run."""
    folder, grid = sweep
    path = folder.trial_dir(grid.key) / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "best_dev_iia": "high"}))
    rows = {row["key"]: row for row in trial_rows(folder)}
    assert rows[grid.key]["status"] == "pending" and rows[grid.key].get("test_iia") is None
    assert f"skipping {path}: not a trial's result (best_dev_iia must be float, got 'high'" in caplog.text
