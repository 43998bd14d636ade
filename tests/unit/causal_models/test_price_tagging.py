"""Counterfactual labels agree with an independent brute-force computation (research section 2)."""

import random

import pytest

from causal_models import get_task, indistinguishable_variables, sample_pairs
from causal_models.tasks.price_tagging import FIXED_BRACKET, UNSEEN_BRACKET, sample_dollar_ties, sample_inputs

TASK = get_task("price_tagging")


def inside(x, lower, upper):
    return lower <= x <= upper


def sign(a, b):
    return (a > b) - (a < b)


def brute_force(name, variable, base, source):
    """The formulas of the paper's table, written without the causal model; digit by digit for the finer ones."""
    lb, ub, xb = base["lower"], base["upper"], base["amount"]
    ls, us, xs = source["lower"], source["upper"], source["amount"]
    if variable == "left_boundary":
        return xs >= ls and xb <= ub
    if variable == "right_boundary":
        return xb >= lb and xs <= us
    # a swapped comparison comes from the source, the other part of the same bound from the base
    if variable in ("left_dollars", "left_cents"):
        dollars = sign(xs // 100, ls // 100) if variable == "left_dollars" else sign(xb // 100, lb // 100)
        cents = sign(xs % 100, ls % 100) if variable == "left_cents" else sign(xb % 100, lb % 100)
        return (dollars > 0 or (dollars == 0 and cents >= 0)) and xb <= ub
    if variable in ("right_dollars", "right_cents"):
        dollars = sign(xs // 100, us // 100) if variable == "right_dollars" else sign(xb // 100, ub // 100)
        cents = sign(xs % 100, us % 100) if variable == "right_cents" else sign(xb % 100, ub % 100)
        return xb >= lb and (dollars < 0 or (dollars == 0 and cents <= 0))
    if name == "mid_point_distance":
        return abs(xb - (ls + us) / 2) <= (ub - lb) / 2
    if name == "bracket_identity":
        return ls <= xb <= us
    raise AssertionError(name)


@pytest.mark.parametrize("name", sorted(TASK.causal_models))
def test_labels_match_brute_force_on_10000_pairs(name):
    model = TASK.causal_model(name)
    variables = list(model.default_variables)
    pairs = sample_pairs(model, variables, 10_000, seed=123, balance_labels=False)
    disagreements = 0
    for pair in pairs.pairs:
        (variable, source), = pair.sources.items()
        disagreements += pair.counterfactual_output != brute_force(name, variable, pair.base, source)
        disagreements += pair.base_output != inside(pair.base["amount"], pair.base["lower"], pair.base["upper"])
    assert disagreements == 0


@pytest.mark.filterwarnings("ignore:variables .* give the same counterfactual label")
@pytest.mark.parametrize("variable", ["left_cents", "right_cents", "left_dollars", "right_dollars"])
def test_the_finer_comparisons_match_brute_force_under_both_samplers(variable):
    model = TASK.causal_model("left_and_right_dollars")
    for sampler in (None, sample_inputs):   # the model's own (dollar ties) and the 2023 one
        pairs = sample_pairs(model, [variable], 3000, seed=7, sample_inputs=sampler, balance_labels=False)
        assert all(p.counterfactual_output == brute_force(model.name, variable, p.base, p.sources[variable])
                   for p in pairs.pairs)


def test_dollar_comparisons_give_the_booleans_answer_on_every_tie():
    model = TASK.causal_model("left_dollars")
    for lower in range(5, 1000, 37):
        for amount in range(lower // 100 * 100, lower // 100 * 100 + 100):   # the amount's dollars tie the bound's
            for upper in (min(lower + 250, 999), min(lower + 750, 999)):
                inputs = {"lower": lower, "upper": upper, "amount": max(amount, 1)}
                assert model.run(inputs)["answer"] == inside(inputs["amount"], lower, upper)


@pytest.mark.filterwarnings("ignore:variables .* give the same counterfactual label")
def test_dollar_ties_let_iia_tell_the_dollars_from_the_boolean():
    """Swapping the dollar comparison or the boolean gives the same label unless the source's dollars tie."""
    model = TASK.causal_model("left_dollars")
    shares = {}
    for name, sampler in (("2023", sample_inputs), ("ties", sample_dollar_ties)):
        pairs = sample_pairs(model, ["left_dollars"], 2000, seed=1, sample_inputs=sampler, max_unchanged=0.5)
        found = indistinguishable_variables(model, pairs.pairs, ["left_dollars"], threshold=0.0)
        shares[name] = dict(((a, b), share) for a, b, share in found)[("left_dollars", "left_boundary")]
    assert shares["2023"] > 0.93 and shares["ties"] < 0.9


def test_the_tie_sampler_ties_half_the_amounts_to_a_bound():
    rng = random.Random(3)
    samples = [sample_dollar_ties(rng) for _ in range(20_000)]
    ties = sum(s["amount"] // 100 in (s["lower"] // 100, s["upper"] // 100) for s in samples) / len(samples)
    assert 0.5 < ties < 0.65 and all(1 <= s["amount"] <= 999 for s in samples)
    for name in ("left_dollars", "right_dollars", "left_and_right_dollars", "left_boundary_ties",
                 "right_boundary_ties"):
        assert TASK.causal_model(name).sample_inputs is sample_dollar_ties


def test_every_causal_model_gives_the_same_factual_answer():
    rng = random.Random(0)
    for _ in range(2000):
        inputs = sample_inputs(rng)
        answers = {m.run(inputs)["answer"] for m in TASK.causal_models.values()}
        assert answers == {inside(inputs["amount"], inputs["lower"], inputs["upper"])}


def test_sampler_follows_the_2023_distribution():
    rng = random.Random(1)
    samples = [sample_inputs(rng) for _ in range(20_000)]
    widths = [s["upper"] - s["lower"] for s in samples]
    assert min(widths) >= 250 and max(widths) <= 750
    assert min(s["lower"] for s in samples) >= 5 and max(s["upper"] for s in samples) <= 995
    assert min(s["amount"] for s in samples) >= 1 and max(s["amount"] for s in samples) <= 999
    assert 0.40 < sum(inside(s["amount"], s["lower"], s["upper"]) for s in samples) / len(samples) < 0.60


def test_fixed_brackets():
    rng = random.Random(2)
    for name, bracket in (("left_boundary_fixed", FIXED_BRACKET), ("left_boundary_fixed_unseen", UNSEEN_BRACKET)):
        sampler = TASK.causal_model(name).sample_inputs
        assert {(s["lower"], s["upper"]) for s in (sampler(rng) for _ in range(50))} == {bracket}


def test_alpaca_prompt_is_the_papers_and_positions_land_on_the_right_characters():
    prompt = TASK.template("alpaca").render({"lower": 130, "upper": 855, "amount": 340})
    assert prompt.text.endswith("### Instruction:\nPlease say yes only if it costs between 1.30 and 8.55 dollars, "
                                "otherwise no.\n\n### Input:\n3.40 dollars\n\n### Response:\n")
    text, at = prompt.text, prompt.positions
    assert (text[at["amount_first_digit"]], text[at["amount_last_digit"]]) == ("3", "0")
    assert text[at["amount_dollars"]:at["amount_dollars"] + 7] == "dollars"
    assert text[at["response_colon"]] == ":" and at["last"] == len(text) - 1
    assert TASK.template("alpaca").answers == {True: "Yes", False: "No"}


def test_robustness_variants():
    inputs = {"lower": 130, "upper": 855, "amount": 340}
    assert "Pricing tag game! Please say yes" in TASK.template("alpaca_prefix_game").render(inputs).text
    assert "Fruitarian Frogs May Be Doing Flowers a Favor. Please" in TASK.template(
        "alpaca_prefix_frogs").render(inputs).text
    sibling = TASK.template("alpaca_true_false")
    text = sibling.render(inputs).text
    assert "Please say true only if" in text and "otherwise false." in text
    assert sibling.answers == {True: "True", False: "False"}
