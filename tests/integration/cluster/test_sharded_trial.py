"""A sharded trial (2 Ray Train workers, ZeRO-3 over gloo on CPU) takes the steps of the unsharded one."""

from __future__ import annotations

import json

import pytest

from alignment.config import DataConfig, TrainConfig, TrialConfig
from alignment.trial import run_trial
from cluster import run_sharded_trial

pytestmark = pytest.mark.slow


def config_for(model_path) -> TrialConfig:
    # 15-pair batches split 8 + 7, and the last dev batch (41 = 20 + 20 + 1) leaves one worker
    # without a row: the uneven cases of data parallelism.
    return TrialConfig(model_path=str(model_path), task="price_tagging", layer=1, position="last",
                       train=TrainConfig(batch_size=15, eval_batch_size=20, max_steps=6, eval_every=3,
                                         log_every=1, lr=1e-2, threads=1),
                       data=DataConfig(n_train=90, n_dev=41, n_test=40))


def rows(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.timeout(420)
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_sharded_trial_matches_the_unsharded_trial(local_ray, saved_models, tmp_path, family):
    config = config_for(saved_models[family])
    plain = run_trial(config, tmp_path / "plain")
    reported = []
    sharded = run_sharded_trial(config, tmp_path / "sharded", workers=2, timeout_s=400,
                                zero_options={"stage3_param_persistence_threshold": 0},
                                report=lambda row, snapshot: reported.append((row, snapshot().step)))

    assert sharded.workers == 2 and sharded.parameter_share_per_worker == pytest.approx(0.5, abs=0.01)
    plain_rows, sharded_rows = rows(tmp_path / "plain"), rows(tmp_path / "sharded")
    assert [sorted(r) for r in plain_rows] == [sorted(r) for r in sharded_rows]
    losses = [(p["loss"], s["loss"]) for p, s in zip(plain_rows, sharded_rows, strict=True) if "loss" in p]
    assert len(losses) == 6
    for expected, got in losses:
        assert got == pytest.approx(expected, rel=1e-4)
    for key in ("prealign_accuracy", "best_dev_iia", "test_iia", "test_iia_full_vocab"):
        assert getattr(sharded, key) == pytest.approx(getattr(plain, key), abs=0.01)
    assert [(row["step"], step) for row, step in reported] == [(3, 3), (6, 6)]
    assert sorted(p.name for p in (tmp_path / "sharded").iterdir()) == sorted(
        p.name for p in (tmp_path / "plain").iterdir())
    assert set(plain.to_dict()) <= set(sharded.to_dict())
    assert json.loads((tmp_path / "sharded" / "config.json").read_text())["layer"] == 1


@pytest.mark.timeout(420)
def test_a_sharded_trial_resumed_from_its_report_ends_where_the_straight_run_ends(local_ray, saved_models, tmp_path):
    config = config_for(saved_models["gpt2"])
    options = {"stage3_param_persistence_threshold": 0}
    states = {}
    straight = run_sharded_trial(config, tmp_path / "straight", workers=2, zero_options=options,
                                 timeout_s=400,
                                 report=lambda row, snapshot: states.setdefault(row["step"], snapshot()))
    assert sorted(states) == [3, 6]
    resumed = run_sharded_trial(config, tmp_path / "resumed", workers=2, zero_options=options, timeout_s=400,
                                resume=states[3])
    for key in ("best_dev_iia", "best_step", "test_iia", "boundary_widths"):
        assert getattr(resumed, key) == getattr(straight, key)
    straight_rows = rows(tmp_path / "straight")
    resumed_rows = rows(tmp_path / "resumed")  # steps 4-6 only, as run_trial appends after a resume
    assert [r["step"] for r in resumed_rows if "loss" in r] == [4, 5, 6]
    tail = [r["loss"] for r in straight_rows if "loss" in r and r["step"] > 3]
    assert [r["loss"] for r in resumed_rows if "loss" in r] == pytest.approx(tail, rel=1e-6)
