"""Hypotheses: which variables live where, under which intervention.

A hypothesis says "variables V of causal model M are carried at the output of decoder layer
L, at the token named P, and intervention I can swap them". A sweep trains one trial per
hypothesis and ranks them by IIA. Ids are stable and readable, e.g.
`left_boundary@L6:amount_last_digit:boundless`; the causal model is spelled out only when it
is not already named by the variables (`left_and_right_boundary:left_boundary+right_boundary@...`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from causal_models.task import Task, unknown_name

# The intervention kinds, defined once (alignment/interventions.py builds them; configs type with this).
InterventionKind = Literal["boundless", "das", "low_rank", "full_swap", "random_rotation", "neuron_mask"]
INTERVENTIONS: tuple[str, ...] = get_args(InterventionKind)


@dataclass(frozen=True, order=True)
class Hypothesis:
    """Variables x layer x position x intervention, under one causal model."""

    causal_model: str
    variables: tuple[str, ...]
    layer: int
    position: str
    intervention: str = "boundless"
    source_position: str | None = None

    def __post_init__(self) -> None:
        if not self.variables:
            raise ValueError("a hypothesis must name at least one variable")
        if self.layer < 0:
            raise ValueError(f"layer must be >= 0, got {self.layer}")
        if self.intervention not in INTERVENTIONS:
            raise unknown_name("intervention", self.intervention, INTERVENTIONS)

    @property
    def id(self) -> str:
        joined = "+".join(self.variables)
        prefix = "" if joined == self.causal_model else f"{self.causal_model}:"
        position = self.position if self.source_position in (None, self.position) else (
            f"{self.position}<-{self.source_position}")
        return f"{prefix}{joined}@L{self.layer}:{position}:{self.intervention}"


def parse_layers(spec: str | int | Sequence[int], n_layers: int | None = None) -> list[int]:
    """Layers from "all", "2-5", "0,3,6", an int or a list; "all" needs `n_layers`."""
    if isinstance(spec, int):
        layers = [spec]
    elif isinstance(spec, str):
        layers = _parse_layer_string(spec, n_layers)
    else:
        layers = [int(layer) for layer in spec]
    if n_layers is not None:
        for layer in layers:
            if not 0 <= layer < n_layers:
                raise ValueError(f"layer must be in 0..{n_layers - 1} (the model has {n_layers} layers), got {layer}")
    if not layers:
        raise ValueError(f"layers must select at least one layer, got {spec!r}")
    return sorted(set(layers))


def _parse_layer_string(spec: str, n_layers: int | None) -> list[int]:
    if spec.strip() == "all":
        if n_layers is None:
            raise ValueError('layers "all" needs the model\'s layer count')
        return list(range(n_layers))
    layers: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                first, last = part.split("-", 1)
                layers.extend(range(int(first), int(last) + 1))
            else:
                layers.append(int(part))
        except ValueError:
            raise ValueError(f'layers must be "all", a range "2-5" or a list "0,3,6", got {spec!r}') from None
    return layers


def enumerate_hypotheses(
    task: Task,
    layers: Iterable[int],
    causal_models: Sequence[str] | None = None,
    variables: Sequence[Sequence[str]] | None = None,
    positions: Sequence[str] | None = None,
    interventions: Sequence[str] = ("boundless",),
    template: str | None = None,
) -> list[Hypothesis]:
    """The full grid of hypotheses: causal models x variable sets x layers x positions x interventions.

    Args:
        task: the task whose causal models and template positions are used.
        layers: decoder layer indices.
        causal_models: names; default: the task's default causal model.
        variables: variable sets to align, each a hypothesis of its own; default: each causal
            model's default variables (one set per causal model).
        positions: template position names; default: every named position of the template.
        interventions: intervention kinds.
        template: the template whose positions are valid; default: the task's default.
    """
    prompt_template = task.template(template)
    positions = list(positions) if positions is not None else list(prompt_template.position_names)
    for position in positions:
        base, _, source = position.partition("<-")
        for name in filter(None, (base, source)):
            if name not in prompt_template.positions:
                raise unknown_name(f"position of template {prompt_template.name!r}", name,
                                   prompt_template.position_names)
    hypotheses = []
    for model_name in causal_models or [task.default_causal_model]:
        model = task.causal_model(model_name)
        variable_sets = [tuple(v) for v in variables] if variables else [model.default_variables]
        for variable_set in variable_sets:
            for name in variable_set:
                model.variable(name)
            for layer, position, intervention in itertools.product(layers, positions, interventions):
                base, _, source = position.partition("<-")
                hypotheses.append(Hypothesis(model_name, variable_set, layer, base, intervention, source or None))
    return hypotheses
