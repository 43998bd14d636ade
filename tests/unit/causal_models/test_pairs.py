import random
import warnings

import pytest

from causal_models import CausalModel, Variable, get_task, sample_pairs
from causal_models.pairs import SamplingError, floors, indistinguishable_variables, used_inputs

TASK = get_task("price_tagging")


@pytest.mark.parametrize("name,variables", [
    ("left_boundary", ["left_boundary"]),
    ("left_and_right_boundary", ["left_boundary", "right_boundary"]),
    ("mid_point_distance", ["mid_point"]),
    ("bracket_identity", ["bracket"]),
])
def test_labels_are_balanced_within_two_percent(name, variables):
    pairs = sample_pairs(TASK.causal_model(name), variables, 2000, seed=1)
    assert abs(pairs.stats.label_shares["True"] - 0.5) <= 0.02
    for variable in variables:  # balanced per variable, too
        mine = [p for p in pairs.pairs if p.variables == (variable,)]
        share = sum(p.counterfactual_output for p in mine) / len(mine)
        assert abs(share - 0.5) <= 0.02


def test_max_unchanged_bounds_the_share_of_pairs_equal_to_their_base():
    model = TASK.causal_model("left_boundary")
    free = sample_pairs(model, ["left_boundary"], 1000, seed=0)
    bounded = sample_pairs(model, ["left_boundary"], 1000, seed=0, max_unchanged=0.5)
    assert free.stats.unchanged_share > 0.6
    assert bounded.stats.unchanged_share <= 0.5
    assert sum(p.counterfactual_output == p.base_output for p in bounded.pairs) / 1000 == bounded.stats.unchanged_share


def test_same_seed_same_pairs_other_seed_other_pairs():
    model = TASK.causal_model("right_boundary")
    first, again = (sample_pairs(model, ["right_boundary"], 200, seed=7) for _ in range(2))
    other = sample_pairs(model, ["right_boundary"], 200, seed=8)
    assert first.pairs == again.pairs
    assert first.pairs != other.pairs


def test_per_pair_all_intervenes_on_every_variable():
    model = TASK.causal_model("left_and_right_boundary")
    pairs = sample_pairs(model, ["left_boundary", "right_boundary"], 100, seed=0, per_pair="all")
    assert all(p.variables == ("left_boundary", "right_boundary") for p in pairs.pairs)
    for pair in pairs.pairs:
        assert pair.counterfactual_output == model.interchange(pair.base, pair.sources)["answer"]


def test_impossible_shares_raise_a_clear_error():
    with pytest.raises(SamplingError, match="Loosen max_unchanged"):
        sample_pairs(_twins(), ["x"], 50, seed=0, max_unchanged=0.0, max_attempts_per_pair=5)


def test_bad_arguments_name_the_problem():
    model = TASK.causal_model("left_boundary")
    with pytest.raises(ValueError, match="n must be a positive integer"):
        sample_pairs(model, ["left_boundary"], 0, seed=0)
    with pytest.raises(ValueError, match="must be one of"):
        sample_pairs(model, ["nope"], 10, seed=0)


def _twins():
    return CausalModel("twins", [
        Variable("a", range(1000)), Variable("b", range(1000)),
        Variable("x", (True, False), ("a",), lambda a: a > 0),
        Variable("y", (True, False), ("b",), lambda b: b > 0),
        Variable("out", (True, False), ("x", "y"), lambda x, y: x and y),
    ], output="out", sample_inputs=lambda rng: {"a": rng.randrange(1000), "b": rng.randrange(1000)})


def test_indistinguishability_warning_fires_on_a_constructed_case():
    # x and y are both "> 0" of near-always-positive inputs: swapping either gives the same label.
    with pytest.warns(UserWarning, match="'x' and 'y' .* give the same counterfactual label"):
        pairs = sample_pairs(_twins(), ["x"], 300, seed=0, balance_labels=False)
    assert ("x", "y") in [found[:2] for found in pairs.stats.indistinguishable]


def test_no_warning_when_variables_are_distinguishable():
    model = TASK.causal_model("left_and_right_boundary")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pairs = sample_pairs(model, ["left_boundary", "right_boundary"], 500, seed=0, max_unchanged=0.5)
    assert indistinguishable_variables(model, list(pairs.pairs), ["left_boundary"]) == []


def test_sampler_uses_its_own_rng():
    state = random.getstate()
    sample_pairs(TASK.causal_model("left_boundary"), ["left_boundary"], 20, seed=0)
    assert random.getstate() == state


def test_floors_of_hand_made_labels():
    labels = [True, True, False, False]
    assert floors(labels, [True, False, False, True], [[True], [False], [False], [True]]) == {
        "no_op": 0.5, "copy_source": 0.5}
    # Two sources per pair: the floor is the best single source slot (slot 1 here), never a per-pair choice.
    two = [[False, True], [True, True], [True, False], [False, True]]  # per pair, some source is always right
    assert floors(labels, [False] * 4, two)["copy_source"] == 0.75


def test_a_rare_label_names_the_balance():
    rare = CausalModel("rare", [Variable("a", range(1000)), Variable("x", (True, False), ("a",), lambda a: a == 0),
                                Variable("out", (True, False), ("x",), lambda x: x)], output="out",
                       sample_inputs=lambda rng: {"a": rng.randrange(1000)})
    with pytest.raises(SamplingError, match=r"still missing .*0:True.* \(the balance\)\. Set balance_labels=False"):
        sample_pairs(rare, ["x"], 50, seed=0, max_attempts_per_pair=5)


def test_an_exhausted_input_space_names_the_heldout_exclusion():
    model = TASK.causal_model("left_boundary")
    first = sample_pairs(model, ["left_boundary"], 20, seed=0)
    tiny = lambda rng: dict(first.pairs[rng.randrange(20)].base)  # noqa: E731 - inputs of the first set only
    with pytest.raises(SamplingError, match=r"which held \d+ distinct inputs; 100% of draws used one of the \d+ "
                                            r"inputs held out .*lower data.n_train"):
        sample_pairs(model, ["left_boundary"], 10, seed=1, sample_inputs=tiny, exclude=used_inputs(first),
                     max_attempts_per_pair=5)
