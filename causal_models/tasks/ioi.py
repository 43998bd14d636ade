"""Indirect-object identification (Wang et al. 2022), as the DAS literature sets it up.

"When Mary and John went to the store, John gave a drink to" -> " Mary". Two names are
mentioned; one of them (the subject) is mentioned again; the answer is the other one, the
indirect object (IO). Inputs: the two names in order of mention, whether the IO is the first
mentioned (`io_first`: ABBA when true, BABA when false), the place and the object.

Causal models (after Wu et al. 2023's IOI-with-DAS tutorial and causalgym):
- io_position: a boolean `position` (is the IO the first-mentioned name?); the answer is the
  base prompt's name in that slot. Swapping it from a source of the other order makes the
  model answer the *subject*: the positional signal S-inhibition heads carry.
- io_name: the IO's identity `io_name`; the answer is that name. Swapping it from a source
  answers the source's IO, a name absent from the base prompt: what name movers copy.

For real models the names, places and objects are single tokens with their leading space in
SmolLM2's byte-level BPE tokenizer, so each named position is one token and an answer
is scored by the IO name's only token (`tests/integration/test_smollm2.py` checks both).
Named positions: name1, name2, subject (the second mention of the subject, S2 in Wang et
al.), subject_last (its last token: the same token when names are single tokens), object, and
last (the final " to", END in Wang et al., where the answer is predicted).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from causal_models.causal_model import CausalModel, Variable
from causal_models.task import Task
from causal_models.templates import FieldChar, PromptTemplate

NAMES = ("Mary", "John", "Tom", "James", "Anna", "Sarah", "David", "Michael", "Emma", "Paul",
         "Mark", "Lisa", "Kate", "Peter", "Alice", "Robert", "Laura", "Daniel", "Susan", "George")
PLACES = ("store", "park", "school", "office", "garden", "station", "market", "library")
OBJECTS = ("drink", "book", "ball", "letter", "gift", "key", "phone", "bag")
BOOL = (True, False)
FRAMES = {
    "went": "When {name1} and {name2} went to the {place}, {subject} gave a {object} to",
    "then": "Then, {name1} and {name2} had a long day at the {place}. {subject} handed a {object} to",
    "after": "After {name1} and {name2} arrived at the {place}, {subject} threw a {object} to",
}


def sample_inputs(rng: random.Random) -> dict[str, Any]:
    name1, name2 = rng.sample(NAMES, 2)
    return {"name1": name1, "name2": name2, "io_first": rng.random() < 0.5,
            "place": rng.choice(PLACES), "object": rng.choice(OBJECTS)}


def _inputs() -> list[Variable]:
    return [Variable("name1", NAMES), Variable("name2", NAMES), Variable("io_first", BOOL),
            Variable("place", PLACES), Variable("object", OBJECTS)]


def _io_position() -> CausalModel:
    return CausalModel(
        name="io_position",
        variables=[
            *_inputs(),
            Variable("position", BOOL, ("io_first",), lambda io_first: io_first),
            Variable("answer", NAMES, ("name1", "name2", "position"),
                     lambda name1, name2, first: name1 if first else name2),
        ],
        output="answer",
        default_variables=("position",),
        description="which mention (first or second) is the indirect object",
    )


def _io_name() -> CausalModel:
    return CausalModel(
        name="io_name",
        variables=[
            *_inputs(),
            Variable("io_name", NAMES, ("name1", "name2", "io_first"),
                     lambda name1, name2, first: name1 if first else name2),
            Variable("answer", NAMES, ("io_name",), lambda name: name),
        ],
        output="answer",
        default_variables=("io_name",),
        description="the indirect object's name itself",
    )


def _fields(inputs: Mapping[str, Any]) -> dict[str, str]:
    subject = inputs["name2"] if inputs["io_first"] else inputs["name1"]
    return {"name1": inputs["name1"], "name2": inputs["name2"], "subject": subject,
            "place": inputs["place"], "object": inputs["object"]}


def _template(name: str, frame: str) -> PromptTemplate:
    return PromptTemplate(
        name=name,
        text=frame,
        fields=_fields,
        positions={
            "name1": FieldChar("name1"),
            "name2": FieldChar("name2"),
            "subject": FieldChar("subject"),
            "subject_last": FieldChar("subject", -1),
            "object": FieldChar("object"),
        },
        answers={name: f" {name}" for name in NAMES},
    )


IOI = Task(
    name="ioi",
    description="indirect-object identification: 'When Mary and John went to the store, John gave a drink to' -> Mary",
    sample_inputs=sample_inputs,
    causal_models={"io_position": _io_position(), "io_name": _io_name()},
    templates={name: _template(name, frame) for name, frame in FRAMES.items()},
    default_causal_model="io_position",
    default_template="went",
)
