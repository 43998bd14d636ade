"""Counterfactual datasets as index tensors into one table of tokenized prompts.

A trial's pairs (train, dev and test splits) reference a shared `PromptTable` of unique
prompts, so each prompt is tokenized once and its hidden states are cached once, however
many pairs (or trials, in a sweep) use it. A pair is then four small tensors: the base row,
one source row per variable (-1 where a variable is not intervened), which variables are
active, and the counterfactual and base answer tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from alignment.prompts import MISSING, PromptTable, answer_token_ids, build_prompt_table


@dataclass
class PairTensors:
    """One split of counterfactual pairs, as rows of a PromptTable.

    Attributes:
        base_rows: (N,) base prompt rows.
        source_rows: (N, V) source prompt row per variable, -1 where inactive.
        active: (N, V) bool, which variables each pair intervenes on.
        labels: (N,) counterfactual answer token ids.
        base_labels: (N,) the base prompt's own answer token ids.
    """

    base_rows: Tensor
    source_rows: Tensor
    active: Tensor
    labels: Tensor
    base_labels: Tensor

    def __len__(self) -> int:
        return int(self.base_rows.shape[0])

    def select(self, index: Tensor) -> PairTensors:
        return PairTensors(self.base_rows[index], self.source_rows[index], self.active[index],
                           self.labels[index], self.base_labels[index])

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[PairTensors]:
        """Consecutive batches, shuffled when a generator is given; the last may be smaller."""
        order = torch.randperm(len(self), generator=generator) if generator is not None else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            yield self.select(order[start:start + batch_size])


@dataclass
class TrialData:
    """The prompt table, the pair splits, and the answer tokens a trial needs."""

    table: PromptTable
    splits: dict[str, PairTensors]
    variables: list[str]
    answers: list[str]
    answer_ids: Tensor

    def split(self, name: str) -> PairTensors:
        if name not in self.splits:
            raise KeyError(f"split must be one of {sorted(self.splits)}, got {name!r}")
        return self.splits[name]


def build_trial_data(tokenizer: Any, splits: Mapping[str, Sequence[Mapping[str, Any]]],
                     variables: Sequence[str], answers: Sequence[str],
                     table_prompts: Sequence[tuple[str, Mapping[str, int]]] = ()) -> TrialData:
    """Tokenize every prompt once and index each split's pairs into the table.

    Args:
        tokenizer: a fast Hugging Face tokenizer.
        splits: split name -> rows with the columns of `causal_models.to_dataset`.
        variables: the hypothesis's variables; a row's `variables` must be among them.
        answers: every answer string of the template (restricted-vocabulary IIA ranks these).
        table_prompts: (text, positions) to put in the table first, in this order: a sweep
            passes every prompt of every trial so that all trials share one table (and one
            hidden-state cache per layer).
    """
    texts: dict[str, int] = {}
    positions: list[Mapping[str, int]] = []

    def row_of(text: str, position: Mapping[str, int]) -> int:
        if text not in texts:
            texts[text] = len(texts)
            positions.append({k: v for k, v in position.items() if v is not None})
        return texts[text]

    for text, position in table_prompts:
        row_of(text, position)
    slot = {name: i for i, name in enumerate(variables)}
    answer_ids = answer_token_ids(tokenizer, answers)
    token_of = dict(zip(answers, answer_ids))
    raw: dict[str, list[tuple[int, list[int], int, int]]] = {}
    for split, rows in splits.items():
        raw[split] = []
        for row in rows:
            sources = [MISSING] * len(variables)
            for name, text, position in zip(row["variables"], row["source_prompts"], row["source_positions"]):
                if name not in slot:
                    raise ValueError(f"pair intervenes on {name!r}, which is not among the hypothesis's "
                                     f"variables {list(variables)}")
                sources[slot[name]] = row_of(text, position)
            base = row_of(row["base_prompt"], row["base_positions"])
            raw[split].append((base, sources, _token(token_of, row["counterfactual_label"]),
                               _token(token_of, row["base_label"])))
    names = sorted({name for p in positions for name in p})
    table = build_prompt_table(tokenizer, list(texts), positions, names)
    tensors = {split: _to_tensors(items, len(variables)) for split, items in raw.items()}
    return TrialData(table, tensors, list(variables), list(answers), torch.tensor(answer_ids))


def _token(token_of: Mapping[str, int], answer: str) -> int:
    if answer not in token_of:
        raise ValueError(f"label {answer!r} must be one of the template's answers {sorted(token_of)}")
    return token_of[answer]


def _to_tensors(items: list[tuple[int, list[int], int, int]], n_variables: int) -> PairTensors:
    if not items:
        empty = torch.zeros(0, dtype=torch.long)
        return PairTensors(empty, torch.zeros(0, n_variables, dtype=torch.long),
                           torch.zeros(0, n_variables, dtype=torch.bool), empty, empty)
    base, sources, labels, base_labels = zip(*items)
    source_rows = torch.tensor(sources, dtype=torch.long)
    return PairTensors(torch.tensor(base), source_rows, source_rows != MISSING,
                       torch.tensor(labels), torch.tensor(base_labels))
