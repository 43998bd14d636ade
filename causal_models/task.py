"""A task: what a model is asked to do, and the causal models that might explain how it does it.

A task bundles an input sampler (the factual generator), one or more causal models over those
inputs, and prompt templates that turn inputs into text with named positions and answer
strings. Every causal model of a task computes the same factual answer; they differ in the
intermediate variables they posit, which is what a sweep tests. `controls` names the causal
models a found alignment must beat (Mid-point Distance and Bracket Identity for price
tagging): a hypothesis is only interesting if its IIA is clearly above theirs.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from causal_models.causal_model import CausalModel
from causal_models.errors import UserError
from causal_models.pairs import InputSampler
from causal_models.templates import PromptTemplate


class UnknownNameError(UserError, ValueError):
    """A name (task, causal model, template, variable, position) that does not exist."""


def unknown_name(kind: str, name: str, choices: Mapping[str, Any] | tuple[str, ...] | list[str],
                 hint: str = "") -> UnknownNameError:
    """An error that lists the valid names and the closest match."""
    names = sorted(choices)
    close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
    maybe = f" Did you mean {close[0]!r}?" if close else ""
    return UnknownNameError(f"{kind} must be one of {names}, got {name!r}.{maybe}{hint}")


@dataclass(frozen=True)
class Task:
    """A task: inputs, causal models and prompt templates.

    Args:
        name: registry name, e.g. "price_tagging".
        description: one line for `align-search tasks`.
        sample_inputs: the factual input generator `f(rng) -> inputs`.
        causal_models: name -> causal model; all must agree on the factual output.
        templates: name -> prompt template.
        default_causal_model, default_template: used when the user names none.
        controls: causal models a found alignment must beat.
    """

    name: str
    description: str
    sample_inputs: InputSampler
    causal_models: Mapping[str, CausalModel]
    templates: Mapping[str, PromptTemplate]
    default_causal_model: str
    default_template: str
    controls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, model in self.causal_models.items():
            if model.name != name:
                raise ValueError(f"causal model registered as {name!r} in task {self.name!r} is named {model.name!r}")
        # A causal model without its own input distribution uses the task's.
        object.__setattr__(self, "causal_models", {
            name: model if model.sample_inputs else replace(model, sample_inputs=self.sample_inputs)
            for name, model in self.causal_models.items()})
        self.causal_model(self.default_causal_model)
        self.template(self.default_template)
        for control in self.controls:
            self.causal_model(control)

    def causal_model(self, name: str | None = None) -> CausalModel:
        name = name or self.default_causal_model
        if name not in self.causal_models:
            raise unknown_name(f"causal model of task {self.name!r}", name, self.causal_models)
        return self.causal_models[name]

    def template(self, name: str | None = None) -> PromptTemplate:
        name = name or self.default_template
        if name not in self.templates:
            raise unknown_name(f"template of task {self.name!r}", name, self.templates)
        return self.templates[name]

    def factual_output(self, inputs: Mapping[str, Any]) -> Any:
        model = self.causal_model()
        return model.run(inputs)[model.output]

    def sample_factual(self, n: int, seed: int, causal_model: str | None = None) -> list[dict[str, Any]]:
        """`n` factual inputs from the (causal model's) input sampler."""
        sampler = self.causal_model(causal_model).sample_inputs or self.sample_inputs
        rng = random.Random(seed)
        return [sampler(rng) for _ in range(n)]
