"""Hypotheses: which variables live where, under which intervention.

A hypothesis says "variables V of causal model M are carried at the output of component C of
decoder layer L, at token position P, and intervention I can swap them". A sweep trains one
trial per hypothesis and ranks them by IIA.

- component: "block" (the layer's output, the residual stream after it), "attention" or "mlp"
  (what that sub-layer adds to the residual stream).
- position: a template position name ("amount_last_digit"), an integer token offset ("-3",
  the third token from the end; prompts are left-padded, so offsets count from the end), or a
  *group* of them joined by "+" ("amount_first_digit+last"): one intervention applied at
  every token of the group in the same forward pass, each token's source read at the same
  position of the source prompt. "base<-source" reads the source at another position.

Ids are stable, readable and safe in file names, e.g. `left_boundary@L6:amount_last_digit:boundless`,
`left_boundary@L2.mlp:-3=dollars:boundless` (an offset carries the token it falls on in a
sample prompt), `left_boundary@L0:amount_first_digit+last:boundless` (a group); the causal model
is spelled out only when the variables do not name it
(`left_and_right_boundary:left_boundary+right_boundary@...`).
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from causal_models.errors import UserError
from causal_models.task import Task, unknown_name

# The small vocabularies of a hypothesis, each defined once as a Literal (configs type with them,
# alignment/interventions.py builds the kinds, alignment/sites.py resolves the components).
InterventionKind = Literal["boundless", "das", "low_rank", "full_swap", "random_rotation", "neuron_mask"]
INTERVENTIONS: tuple[str, ...] = get_args(InterventionKind)
Component = Literal["block", "attention", "mlp"]
COMPONENTS: tuple[str, ...] = get_args(Component)
GROUP, CROSS = "+", "<-"
EVERY, ALL = "every", "all"
_SLUG_NAMES = {"\n": "NL", "\t": "TAB", " ": "SP"}


class PositionSpecError(UserError, ValueError):
    """A position, group or grid of positions that cannot be resolved."""


def position_members(position: str) -> tuple[str, ...]:
    """The token positions a position stands for: itself, or each member of a group "a+b"."""
    return tuple(position.split(GROUP))


def is_offset(member: str) -> bool:
    """Whether a position member is an integer token index ("-3", "5") rather than a name."""
    try:
        int(member)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, order=True)
class Hypothesis:
    """Variables x layer x component x position x intervention, under one causal model.

    position_tokens: the text of the token each member of `position` falls on in a sample
        prompt of the sweep ("" for a named member), or () when not known. It labels
        offsets in ids, tables and heatmaps; it never decides where a trial intervenes.
    """

    causal_model: str
    variables: tuple[str, ...]
    layer: int
    position: str
    intervention: str = "boundless"
    source_position: str | None = None
    component: str = "block"
    position_tokens: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # tuples, also when read back from JSON lists (trials.json)
        object.__setattr__(self, "variables", tuple(self.variables))
        object.__setattr__(self, "position_tokens", tuple(self.position_tokens))
        if not self.variables:
            raise ValueError("a hypothesis must name at least one variable")
        if self.layer < 0:
            raise ValueError(f"layer must be >= 0, got {self.layer}")
        if self.intervention not in INTERVENTIONS:
            raise unknown_name("intervention", self.intervention, INTERVENTIONS)
        if self.component not in COMPONENTS:
            raise unknown_name("component", self.component, COMPONENTS)
        check_position(self.position, self.source_position)
        if self.position_tokens and len(self.position_tokens) != len(self.members):
            raise ValueError(f"position_tokens must give one token per member of {self.position!r}, "
                             f"got {self.position_tokens}")

    @property
    def members(self) -> tuple[str, ...]:
        return position_members(self.position)

    @property
    def label(self) -> str:
        """The position as people read it: `-3 'dollars'`, `amount_last_digit`, `[amount_first_digit + last]`."""
        shown = [_member_label(m, t) for m, t in zip(self.members, self._tokens())]
        label = shown[0] if len(shown) == 1 else f"[{' + '.join(shown)}]"
        if self.source_position not in (None, self.position):
            label += f" <- {self.source_position}"
        return label

    @property
    def id(self) -> str:
        joined = "+".join(self.variables)
        prefix = "" if joined == self.causal_model else f"{self.causal_model}:"
        position = GROUP.join(_member_id(m, t) for m, t in zip(self.members, self._tokens()))
        if self.source_position not in (None, self.position):
            position += f"{CROSS}{self.source_position}"
        component = "" if self.component == "block" else f".{self.component}"
        return f"{prefix}{joined}@L{self.layer}{component}:{position}:{self.intervention}"

    def _tokens(self) -> tuple[str, ...]:
        return self.position_tokens or ("",) * len(self.members)


def check_position(position: str, source_position: str | None = None) -> None:
    """A position (and the source position, if another) must be non-empty members, a group without repeats,
    and a source group as long as the base group."""
    for side in (position,) if source_position is None else (position, source_position):
        members = position_members(side)
        if not all(members) or CROSS in side:
            raise PositionSpecError(f"position must be a name, an integer or a group 'a+b' of them, got {side!r}")
        if len(set(members)) != len(members):
            raise PositionSpecError(f"a position group must name each token once, got {side!r}")
    if source_position is not None and len(position_members(source_position)) != len(position_members(position)):
        raise PositionSpecError(f"source position {source_position!r} must have as many tokens as position "
                                f"{position!r}")


def _member_label(member: str, token: str) -> str:
    if not token:
        return member
    text = token.strip() or token
    return f"{member} {text!r}"


def _member_id(member: str, token: str) -> str:
    return f"{member}={_slug(token)}" if token else member


def _slug(token: str, limit: int = 24) -> str:
    """A token's text in characters safe in ids and file names: `dollars`, `colon`, `NL`."""
    text = token.strip() or token
    spelled = "".join(char if char.isascii() and (char.isalnum() or char in "_.") else f"_{_char_name(char)}_"
                      for char in text)
    return re.sub("_+", "_", spelled).strip("_")[:limit].strip("_") or "empty"


def _char_name(char: str) -> str:
    return _SLUG_NAMES.get(char) or unicodedata.name(char, "char").lower().replace(" ", "_").replace("-", "_")


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


PositionGrid = str | Sequence[str | int | Sequence[str | int]]


def grid_positions(spec: PositionGrid, names: Sequence[str], n_tokens: int | None) -> list[str]:
    """The position strings a grid spec stands for, in order, each once.

    "all" is every named position of the template, "every" every token offset -n_tokens..-1
    (n_tokens: tokens in the shortest prompt; None leaves "every" out, for checks made before
    the prompts exist). A list mixes names, integer offsets, "all", "every" and groups (lists).
    """
    items = [spec] if isinstance(spec, str) else list(spec)
    positions: list[str] = []
    for item in items:
        if item == ALL:
            positions.extend(names)
        elif item == EVERY:
            positions.extend(str(offset) for offset in range(-(n_tokens or 0), 0))
        elif isinstance(item, (str, int)):
            positions.append(str(item))
        else:
            members = [str(member) for member in item]
            if {ALL, EVERY} & set(members):
                raise PositionSpecError(f'a position group must list positions, not "all" or "every", got {members}')
            positions.append(GROUP.join(members))
    return list(dict.fromkeys(positions))


def enumerate_hypotheses(
    task: Task,
    layers: Iterable[int],
    causal_models: Sequence[str] | None = None,
    variables: Sequence[Sequence[str]] | None = None,
    positions: Sequence[str] | None = None,
    interventions: Sequence[str] = ("boundless",),
    template: str | None = None,
    components: Sequence[str] = ("block",),
    tokens: Mapping[str, str] | None = None,
) -> list[Hypothesis]:
    """The full grid: causal models x variable sets x layers x components x positions x interventions.

    Args:
        task: the task whose causal models and template positions are used.
        layers: decoder layer indices.
        causal_models: names; default: the task's default causal model.
        variables: variable sets to align, each a hypothesis of its own; default: each causal
            model's default variables (one set per causal model).
        positions: position strings (names, integer offsets, groups "a+b", "base<-source");
            default: every named position of the template.
        interventions: intervention kinds.
        template: the template whose positions are valid; default: the task's default.
        components: "block", "attention", "mlp".
        tokens: offset -> the text of its token in a sample prompt (labels the offsets).
    """
    prompt_template = task.template(template)
    positions = list(positions) if positions is not None else list(prompt_template.position_names)
    for position in positions:
        _check_names(position, prompt_template.name, prompt_template.position_names)
    for component in components:
        if component not in COMPONENTS:
            raise unknown_name("component", component, COMPONENTS)
    hypotheses = []
    for model_name in causal_models or [task.default_causal_model]:
        model = task.causal_model(model_name)
        variable_sets = [tuple(v) for v in variables] if variables else [model.default_variables]
        for variable_set in variable_sets:
            for name in variable_set:
                model.variable(name)
            for layer, component, position, intervention in itertools.product(
                    layers, components, positions, interventions):
                base, _, source = position.partition(CROSS)
                hypotheses.append(Hypothesis(model_name, variable_set, layer, base, intervention, source or None,
                                             component, _tokens_of(base, tokens or {})))
    return hypotheses


def _check_names(position: str, template: str, names: Sequence[str]) -> None:
    base, _, source = position.partition(CROSS)
    check_position(base, source or None)
    for member in position_members(base) + (position_members(source) if source else ()):
        if member not in names and not is_offset(member):
            raise unknown_name(f"position of template {template!r}", member, list(names),
                               " Integer offsets such as -1 (the last token) also work.")


def _tokens_of(position: str, tokens: Mapping[str, str]) -> tuple[str, ...]:
    found = tuple(tokens.get(member, "") if is_offset(member) else "" for member in position_members(position))
    return found if any(found) else ()
