"""The price-tagging game of "Interpretability at Scale" (Wu et al. 2023).

The model reads a bracket [lower, upper] and an amount and answers Yes iff
lower <= amount <= upper (inclusive). Prices have two decimals. Inputs are kept in integer
cents so that no comparison depends on float rounding.

Sampler (the 2023 code, `pricing_tag_game_config_sampler`): width ~ U(2.50, 7.50),
lower ~ U(0.05, 9.95 - width), upper = lower + width, amount ~ U(0.01, 9.99), each rounded
to two decimals.

Causal models:
- left_boundary / right_boundary / left_and_right_boundary: two booleans,
  `left_boundary = amount >= lower` and `right_boundary = amount <= upper`, answer = both;
  they differ in which variables a hypothesis aligns (the last one trains one rotation with
  a block per variable, each pair intervening on one of them).
- mid_point_distance (control): answer = |amount - midpoint| <= half width.
- bracket_identity (control): the (lower, upper) pair as one variable.
- left_boundary_fixed / left_boundary_fixed_unseen: Left Boundary on a fixed bracket
  5.49-8.49 (trained) and 2.51-5.51 (unseen, for zero-shot transfer).
- left_dollars / right_dollars / left_and_right_dollars: the comparison done digit by digit, as
  a model that reads prices a digit per token might do it (the shipped model's boundaries sit
  mostly at the amount's first digit, and the dollars alone decide about 90% of prompts).
  `left_dollars` compares the amount's dollars with the lower bound's (less / equal /
  greater), `left_cents` the cents; the amount is above the lower bound when its dollars are
  greater, or equal with cents not less. Likewise `right_dollars` and `right_cents` with the
  upper bound. The booleans are then descendants of the comparisons, so a pair that swaps a
  dollar comparison keeps the base's cents: where the dollars tie in the source, the label
  differs from swapping the boolean, and IIA can tell the two hypotheses apart.

Templates: "alpaca" is the paper's prompt; "alpaca_true_false" the sibling instruction;
"alpaca_prefix_game" / "alpaca_prefix_frogs" add the irrelevant prefixes. The "compact"
family keeps the paper's structure (bracket, amount, "dollars", "Response:") in 27
word-level tokens, for the small models align-search trains itself.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from causal_models.causal_model import CausalModel, Variable
from causal_models.task import Task
from causal_models.templates import FieldChar, PromptTemplate, TextChar

CENTS = range(0, 1000)
BOOL = (True, False)
ORDER = ("less", "equal", "greater")
FIXED_BRACKET = (549, 849)
UNSEEN_BRACKET = (251, 551)
PREFIX_GAME = "Pricing tag game! "
PREFIX_FROGS = "Fruitarian Frogs May Be Doing Flowers a Favor. "

ALPACA = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{prefix}Please say {yes} only if it costs between {{lower}} and {{upper}} dollars, "
    "otherwise {no}.\n\n### Input:\n{{amount}} dollars\n\n### Response:\n"
)
COMPACT = "{prefix}between {{lower}} and {{upper}} dollars? say {yes} or {no}.\n{{amount}} dollars\nResponse:\n"


def sample_inputs(rng: random.Random) -> dict[str, int]:
    """The 2023 sampler, in cents."""
    width = round(rng.uniform(2.50, 7.50) * 100)
    lower = round(rng.uniform(0.05, 9.95 - width / 100) * 100)
    amount = round(rng.uniform(0.01, 9.99) * 100)
    return {"lower": lower, "upper": lower + width, "amount": amount}


def sample_dollar_ties(rng: random.Random) -> dict[str, int]:
    """The 2023 sampler, except that half of the amounts share their dollars with a bound (either, at random).

    Only where the dollars tie do the cents decide, and only there do the dollar comparisons
    and the paper's booleans predict different counterfactual labels; under the 2023 sampler
    that is about 5% of pairs, too few for IIA to tell the hypotheses apart.
    """
    inputs = sample_inputs(rng)
    if rng.random() < 0.5:
        bound = inputs[rng.choice(("lower", "upper"))]
        inputs["amount"] = min(max(bound // 100 * 100 + rng.randrange(100), 1), 999)
    return inputs


def _fixed_bracket_sampler(bracket: tuple[int, int]) -> Any:
    def sample(rng: random.Random) -> dict[str, int]:
        return {"lower": bracket[0], "upper": bracket[1], "amount": round(rng.uniform(0.01, 9.99) * 100)}
    return sample


def _inputs() -> list[Variable]:
    return [Variable("lower", CENTS), Variable("upper", CENTS), Variable("amount", CENTS)]


def _boundaries(name: str, default: tuple[str, ...], description: str, sampler: Any = None) -> CausalModel:
    return CausalModel(
        name=name,
        variables=[
            *_inputs(),
            Variable("left_boundary", BOOL, ("amount", "lower"), lambda amount, lower: amount >= lower),
            Variable("right_boundary", BOOL, ("amount", "upper"), lambda amount, upper: amount <= upper),
            Variable("answer", BOOL, ("left_boundary", "right_boundary"), lambda left, right: left and right),
        ],
        output="answer",
        default_variables=default,
        description=description,
        sample_inputs=sampler,
    )


def compare(a: int, b: int) -> str:
    """"less", "equal" or "greater": a three-valued comparison of a with b."""
    return ORDER[(a > b) - (a < b) + 1]


def _at_least(dollars: str, cents: str) -> bool:
    return dollars == "greater" or (dollars == "equal" and cents != "less")


def _at_most(dollars: str, cents: str) -> bool:
    return dollars == "less" or (dollars == "equal" and cents != "greater")


def _digit_by_digit(name: str, default: tuple[str, ...], description: str, sampler: Any = None) -> CausalModel:
    """The boundaries compared dollars first, then cents when the dollars tie."""
    def dollars(amount: int, bound: int) -> str:
        return compare(amount // 100, bound // 100)

    def cents(amount: int, bound: int) -> str:
        return compare(amount % 100, bound % 100)

    return CausalModel(
        name=name,
        variables=[
            *_inputs(),
            Variable("left_dollars", ORDER, ("amount", "lower"), dollars),
            Variable("left_cents", ORDER, ("amount", "lower"), cents),
            Variable("right_dollars", ORDER, ("amount", "upper"), dollars),
            Variable("right_cents", ORDER, ("amount", "upper"), cents),
            Variable("left_boundary", BOOL, ("left_dollars", "left_cents"), _at_least),
            Variable("right_boundary", BOOL, ("right_dollars", "right_cents"), _at_most),
            Variable("answer", BOOL, ("left_boundary", "right_boundary"), lambda left, right: left and right),
        ],
        output="answer",
        default_variables=default,
        description=description,
        sample_inputs=sampler,
    )


def _mid_point_distance() -> CausalModel:
    # Twice the midpoint and the full width keep everything in integer cents.
    return CausalModel(
        name="mid_point_distance",
        variables=[
            *_inputs(),
            Variable("mid_point", None, ("lower", "upper"), lambda lower, upper: lower + upper),
            Variable("width", None, ("lower", "upper"), lambda lower, upper: upper - lower),
            Variable("answer", BOOL, ("amount", "mid_point", "width"),
                     lambda amount, twice_mid, width: abs(2 * amount - twice_mid) <= width),
        ],
        output="answer",
        default_variables=("mid_point",),
        description="control: Yes iff the amount is within half the width of the bracket's midpoint",
    )


def _bracket_identity() -> CausalModel:
    return CausalModel(
        name="bracket_identity",
        variables=[
            *_inputs(),
            Variable("bracket", None, ("lower", "upper"), lambda lower, upper: (lower, upper)),
            Variable("answer", BOOL, ("amount", "bracket"),
                     lambda amount, bracket: bracket[0] <= amount <= bracket[1]),
        ],
        output="answer",
        default_variables=("bracket",),
        description="control: the (lower, upper) bracket as one variable",
    )


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _fields(inputs: Mapping[str, Any]) -> dict[str, str]:
    return {key: _money(inputs[key]) for key in ("lower", "upper", "amount")}


def _template(name: str, text: str, prefix: str = "", yes: str = "yes", no: str = "no") -> PromptTemplate:
    answers = {True: yes.capitalize(), False: no.capitalize()}
    return PromptTemplate(
        name=name,
        text=text.format(prefix=prefix, yes=yes, no=no),
        fields=_fields,
        positions={
            "lower_last_digit": FieldChar("lower", -1),
            "upper_last_digit": FieldChar("upper", -1),
            "amount_first_digit": FieldChar("amount", 0),
            "amount_last_digit": FieldChar("amount", -1),
            "amount_dollars": TextChar(" dollars\n", 1),
            "amount_newline": TextChar(" dollars\n", -1),
            "response": TextChar("Response:", 0),
            "response_colon": TextChar("Response:", -1),
        },
        answers=answers,
    )


def _templates() -> dict[str, PromptTemplate]:
    templates = {}
    for family, text in (("alpaca", ALPACA), ("compact", COMPACT)):
        templates[family] = _template(family, text)
        templates[f"{family}_prefix_game"] = _template(f"{family}_prefix_game", text, PREFIX_GAME)
        templates[f"{family}_prefix_frogs"] = _template(f"{family}_prefix_frogs", text, PREFIX_FROGS)
        templates[f"{family}_true_false"] = _template(f"{family}_true_false", text, yes="true", no="false")
    return templates


PRICE_TAGGING = Task(
    name="price_tagging",
    description="Yes iff lower <= amount <= upper (the Boundless DAS price-tagging game)",
    sample_inputs=sample_inputs,
    causal_models={
        "left_boundary": _boundaries("left_boundary", ("left_boundary",),
                                     "Left Boundary: the boolean amount >= lower"),
        "right_boundary": _boundaries("right_boundary", ("right_boundary",),
                                      "Right Boundary: the boolean amount <= upper"),
        "left_and_right_boundary": _boundaries(
            "left_and_right_boundary", ("left_boundary", "right_boundary"),
            "Left and Right Boundary: both booleans, one block each; a pair intervenes on one"),
        "mid_point_distance": _mid_point_distance(),
        "bracket_identity": _bracket_identity(),
        "left_boundary_fixed": _boundaries(
            "left_boundary_fixed", ("left_boundary",), "Left Boundary on the fixed bracket 5.49-8.49",
            _fixed_bracket_sampler(FIXED_BRACKET)),
        "left_boundary_fixed_unseen": _boundaries(
            "left_boundary_fixed_unseen", ("left_boundary",),
            "Left Boundary on the unseen fixed bracket 2.51-5.51 (zero-shot transfer)",
            _fixed_bracket_sampler(UNSEEN_BRACKET)),
        "left_dollars": _digit_by_digit(
            "left_dollars", ("left_dollars",), "Left Dollars: the amount's dollars against the lower bound's "
            "(less/equal/greater), cents break a tie; half the amounts tie a bound's dollars", sample_dollar_ties),
        "right_dollars": _digit_by_digit(
            "right_dollars", ("right_dollars",), "Right Dollars: the amount's dollars against the upper bound's "
            "(less/equal/greater), cents break a tie; half the amounts tie a bound's dollars", sample_dollar_ties),
        "left_and_right_dollars": _digit_by_digit(
            "left_and_right_dollars", ("left_dollars", "right_dollars"),
            "Left and Right Dollars: both dollar comparisons, one block each (a pair intervenes on one); "
            "half the amounts tie a bound's dollars", sample_dollar_ties),
        "left_boundary_ties": _boundaries(
            "left_boundary_ties", ("left_boundary",),
            "Left Boundary on Left Dollars' inputs (half the amounts tie a bound's dollars)", sample_dollar_ties),
        "right_boundary_ties": _boundaries(
            "right_boundary_ties", ("right_boundary",),
            "Right Boundary on Right Dollars' inputs (half the amounts tie a bound's dollars)", sample_dollar_ties),
    },
    templates=_templates(),
    default_causal_model="left_and_right_boundary",
    default_template="alpaca",
    controls=("mid_point_distance", "bracket_identity"),
)
