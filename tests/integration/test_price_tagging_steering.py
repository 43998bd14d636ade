"""Steering the shipped price-tagging model with the boundaries the default sweep aligns best.

On the shipped model the default sweep's best site for both boundary variables is the output
of layer 0 at the amount's first digit (README.md). Fixed-value steering there, alone and
with both interventions in one forward pass, must move the model's answer the way the causal
model says, far beyond what an unrelated edit would do: the same edit (the same site, the same
learned width, set to the same value's mean coordinates) along a random rotation instead of the
learned one.

The subspaces are learned under the 2023 schedule (`PAPER_2023`, with the sweep's learning
rates), where they keep ~27 of 64 dimensions. The calibrated default keeps 3 (docs/calibration.md)
at about the same IIA, and steers less with them: left_boundary True flipped 0.73 and kept 0.92
(penalty 1.0: 7 dimensions, 0.69 / 0.94; penalty 0.3: 31 dimensions, 0.82 / 0.91), so the
variable is mostly, not only, in those few dimensions.
"""

import copy
from dataclasses import replace

import pytest

from alignment.config import PAPER_2023, DataConfig, TrialConfig
from alignment.models import load_model
from alignment.persistence import SavedIntervention
from alignment.rotations import random_orthogonal
from alignment.steering import Steer, load_steering, steering_success
from alignment.taskmodels import shipped_model_path
from alignment.trial import run_trial

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def boundaries(tmp_path_factory):
    folder = tmp_path_factory.mktemp("price_steer")
    runs = {}
    for variable in ("left_boundary", "right_boundary"):
        config = TrialConfig(model_path=str(shipped_model_path("price_tagging")), task="price_tagging",
                             causal_model=variable, layer=0, position="amount_first_digit",
                             intervention=PAPER_2023.intervention,
                             train=replace(PAPER_2023.train, batch_size=64, max_steps=300, lr=3e-3, boundary_lr=3e-2,
                                           eval_every=100, threads=1),
                             data=DataConfig(n_train=2000, n_dev=200, n_test=400, max_unchanged=0.5))
        summary = run_trial(config, folder / variable)
        assert summary.test_iia >= 0.7, (variable, summary.test_iia)
        runs[variable] = folder / variable
    return load_model(str(shipped_model_path("price_tagging"))), runs


def unrelated(saved: SavedIntervention, seed: int = 7) -> SavedIntervention:
    """The same intervention with its learned rotation replaced by a random one."""
    swap = copy.deepcopy(saved.intervention)
    swap.basis.set_matrix(random_orthogonal(swap.basis.hidden_size, seed=seed))
    return SavedIntervention(swap, saved.description)


def test_setting_left_boundary_true_flips_the_prompts_only_it_decides(boundaries):
    loaded, runs = boundaries
    saved = load_steering(runs["left_boundary"], loaded.model)
    success = steering_success(loaded.model, loaded.tokenizer, [Steer(saved, "left_boundary", value=True)], n=300)
    # Measured 0.900 and 0.913 flipped (seeds 0, 1 of the default sweep), 0.85-0.86 kept.
    assert success.flipped >= 0.85 and success.kept >= 0.8, success
    baseline = steering_success(loaded.model, loaded.tokenizer, [Steer(unrelated(saved), "left_boundary", value=True)],
                                n=300)
    assert success.flipped >= baseline.flipped + 0.5, (success, baseline)  # measured 0.19 flipped, 0.94 kept


def test_both_boundaries_set_in_one_forward_pass_follow_the_causal_model(boundaries):
    loaded, runs = boundaries
    left, right = (load_steering(runs[name], loaded.model) for name in ("left_boundary", "right_boundary"))
    steers = [Steer(left, "left_boundary", value=True), Steer(right, "right_boundary", value=True)]
    success = steering_success(loaded.model, loaded.tokenizer, steers, n=300)
    # Both True makes every answer Yes: the "flip" prompts are every No prompt. Measured 0.69 flipped,
    # 0.93 kept: the two single-site edits compose, but the site carries each boolean only in part.
    assert success.flipped >= 0.6 and success.kept >= 0.85, success
    random_steers = [Steer(unrelated(left), "left_boundary", value=True),
                     Steer(unrelated(right, seed=8), "right_boundary", value=True)]
    baseline = steering_success(loaded.model, loaded.tokenizer, random_steers, n=300)
    assert success.flipped >= baseline.flipped + 0.4, (success, baseline)  # measured 0.21 flipped, 0.92 kept
