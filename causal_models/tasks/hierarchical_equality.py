"""Hierarchical equality, the classic DAS example (Geiger et al. 2023, "Finding Alignments...").

Four entities W, X, Y, Z; the answer is whether (W == X) equals (Y == Z). The natural causal
model has two intermediate booleans, WX = (W == X) and YZ = (Y == Z). Inputs are sampled so
that each equality holds half the time, which makes both variables and the answer balanced.
Here the entities are letters in a short text prompt.
"""

from __future__ import annotations

import random

from causal_models.causal_model import CausalModel, Variable
from causal_models.task import Task
from causal_models.templates import FieldChar, PromptTemplate

ENTITIES = tuple("ABCDEFGHJK")
BOOL = (True, False)


def _pair(rng: random.Random) -> tuple[str, str]:
    first = rng.choice(ENTITIES)
    if rng.random() < 0.5:
        return first, first
    return first, rng.choice([e for e in ENTITIES if e != first])


def sample_inputs(rng: random.Random) -> dict[str, str]:
    w, x = _pair(rng)
    y, z = _pair(rng)
    return {"W": w, "X": x, "Y": y, "Z": z}


def _causal_model(name: str, default: tuple[str, ...], description: str) -> CausalModel:
    return CausalModel(
        name=name,
        variables=[
            *(Variable(entity, ENTITIES) for entity in "WXYZ"),
            Variable("WX", BOOL, ("W", "X"), lambda w, x: w == x),
            Variable("YZ", BOOL, ("Y", "Z"), lambda y, z: y == z),
            Variable("answer", BOOL, ("WX", "YZ"), lambda wx, yz: wx == yz),
        ],
        output="answer",
        default_variables=default,
        description=description,
    )


def _template() -> PromptTemplate:
    return PromptTemplate(
        name="letters",
        text="{W} {X} {Y} {Z}\nsame?\n",
        fields=lambda inputs: {k: inputs[k] for k in "WXYZ"},
        positions={"w": FieldChar("W"), "x": FieldChar("X"), "y": FieldChar("Y"), "z": FieldChar("Z")},
        answers={True: "yes", False: "no"},
    )


HIERARCHICAL_EQUALITY = Task(
    name="hierarchical_equality",
    description="yes iff (W == X) == (Y == Z)",
    sample_inputs=sample_inputs,
    causal_models={
        "equality": _causal_model("equality", ("WX", "YZ"), "WX = (W == X) and YZ = (Y == Z), one block each"),
        "wx": _causal_model("wx", ("WX",), "the boolean W == X alone"),
        "yz": _causal_model("yz", ("YZ",), "the boolean Y == Z alone"),
    },
    templates={"letters": _template()},
    default_causal_model="equality",
    default_template="letters",
)
