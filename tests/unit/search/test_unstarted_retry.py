"""A trial that failed before its code started (its node or worker lost) runs once more; one that failed in
its own code does not (search.sweep._run_tune_phase)."""

from __future__ import annotations

from causal_models import Hypothesis
from search import sweep
from search.folder import SweepFolder, TrialSpec


class Tracker:
    def __init__(self) -> None:
        self.reopened: list[list[str]] = []

    def reopen(self, keys: list[str]) -> None:
        self.reopened.append(keys)


def test_only_the_trials_that_never_started_run_again(tmp_path, monkeypatch):
    folder = SweepFolder(tmp_path)
    specs = [TrialSpec(Hypothesis("planted", ("in_set",), layer, "last"), 0) for layer in range(4)]
    earlier = TrialSpec(Hypothesis("planted", ("in_set",), 9, "last"), 0)  # another phase's trial
    folder.write_trials([*specs, earlier])
    lost, own_fault, finished, retried_in_vain = (s.key for s in specs)
    runs: list[list[str]] = []

    def run_tune(config, folder_, run_specs, tracker, phase):
        runs.append([s.key for s in run_specs])
        if len(runs) == 1:  # the first pass: one lost before it started, one failing in its own code
            folder.write_status(lost, status="failed", error="The actor ... is unavailable")
            folder.record_attempt(own_fault, node_id="n", pid="1")
            folder.write_status(own_fault, status="failed", error="ValueError: bad")
            folder.record_attempt(finished, node_id="n", pid="1")
            folder.write_status(retried_in_vain, status="failed", error="The actor ... is unavailable")
            folder.write_status(earlier.key, status="failed", error="not this phase's")
        else:  # the second pass: the lost one finishes, the other fails again before starting
            folder.record_attempt(lost, node_id="head", pid="2")
            folder.write_status(retried_in_vain, status="failed", error="The actor ... is unavailable")

    monkeypatch.setattr(sweep, "_run_tune", run_tune)
    tracker = Tracker()
    sweep._run_tune_phase(None, folder, specs, tracker, "grid")  # type: ignore[arg-type]
    assert runs == [[s.key for s in specs], [lost, retried_in_vain]]  # once more, and only once
    assert tracker.reopened == [[lost, retried_in_vain]]
    assert folder.status(lost) is None and folder.attempts(lost)[-1]["node_id"] == "head"
    assert folder.status(own_fault)["status"] == "failed"  # failed in its own code: not run again
    assert folder.status(retried_in_vain)["status"] == "failed"
    assert folder.status(earlier.key)["status"] == "failed"  # not among this run's trials: left alone
