"""Untrained controls: a random rotation of a given width, and the full swap, evaluated on the test pairs."""

import pytest

from alignment.config import DataConfig, InterventionConfig, TrainConfig, TrialConfig
from alignment.results import UntrainedResult
from alignment.trial import TrialInputs
from alignment.untrained import fixed_width_rotation, run_untrained


@pytest.mark.parametrize("widths", [[0], [5], [2, 7]])
def test_the_hard_mask_swaps_exactly_the_given_widths(widths):
    swap = fixed_width_rotation(32, widths, seed=3)
    assert swap.mask.sizes() == widths
    assert not any(p.requires_grad for p in swap.parameters())


def control(tiny_price, tmp_path, kind, widths=None, draws=3):
    config = TrialConfig(model_path="tiny", layer=1, position="last", causal_model="left_boundary",
                         intervention=InterventionConfig(kind=kind), train=TrainConfig(eval_batch_size=64),
                         data=DataConfig(n_train=10, n_dev=10, n_test=80, template="compact"))
    return run_untrained(config, tmp_path / kind, TrialInputs(loaded=tiny_price), widths=widths, draws=draws)


def test_a_random_rotation_of_the_whole_block_is_the_full_swap_and_width_zero_changes_nothing(tiny_price, tmp_path):
    hidden = tiny_price.model.config.hidden_size
    full = control(tiny_price, tmp_path, "full_swap")
    whole = control(tiny_price, tmp_path / "whole", "random_rotation", {"left_boundary": hidden})
    none = control(tiny_price, tmp_path / "none", "random_rotation", {"left_boundary": 0})
    assert full.draws == 1 and full.test_correct is not None and len(full.test_correct) == 80
    assert whole.test_iia_draws == (full.test_iia,) * 3 and whole.boundary_widths == {"left_boundary": hidden}
    # Width 0 leaves the base alone: every draw is the same no-op score, so the spread is 0.
    assert len(set(none.test_iia_draws)) == 1 and none.test_iia_sd == 0.0
    assert none.test_iia_ci_low <= none.test_iia <= none.test_iia_ci_high
    assert none.trained is False and 0.0 <= none.floor_no_op <= 1.0
    # What it wrote is what it returned, read back through the strict type (three draws: no single correctness).
    assert UntrainedResult.read(tmp_path / "none" / "random_rotation" / "summary.json") == none
    assert none.to_dict()["test_correct"] is None
