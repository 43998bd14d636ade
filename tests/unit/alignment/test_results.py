"""Typed trial results: summary.json's keys are the fields, the round trip is exact, reading back is strict."""

import json
from dataclasses import replace

import pytest

from alignment.config_io import ConfigError
from alignment.results import TrialResult, UntrainedResult
from causal_models.errors import UserError

# The keys of a trial's summary.json (tests, docs and the sweep's report read them by name).
SUMMARY_KEYS = [
    "hypothesis", "task", "causal_model", "variables", "layer", "site", "component", "position", "position_label",
    "source_position", "intervention", "seed", "prealign_accuracy", "prealign_accuracy_full_vocab", "best_dev_iia",
    "best_step", "steps", "test_iia", "test_iia_full_vocab", "n_test", "test_iia_ci_low", "test_iia_ci_high",
    "test_correct", "test_unchanged_share", "boundary_widths", "hidden_size", "floor_no_op", "floor_copy_source",
    "cached", "model", "seconds", "train_examples_per_second"]

RESULT = TrialResult(
    hypothesis="left_boundary@L1:last:boundless", task="price_tagging", causal_model="left_boundary",
    variables=("left_boundary",), layer=1, site="transformer.h.1", component="block", position="last",
    position_label="last", source_position="last", intervention="boundless", seed=42, prealign_accuracy=1.0,
    prealign_accuracy_full_vocab=0.98, best_dev_iia=0.95, best_step=250, steps=300, test_iia=0.93,
    test_iia_full_vocab=0.9, n_test=4, test_iia_ci_low=0.5, test_iia_ci_high=1.0, test_correct="1101",
    test_unchanged_share=0.5, boundary_widths={"left_boundary": 3}, hidden_size=64, floor_no_op=0.5,
    floor_copy_source=0.25, cached=True, model={"name": "tiny", "hidden_size": 64}, seconds=1.5,
    train_examples_per_second=6400.0)


def test_the_fields_are_the_summary_keys_and_the_round_trip_is_exact(tmp_path):
    data = RESULT.to_dict()
    assert list(data) == SUMMARY_KEYS and data["variables"] == ["left_boundary"]  # JSON-ready: a list
    assert TrialResult.from_dict(json.loads(json.dumps(data))) == RESULT
    (tmp_path / "summary.json").write_text(json.dumps(data))
    assert TrialResult.read(tmp_path / "summary.json") == RESULT


def test_a_sharded_trials_worker_fields_are_written_only_when_set():
    sharded = replace(RESULT, workers=2, parameter_share_per_worker=0.5)
    assert list(sharded.to_dict()) == [*SUMMARY_KEYS, "workers", "parameter_share_per_worker"]
    assert TrialResult.from_dict(sharded.to_dict()) == sharded
    assert "workers" not in RESULT.to_dict()


def test_reading_back_is_strict_and_says_what_is_wrong_in_one_line(tmp_path):
    with pytest.raises(UserError, match=r"unknown key\(s\) \['best_dev_iia_x'\]; known keys: \[") as error:
        TrialResult.from_dict({**RESULT.to_dict(), "best_dev_iia_x": 0.9})
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="test_iia must be float, got 'high'"):
        TrialResult.from_dict({**RESULT.to_dict(), "test_iia": "high"})
    missing = RESULT.to_dict()
    del missing["best_dev_iia"]
    with pytest.raises(ConfigError, match="best_dev_iia"):
        TrialResult.from_dict(missing)
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({**RESULT.to_dict(), "extra": 1}))
    with pytest.raises(ConfigError, match=rf"^'{path}' is not a TrialResult: unknown key\(s\) \['extra'\]"):
        TrialResult.read(path)
    path.write_text('{"torn": ')
    with pytest.raises(ConfigError, match=rf"^'{path}' must be a summary.json align-search wrote, got Expecting"):
        TrialResult.read(path)


def test_an_untrained_controls_summary_is_its_own_type():
    control = UntrainedResult(
        hypothesis="h", task="price_tagging", causal_model="left_boundary", variables=("left_boundary",), layer=1,
        site="transformer.h.1", position="last", intervention="random_rotation", seed=42, trained=False,
        prealign_accuracy=1.0, test_iia=0.5, test_iia_sd=0.02, test_iia_draws=(0.48, 0.52), draws=2,
        test_iia_full_vocab=0.5, n_test=4, test_iia_ci_low=0.25, test_iia_ci_high=0.75, test_correct=None,
        boundary_widths={"left_boundary": 3}, hidden_size=64, floor_no_op=0.5, floor_copy_source=0.25, seconds=0.5)
    assert UntrainedResult.from_dict(control.to_dict()) == control
    with pytest.raises(ConfigError, match="unknown key"):  # a trained trial's summary is not a control's
        UntrainedResult.from_dict(RESULT.to_dict())
    with pytest.raises(ConfigError, match="trained false"):
        UntrainedResult.from_dict({**control.to_dict(), "trained": True})
