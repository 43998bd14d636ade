"""The word logic puzzle of align-transformers' `examples/logic_game`, with the program as data.

Five words C0..C4 are shown, then "="; the answer is True or False, computed by a small
program over the words: leaf operations compare two words (`==`, `!=`, `synonym`), and later
operations combine earlier results (`AND`, `OR`). Each operation is a variable op1..opN of
the causal model, so a sweep can look for any of them. A program is a tuple of
`(name, operator, (argument, argument))`; `word_logic_task(program)` builds a task for any
program, and WORD_LOGIC uses the 2023 example `07065a`:
op1 = C2 == C4, op2 = C4 != C0, op3 = synonym(C1, C3), op4 = op1 AND op2, op5 = op4 OR op3.

Inputs are sampled so that each leaf comparison holds about half the time (uniform words
would make `==` almost always False and the labels badly skewed).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from causal_models.causal_model import CausalModel, Variable
from causal_models.task import Task
from causal_models.templates import FieldChar, PromptTemplate

SYNONYMS = (("big", "large"), ("small", "little"), ("happy", "glad"),
            ("fast", "quick"), ("cold", "chilly"), ("smart", "clever"))
WORDS = tuple(word for group in SYNONYMS for word in group)
GROUP = {word: i for i, group in enumerate(SYNONYMS) for word in group}
BOOL = (True, False)
INPUTS = tuple(f"C{i}" for i in range(5))
Operation = tuple[str, str, tuple[str, str]]

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "synonym": lambda a, b: GROUP[a] == GROUP[b],
    "AND": lambda a, b: a and b,
    "OR": lambda a, b: a or b,
}
LEAF_OPERATORS = ("==", "!=", "synonym")

PROGRAM_07065A: tuple[Operation, ...] = (
    ("op1", "==", ("C2", "C4")),
    ("op2", "!=", ("C4", "C0")),
    ("op3", "synonym", ("C1", "C3")),
    ("op4", "AND", ("op1", "op2")),
    ("op5", "OR", ("op4", "op3")),
)


def _check_program(program: Sequence[Operation]) -> None:
    known = set(INPUTS)
    for name, operator, arguments in program:
        if operator not in OPERATORS:
            raise ValueError(f"operator of {name!r} must be one of {sorted(OPERATORS)}, got {operator!r}")
        leaf = operator in LEAF_OPERATORS
        for argument in arguments:
            if argument not in known or (leaf and argument not in INPUTS) or (not leaf and argument in INPUTS):
                kind = "input words C0..C4" if leaf else "earlier operations"
                raise ValueError(f"arguments of {name!r} ({operator}) must be {kind}, got {argument!r}")
        known.add(name)


def _sampler(program: Sequence[Operation]) -> Callable[[random.Random], dict[str, str]]:
    leaves = [(op, args) for _, op, args in program if op in LEAF_OPERATORS]

    def sample(rng: random.Random) -> dict[str, str]:
        words: dict[str, str] = {}
        for operator, (first, second) in leaves:
            words.setdefault(first, rng.choice(WORDS))
            if second in words:
                continue
            options: tuple[str, ...]
            if rng.random() < 0.5:  # make the comparison hold
                options = SYNONYMS[GROUP[words[first]]] if operator == "synonym" else (words[first],)
                if operator == "!=":
                    options = tuple(w for w in WORDS if w != words[first])
            else:
                options = tuple(w for w in WORDS if not OPERATORS[operator](words[first], w))
            words[second] = rng.choice(options)
        return {name: words.get(name) or rng.choice(WORDS) for name in INPUTS}
    return sample


def _causal_model(name: str, program: Sequence[Operation], default: tuple[str, ...]) -> CausalModel:
    variables = [Variable(word, WORDS) for word in INPUTS]
    for op_name, operator, arguments in program:
        variables.append(Variable(op_name, BOOL, tuple(arguments), OPERATORS[operator]))
    variables.append(Variable("answer", BOOL, (program[-1][0],), lambda value: value))
    description = "; ".join(f"{n} = {op}({', '.join(args)})" for n, op, args in program)
    return CausalModel(name, variables, "answer", default, description)


def word_logic_task(program: Sequence[Operation] = PROGRAM_07065A, name: str = "word_logic") -> Task:
    """A word-logic task for `program`; one causal model per operation plus `program` (all leaves)."""
    _check_program(program)
    causal_models = {op: _causal_model(op, program, (op,)) for op, _, _ in program}
    leaves = tuple(op for op, operator, _ in program if operator in LEAF_OPERATORS)
    causal_models["program"] = _causal_model("program", program, leaves)
    template = PromptTemplate(
        name="words",
        text="{C0}, {C1}, {C2}, {C3}, {C4} =",
        fields=lambda inputs: {k: inputs[k] for k in INPUTS},
        positions={k.lower(): FieldChar(k) for k in INPUTS},
        answers={True: "True", False: "False"},
    )
    return Task(
        name=name,
        description="True/False from a program over five words (==, !=, synonym, AND, OR)",
        sample_inputs=_sampler(program),
        causal_models=causal_models,
        templates={"words": template},
        default_causal_model="program",
        default_template="words",
    )


WORD_LOGIC = word_logic_task()
