"""Early stopping waits for a hard mask, spares the controls, and records who stopped a trial (no Ray running)."""

from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler

from alignment.config import PAPER_2023, InterventionConfig
from causal_models import Hypothesis
from search.config import SchedulerConfig, SweepConfig
from search.folder import TrialSpec
from search.tune_parts import (
    CollapseStopper,
    StopLedger,
    StopRule,
    SweepASHA,
    early_stopping,
    first_hard_step,
    hard_reports,
    may_stop,
)


def test_hard_reports_count_evaluations_after_the_mask_is_near_hard():
    # The 2023 schedule (50 -> 0.1 over 300 steps) is near-hard only for its last step: one hard report, the last.
    late = first_hard_step("boundless", 300, PAPER_2023.intervention)
    assert late == 299 and [hard_reports(s, 300, 50, late) for s in (50, 250, 300)] == [0, 0, 1]
    # A schedule annealed by ~65% of the steps: hard from step 195, so the evaluations at 200, 250, 300.
    assert [hard_reports(s, 300, 50, 195) for s in (150, 200, 250, 300)] == [0, 1, 2, 3]
    # A fixed mask is hard from the start; the last step counts even off the eval_every grid.
    assert first_hard_step("das", 300, InterventionConfig()) == 0
    assert [hard_reports(s, 130, 50, 0) for s in (50, 100, 130)] == [1, 2, 3]
    # The default schedule anneals over 60% of the steps: hard from step 179 of 300, whatever the block.
    assert first_hard_step("boundless", 300, InterventionConfig()) == 179


def trial(key: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=f"id-{key}", config={"trial": key})


def result(iia: float, hard: int, **extra) -> dict:
    return {"iia": iia, "hard_reports": hard, "training_iteration": hard + 3, **extra}


def test_asha_judges_only_hard_reports_records_its_stops_and_spares_the_controls():
    ledger = StopLedger()
    asha = SweepASHA(ledger, {"control"}, metric="iia", mode="max", max_t=10, grace_period=1, reduction_factor=2)
    strong, weak, control, last = trial("strong"), trial("weak"), trial("control"), trial("last")
    for t in (strong, weak, control, last):
        asha.on_trial_add(None, t)
    continue_ = TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, weak, result(0.1, 0)) == continue_  # soft mask: not judged
    assert asha.on_trial_result(None, strong, result(0.9, 1)) == continue_
    assert asha.on_trial_result(None, control, result(0.0, 1)) == continue_  # a control causal model: never
    assert asha.on_trial_result(None, last, result(0.0, 1, final=True)) == continue_  # the last evaluation: never
    assert asha.on_trial_result(None, weak, result(0.2, 1)) == TrialScheduler.STOP
    assert ledger.pop("id-weak") == "asha" and ledger.pop("id-control") == "" and ledger.pop("id-last") == ""
    for t in (strong, weak, control, last):
        asha.on_trial_complete(None, t, {"iia": 0.5, "done": True})
    assert not asha._trial_info


def test_the_collapse_rule_acts_once_the_mask_is_hard_and_records_it():
    ledger = StopLedger()
    stopper = CollapseStopper(SchedulerConfig(collapse_width=0, collapse_after=2), ledger)
    assert not stopper("a", result(0.5, 0, min_width=0))  # before the mask is hard
    assert not stopper("a", result(0.5, 1, min_width=0))  # the first hard report: collapse_after is 2
    assert not stopper("a", result(0.5, 2, min_width=0, final=True))  # the last evaluation
    assert not stopper("b", result(0.5, 2, min_width=1))
    assert stopper("a", result(0.5, 2, min_width=0)) and ledger.pop("a") == "collapse"
    off = CollapseStopper(SchedulerConfig(collapse_width=-1), ledger)
    assert not off("a", result(0.5, 5, min_width=0)) and ledger.pop("a") == ""


def spec(causal_model: str = "left_boundary", phase: str = "grid") -> TrialSpec:
    return TrialSpec(Hypothesis(causal_model, ("left_boundary",), 0, "last"), 0, phase)


def sweep(**scheduler) -> SweepConfig:
    return SweepConfig(scheduler=SchedulerConfig(**scheduler))


def test_under_asha_a_grid_trial_may_be_stopped_at_every_judged_report_and_nowhere_else():
    asha = sweep(kind="asha", collapse_width=-1)
    assert may_stop(asha, spec(), result(0.5, 1, min_width=4))
    assert may_stop(asha, spec(), result(0.5, 3, min_width=4))
    assert not may_stop(asha, spec(), result(0.5, 0, min_width=4))  # the mask is still soft
    assert not may_stop(asha, spec(), result(0.5, 3, min_width=4, final=True))  # the last evaluation
    assert not may_stop(asha, spec(), result(0.5, 3, min_width=4, done=True))
    # the task's control causal models are ASHA's exempt trials; nor is any control phase trial judged
    control = spec("mid_point_distance")
    assert early_stopping(asha, [spec(), control], "grid").scheduler.exempt == {control.key}
    assert not may_stop(asha, spec("mid_point_distance"), result(0.5, 3, min_width=4))
    assert not may_stop(asha, spec(phase="controls"), result(0.5, 3, min_width=0))


def test_without_asha_only_the_collapse_rule_may_stop_a_trial_and_only_where_it_would():
    fifo = sweep(kind="fifo", collapse_width=1, collapse_after=2)
    assert may_stop(fifo, spec(), result(0.5, 2, min_width=1))
    assert may_stop(fifo, spec(), result(0.5, 3, min_width=0))
    assert not may_stop(fifo, spec(), result(0.5, 2, min_width=2))  # wider than collapse_width
    assert not may_stop(fifo, spec(), result(0.5, 1, min_width=0))  # before collapse_after
    assert not may_stop(fifo, spec(), result(0.5, 2, min_width=0, final=True))
    assert not may_stop(fifo, spec(phase="controls"), result(0.5, 2, min_width=0))
    off = sweep(kind="fifo", collapse_width=-1)
    assert not any(may_stop(off, spec(), result(0.5, hard, min_width=0)) for hard in range(5))
    # ASHA spares a control causal model; the collapse rule does not
    asha = sweep(kind="asha", collapse_width=0, collapse_after=1)
    assert may_stop(asha, spec("mid_point_distance"), result(0.5, 1, min_width=0))
    assert not may_stop(asha, spec("mid_point_distance"), result(0.5, 1, min_width=1))


def test_the_collapse_stopper_stops_exactly_where_the_rule_says_a_trial_may_be_stopped():
    for width, after in ((0, 1), (1, 2), (2, 3), (-1, 1)):
        config = sweep(kind="fifo", collapse_width=width, collapse_after=after)
        stopper, rule = CollapseStopper(config.scheduler, StopLedger()), StopRule.of(config, spec())
        for hard in range(5):
            for min_width in range(4):
                for final in (False, True):
                    report = result(0.5, hard, min_width=min_width, final=final)
                    assert stopper("a", report) == rule(report) == may_stop(config, spec(), report), report


def test_a_trial_judges_its_evaluations_as_tune_sees_them_also_on_the_workers_of_a_sharded_trial():
    """The trainable's `may_stop` reads an evaluation row through the hard reports it sends Tune, and survives
    the pickling that takes it to the workers of a sharded trial (they run the test evaluations)."""
    from ray import cloudpickle

    from search.trainable import _hard_reports, _may_stop

    config = sweep(kind="fifo", collapse_width=0, collapse_after=1)  # 300 steps, eval_every 50: hard from 179
    rule = cloudpickle.loads(cloudpickle.dumps(_may_stop(config, spec(), _hard_reports(config, "boundless"))))
    assert rule({"step": 200, "min_width": 0, "final": False})
    assert not rule({"step": 150, "min_width": 0, "final": False})  # soft: no hard report yet
    assert not rule({"step": 250, "min_width": 1, "final": False})
    assert not rule({"step": 300, "min_width": 0, "final": True})
