"""Counterfactual labels agree with an independent brute-force computation (research section 2)."""

import random

import pytest

from causal_models import get_task, sample_pairs
from causal_models.tasks.price_tagging import FIXED_BRACKET, UNSEEN_BRACKET, sample_inputs

TASK = get_task("price_tagging")


def inside(x, lower, upper):
    return lower <= x <= upper


def brute_force(name, variable, base, source):
    """The formulas of the paper's table, written without the causal model."""
    lb, ub, xb = base["lower"], base["upper"], base["amount"]
    ls, us, xs = source["lower"], source["upper"], source["amount"]
    if variable == "left_boundary":
        return xs >= ls and xb <= ub
    if variable == "right_boundary":
        return xb >= lb and xs <= us
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
