"""A sweep's trial tests its best state only where it may be stopped, and at the best state, not the current one.

Only a stopped trial's best.json ("test_at_best") is ever read, so `run_trial` with `may_stop`
evaluates the test split only at the reports where the caller may stop the trial, once per best
state; the best state can be older than the current one there, and is then loaded for the
evaluation and the current state put back. Without `may_stop`, every move of the best state is
tested (the behaviour of callers that do not say where they stop). The trial is the planted
subspace task at d = 64 (hand-set model, about a second per run).
"""

import copy
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import alignment.train as train_module
import alignment.trial as trial_module
from alignment.config import DataConfig, InterventionConfig, TrainConfig, TrialConfig
from alignment.results import TrialResult
from alignment.trial import TrialInputs, iia_fields, run_trial
from tests.planted_subspace import RIGHT_SITE, planted_subspace_model

CONFIG = TrialConfig(model_path="planted", task="tests.planted_subspace:K4", layer=RIGHT_SITE[0],
                     position=RIGHT_SITE[1], intervention=InterventionConfig(width_penalty=0.0),
                     data=DataConfig(n_train=256, n_dev=64, n_test=64, max_unchanged=0.5),
                     train=TrainConfig(batch_size=16, max_steps=24, eval_every=2, lr=3e-3, boundary_lr=5e-2, threads=1))


@dataclass
class Run:
    """What a trial reported, how often it evaluated its test split, and its prepared trial (to evaluate again)."""

    summary: TrialResult
    rows: list[dict[str, Any]]
    test_evaluations: int
    trial: Any
    best_states: dict[int, dict[str, torch.Tensor]]  # by step, at each report that carries test_at_best
    current_states: dict[int, dict[str, torch.Tensor]]


def run(tmp_path, monkeypatch, may_stop=None) -> Run:
    """The planted trial with a report callback; each report also checks that the intervention it sees is the
    one its dev IIA was measured with (a test evaluation at an older best state must put the current one back)."""
    calls, prepared, at_dev = [], [], []
    count, prepare, dev = trial_module.correct_per_pair, trial_module.prepare_trial, train_module.interchange_accuracy

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return count(*args, **kwargs)

    def kept(*args: Any, **kwargs: Any) -> Any:
        prepared.append(prepare(*args, **kwargs))
        return prepared[-1]

    def measured(interchange: Any, *args: Any, **kwargs: Any) -> Any:
        at_dev.append(copy.deepcopy(interchange.intervention.state_dict()))
        return dev(interchange, *args, **kwargs)

    monkeypatch.setattr(trial_module, "correct_per_pair", counted)
    monkeypatch.setattr(trial_module, "prepare_trial", kept)
    monkeypatch.setattr(train_module, "interchange_accuracy", measured)
    rows: list[dict[str, Any]] = []
    best_states: dict[int, dict[str, torch.Tensor]] = {}
    current_states: dict[int, dict[str, torch.Tensor]] = {}

    def report(row: dict[str, Any], snapshot: Any) -> None:
        now = prepared[0].interchange.intervention.state_dict()
        assert_same_state(now, at_dev[-1])
        rows.append(row)
        if "test_at_best" in row:
            state = snapshot()
            best_states[row["step"]] = copy.deepcopy(state.best_intervention)
            current_states[row["step"]] = copy.deepcopy(state.intervention)

    summary = run_trial(CONFIG, tmp_path / "trial", TrialInputs(loaded=planted_subspace_model(4, 64)),
                        report=report, may_stop=may_stop)
    return Run(summary, rows, len(calls), prepared[0], best_states, current_states)


def assert_same_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert state.keys() == expected.keys()
    for name in state:
        assert torch.equal(state[name], expected[name]), name


def evaluated_at(trial: Any, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The test fields and widths of `trial` at `state`, evaluated afresh after training."""
    intervention = trial.interchange.intervention
    intervention.load_state_dict(state)
    answers, full = trial_module.correct_per_pair(trial.interchange, trial.positioned["test"], trial.data.answer_ids,
                                                  trial.config.train.eval_batch_size)
    widths = dict(zip(trial.config.variables, intervention.mask.sizes()))
    return {**iia_fields(answers, full), "boundary_widths": widths}


def fields_by_step(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {row["step"]: row["test_at_best"] for row in rows if "test_at_best" in row}


def test_a_trial_that_cannot_be_stopped_tests_only_its_final_state(tmp_path, monkeypatch):
    never = run(tmp_path, monkeypatch, may_stop=lambda row: False)
    assert not fields_by_step(never.rows)
    assert never.test_evaluations == 1  # the summary's
    assert len(never.rows) == 12 and never.summary.test_iia >= 0.9


def test_where_it_may_be_stopped_a_trial_tests_its_best_state_even_when_that_is_older(tmp_path, monkeypatch):
    """At a report where the best state is older than the current one, test_at_best is that best state's
    test evaluation (and widths), and training goes on from the current state as if nothing happened."""
    fired: list[int] = []

    def once_behind(row: dict[str, Any]) -> bool:  # the first near-hard report whose best state is older
        if not fired and row["mask_hard"] and row["best_step"] < row["step"]:
            fired.append(row["step"])
        return fired == [row["step"]]

    late = run(tmp_path / "late", monkeypatch, may_stop=once_behind)
    monkeypatch.undo()
    step = fired[0]
    at_stop = next(row for row in late.rows if row["step"] == step)
    assert fields_by_step(late.rows).keys() == {step} and late.test_evaluations == 2
    fields = at_stop["test_at_best"]
    assert fields["step"] == at_stop["best_step"] < step and fields["best_dev_iia"] == at_stop["best_dev_iia"]
    best = evaluated_at(late.trial, late.best_states[step])
    current = evaluated_at(late.trial, late.current_states[step])
    assert best["test_correct"] != current["test_correct"]  # the test can tell the two states apart
    assert {key: fields[key] for key in best} == best
    never = run(tmp_path / "never", monkeypatch, may_stop=lambda row: False)
    assert [{k: v for k, v in row.items() if k != "test_at_best"} for row in late.rows] == never.rows
    assert late.summary.test_correct == never.summary.test_correct and late.summary.best_step == never.summary.best_step


def test_each_best_state_is_tested_once_however_many_reports_may_stop_the_trial(tmp_path, monkeypatch):
    judged = run(tmp_path, monkeypatch, may_stop=lambda row: row["mask_hard"])
    hard = [row for row in judged.rows if row["mask_hard"] and not row["final"]]
    assert fields_by_step(judged.rows).keys() == {row["step"] for row in hard}
    assert [fields["step"] for fields in fields_by_step(judged.rows).values()] == [row["best_step"] for row in hard]
    repeated = [row for row in hard if row["best_step"] < row["step"]]
    assert repeated, "some best state outlives a report"
    for row in repeated:
        assert row["test_at_best"] == fields_by_step(judged.rows)[row["best_step"]]
    assert judged.test_evaluations == len({row["best_step"] for row in hard}) + 1


def test_without_may_stop_every_move_of_the_best_state_is_tested(tmp_path, monkeypatch):
    every = run(tmp_path, monkeypatch)
    moves = [row["step"] for row in every.rows if row["best_step"] == row["step"] and not row["final"]]
    assert list(fields_by_step(every.rows)) == moves and len(moves) < len(every.rows)
    assert all(fields["step"] == step for step, fields in fields_by_step(every.rows).items())
    assert every.test_evaluations == len(moves) + 1


@pytest.mark.parametrize("kind", ["boundless", "das", "neuron_mask"])
def test_the_best_state_is_loaded_and_put_back_exactly_parameters_and_buffers(kind):
    """`_at_state` swaps in a state for the block (temperature included) and restores the previous values in
    place, so an optimizer built on the intervention keeps training the same tensors."""
    from alignment.interventions import build_intervention

    intervention = build_intervention(kind, 16, 2, seed=1)
    parameters = [id(p) for p in intervention.parameters()]
    before = copy.deepcopy(intervention.state_dict())
    other = {name: value + 1 if value.is_floating_point() else value for name, value in before.items()}
    with trial_module._at_state(intervention, other):
        assert_same_state(intervention.state_dict(), other)
    assert_same_state(intervention.state_dict(), before)
    assert [id(p) for p in intervention.parameters()] == parameters
