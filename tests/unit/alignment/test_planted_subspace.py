"""Positive controls for the default method: Boundless DAS finds a variable planted in k of d dimensions.

tests/planted_subspace.py hand-sets a model whose layer-1 output at the last token holds `value`
in a random k-dimensional subspace of its d dimensions, beside an offset that also decides the
answer, so a full swap is wrong on most pairs and only a subspace claim can be right. Boundless
DAS runs with the sweep's defaults (`SweepConfig().intervention`, `.train`, `.data`: what a
user's sweep runs): it must recover the variable (test IIA >= 0.95) with a hard width within
a small factor of k, at d = 64 and d = 768; at a site that does not carry the variable it must
stay at the floor (the share of pairs whose label does not change).

"""

from dataclasses import replace

import pytest

from alignment.config import InterventionConfig, TrialConfig
from alignment.results import TrialResult
from alignment.trial import TrialInputs, run_trial
from search.config import SweepConfig
from tests.planted_subspace import RIGHT_SITE, WRONG_SITE, planted_subspace_model

SWEEP = SweepConfig()


def planted_trial(k: int, d: int, site: tuple[int, str], folder, steps: int | None = None,
                  intervention: InterventionConfig = SWEEP.intervention) -> TrialResult:
    layer, position = site
    config = TrialConfig(model_path="planted", task=f"tests.planted_subspace:K{k}", layer=layer, position=position,
                         intervention=intervention, data=SWEEP.data,
                         train=replace(SWEEP.train, max_steps=steps or SWEEP.train.max_steps))
    return run_trial(config, folder, TrialInputs(loaded=planted_subspace_model(k, d)))


@pytest.mark.parametrize(("d", "k"), [(64, 1), (64, 4), (768, 4),
                                    pytest.param(768, 1, marks=pytest.mark.slow)])  # ~25 s each at 768
def test_boundless_das_recovers_a_variable_planted_in_k_of_d_dimensions(d, k, tmp_path):
    summary = planted_trial(k, d, RIGHT_SITE, tmp_path)
    assert summary.prealign_accuracy == 1.0
    assert summary.test_iia >= 0.95
    assert k <= summary.boundary_widths["value"] <= 2 * k + 1, summary.boundary_widths


@pytest.mark.parametrize(("d", "k"), [(64, 1), (64, 4)])
def test_at_a_site_without_the_variable_iia_stays_at_the_floor(d, k, tmp_path):
    summary = planted_trial(k, d, WRONG_SITE, tmp_path)
    assert abs(summary.test_iia - summary.test_unchanged_share) <= 0.05


def test_a_full_swap_at_the_right_site_is_wrong_on_most_pairs(tmp_path):
    """The site also carries the offset, which decides the answer: the subspace claim is not the full swap's."""
    summary = planted_trial(4, 64, RIGHT_SITE, tmp_path, steps=1, intervention=InterventionConfig(kind="full_swap"))
    assert summary.test_iia <= 0.5
