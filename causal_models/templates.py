"""Prompt templates with named positions.

A hypothesis places a variable at a token position, and researchers think of positions by
name ("the amount's last digit", "the colon after Response"), not by index: the index moves
with the tokenizer, with an irrelevant prefix, and with left padding. So a template renders
a prompt together with the *character* offset of each named position. The torch side maps a
character offset to the token that covers it through the tokenizer's offset mapping
(`alignment/prompts.py`); a character that no token covers (whitespace a word-level
tokenizer drops) maps to the last token before it.

Anchors say where a named position is:
- `FieldChar("amount", -1)`: a character of a rendered field (here its last digit);
- `TextChar("### Response:", -1)`: a character of a literal piece of template text
  (its last occurrence);
- `LAST`: the prompt's final character, i.e. the token that predicts the answer.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from causal_models.errors import UserError

Inputs = Mapping[str, Any]


class TemplateError(UserError, ValueError):
    """A template is badly defined or cannot render some inputs."""


@dataclass(frozen=True)
class FieldChar:
    """Character `index` of the rendered field `field` (negative counts from the end)."""

    field: str
    index: int = 0


@dataclass(frozen=True)
class TextChar:
    """Character `index` of the last occurrence of `text` in the template's literal text."""

    text: str
    index: int = -1


@dataclass(frozen=True)
class LastChar:
    """The prompt's final character."""


LAST = LastChar()
Anchor = FieldChar | TextChar | LastChar


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt and the character offset of each named position."""

    text: str
    positions: dict[str, int]


@dataclass(frozen=True)
class PromptTemplate:
    """Text with `{field}` slots, how to fill them, named positions and answer strings.

    Args:
        name: e.g. "alpaca".
        text: str.format-style text; every `{field}` must come from `fields`.
        fields: `f(inputs) -> {field: string}`.
        positions: position name -> anchor. "last" is always added.
        answers: output value -> the exact continuation the model should produce
            (its first token is the answer token), e.g. {True: "Yes", False: "No"}.
    """

    name: str
    text: str
    fields: Callable[[Inputs], dict[str, str]]
    positions: Mapping[str, Anchor]
    answers: Mapping[Any, str]

    def __post_init__(self) -> None:
        slots = [f for _, f, _, _ in string.Formatter().parse(self.text) if f is not None]
        if len(set(slots)) != len(slots):
            raise TemplateError(f"template {self.name!r} must use each field once, got {slots}")
        positions = {**dict(self.positions), "last": LAST}
        for name, anchor in positions.items():
            if isinstance(anchor, FieldChar) and anchor.field not in slots:
                raise TemplateError(f"position {name!r} of template {self.name!r} names unknown field "
                                    f"{anchor.field!r}; fields: {slots}")
            if isinstance(anchor, TextChar) and anchor.text not in self._literal_text():
                raise TemplateError(f"position {name!r} of template {self.name!r} anchors on text "
                                    f"{anchor.text!r}, which the template does not contain")
        object.__setattr__(self, "positions", positions)
        if len(set(self.answers.values())) != len(self.answers):
            raise TemplateError(f"answers of template {self.name!r} must differ, got {dict(self.answers)}")

    @property
    def position_names(self) -> tuple[str, ...]:
        return tuple(self.positions)

    def render(self, inputs: Inputs) -> Prompt:
        """Fill the template and locate every named position."""
        values = self.fields(inputs)
        pieces: list[str] = []
        field_spans: dict[str, tuple[int, int]] = {}
        literal_spans: list[tuple[int, str]] = []
        offset = 0
        for literal, field_name, _, _ in string.Formatter().parse(self.text):
            pieces.append(literal)
            literal_spans.append((offset, literal))
            offset += len(literal)
            if field_name is None:
                continue
            if field_name not in values:
                raise TemplateError(f"template {self.name!r} needs field {field_name!r}; "
                                    f"its field function returned {sorted(values)}")
            value = str(values[field_name])
            field_spans[field_name] = (offset, offset + len(value))
            pieces.append(value)
            offset += len(value)
        text = "".join(pieces)
        positions = {name: self._locate(name, anchor, text, field_spans, literal_spans)
                     for name, anchor in self.positions.items()}
        return Prompt(text, positions)

    def locate(self, text: str) -> Prompt:
        """Read a prompt written in this template back: its named positions (fields matched as text).

        Raises TemplateError when `text` does not follow the template.
        """
        pattern, fields, pieces = "", [], []
        for literal, field_name, _, _ in string.Formatter().parse(self.text):
            pattern += re.escape(literal)
            pieces.append((literal, field_name))
            if field_name is not None:
                pattern += f"(?P<{field_name}>.+?)"
                fields.append(field_name)
        # The pattern backtracks over every way to split the text between fields: refuse what cannot
        # match (literals missing or out of order, far too long) before it runs.
        match = re.fullmatch(pattern, text, flags=re.DOTALL) if _may_follow(text, pieces) else None
        if match is None:
            shown = repr(text) if len(text) <= 160 else f"{text[:160]!r}... ({len(text)} characters)"
            raise TemplateError(f"prompt must follow template {self.name!r} ({self.text!r}), got {shown}")
        field_spans = {name: match.span(name) for name in fields}
        literal_spans, offset = [], 0
        for literal, field_name, _, _ in string.Formatter().parse(self.text):
            literal_spans.append((offset, literal))
            offset += len(literal) + (field_spans[field_name][1] - field_spans[field_name][0] if field_name else 0)
        positions = {name: self._locate(name, anchor, text, field_spans, literal_spans)
                     for name, anchor in self.positions.items()}
        return Prompt(text, positions)

    def answer(self, output_value: Any) -> str:
        if output_value not in self.answers:
            raise TemplateError(f"template {self.name!r} has no answer for output value {output_value!r}; "
                                f"answers: {dict(self.answers)}")
        return self.answers[output_value]

    def _literal_text(self) -> str:
        return "".join(literal for literal, _, _, _ in string.Formatter().parse(self.text))

    def _locate(self, name: str, anchor: Anchor, text: str,
                field_spans: dict[str, tuple[int, int]], literal_spans: list[tuple[int, str]]) -> int:
        if isinstance(anchor, LastChar):
            return len(text) - 1
        if isinstance(anchor, FieldChar):
            start, end = field_spans[anchor.field]
            return _index_in_span(name, start, end, anchor.index, text)
        for start, literal in reversed(literal_spans):
            found = literal.rfind(anchor.text)
            if found >= 0:
                return _index_in_span(name, start + found, start + found + len(anchor.text), anchor.index, text)
        raise TemplateError(f"position {name!r}: text {anchor.text!r} not found in {text!r}")


def _index_in_span(name: str, start: int, end: int, index: int, text: str) -> int:
    length = end - start
    if not -length <= index < length:
        raise TemplateError(f"position {name!r} must index into {text[start:end]!r} "
                            f"(length {length}), got index {index}")
    return start + index % length


MAX_PROMPT_CHARACTERS = 20_000  # a prompt read back through a template; longer ones are not a task's prompts


def _may_follow(text: str, pieces: list[tuple[str, str | None]]) -> bool:
    """Can `text` follow a template of these (literal, field) pieces? Its literals in order, each field non-empty."""
    if len(text) > MAX_PROMPT_CHARACTERS:
        return False
    suffix = pieces[-1][0] if pieces and pieces[-1][1] is None else ""
    if not text.endswith(suffix):
        return False
    end, offset = len(text) - len(suffix), 0
    for index, (literal, field_name) in enumerate(pieces):
        if index == len(pieces) - 1 and field_name is None:
            break  # the suffix, checked above
        found = text.find(literal, offset) if index else (0 if text.startswith(literal) else -1)
        if found < 0 or found + len(literal) > end:
            return False
        offset = found + len(literal) + (1 if field_name is not None else 0)
    return offset <= end
