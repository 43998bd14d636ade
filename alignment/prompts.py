"""Prompts as token tensors, and named positions as token indices, for any fast tokenizer.

Every prompt of a trial is tokenized once into a `PromptTable`: left-padded ids, attention
mask and position ids (so a padded prompt sees the same positions as an unpadded one), and
the token index of each named position. A named position is a character offset from the
template (`causal_models/templates.py`); the token covering that character is found through
the tokenizer's offset mapping, or the last token before it when no token covers it
(whitespace a word-level tokenizer drops). Integer positions ("5", "-1") index the prompt's
own tokens, counted from its first real token. A group "a+b" stands for several tokens at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

import torch
from torch import Tensor

from causal_models.errors import UserError
from causal_models.hypotheses import position_members

MISSING = -1


class PositionError(UserError, ValueError):
    """A position that does not exist in some prompt."""


class TokenizerError(UserError, ValueError):
    """A tokenizer that cannot serve a task: no offsets, or answers it cannot tell apart by their first token."""


@dataclass
class PromptTable:
    """Unique prompts, tokenized and left-padded.

    Attributes:
        texts: (U,) the prompt strings.
        input_ids, attention_mask, position_ids: (U, T) tensors, left-padded.
        lengths: (U,) real tokens per prompt.
        names: the named positions, in column order of `named`.
        named: (U, P) token index (in padded coordinates) of each named position, -1 if the
            prompt has no such position.
    """

    texts: list[str]
    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    lengths: Tensor
    names: list[str]
    named: Tensor

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    def token_indices(self, position: str, rows: Tensor) -> Tensor:
        """(N, G) token index of each of the G members of `position` (a position or a group "a+b")."""
        members = position_members(position)
        indices = torch.stack([self.token_index(member, rows) for member in members], dim=1)
        if len(members) > 1:
            repeated = (indices.sort(dim=1).values.diff(dim=1) == 0).any(dim=1).nonzero()
            if len(repeated):
                row = int(rows[repeated[0, 0]])
                raise PositionError(f"the positions of group {position!r} must be different tokens, but in prompt "
                                    f"{row} ({self.texts[row]!r}) two of them are token "
                                    f"{indices[repeated[0, 0]].tolist()}")
        return indices

    def token_index(self, position: str, rows: Tensor) -> Tensor:
        """(N,) token index of `position` (a name or an integer string) in prompts `rows`."""
        if position in self.names:
            index = self.named[rows, self.names.index(position)]
            bad = (index == MISSING).nonzero()
            if len(bad):
                row = int(rows[bad[0, 0]])
                raise PositionError(f"position {position!r} must exist in every prompt, but prompt {row} "
                                    f"({self.texts[row]!r}) has none; positions: {self.names}")
            return index
        try:
            offset = int(position)
        except ValueError:
            raise PositionError(f"position must be one of {self.names} or an integer, got {position!r}") from None
        lengths = self.lengths[rows]
        bad = ((offset >= lengths) | (offset < -lengths)).nonzero()
        if len(bad):
            row = int(rows[bad[0, 0]])
            raise PositionError(f"position {offset} must be within the {int(self.lengths[row])} tokens of "
                                f"prompt {row} ({self.texts[row]!r})")
        if offset >= 0:
            return self.seq_len - lengths + offset
        return torch.full_like(lengths, self.seq_len + offset)


def build_prompt_table(tokenizer: object, texts: Sequence[str], positions: Sequence[Mapping[str, int]],
                       names: Sequence[str]) -> PromptTable:
    """Tokenize `texts` (with special tokens) and locate each named position's character offset.

    The last table built in this process is kept: the trials of a sweep that a worker runs one
    after another all build the sweep's one table (`TrialInputs.table_prompts`), and tokenizing
    it again was the largest fixed cost of a trial on a small model (benchmarks/HISTORY.md). A
    table is never modified after it is built, so the trials share it.
    """
    key = (list(texts), [dict(p) for p in positions], list(names))
    if _LAST_TABLE and _LAST_TABLE[0] is tokenizer and _LAST_TABLE[1] == key:
        return _LAST_TABLE[2]
    table = _tokenize(tokenizer, texts, positions, names)
    _LAST_TABLE[:] = [tokenizer, key, table]
    return table


_LAST_TABLE: list = []  # [tokenizer, (texts, positions, names), PromptTable] of the last build_prompt_table


def _tokenize(tokenizer: object, texts: Sequence[str], positions: Sequence[Mapping[str, int]],
              names: Sequence[str]) -> PromptTable:
    """The table, built with whole-table tensor operations: a Python loop over its rows cost a sweep's driver 1-2 s
    on the 6640 prompts of the price-tagging grid."""
    if not getattr(tokenizer, "is_fast", False):
        raise TokenizerError(f"the model's tokenizer must be a fast one (with offset mapping), got "
                             f"{type(tokenizer).__name__}. Save a tokenizer.json with the model")
    encoded = tokenizer(list(texts), return_offsets_mapping=True, add_special_tokens=True)  # type: ignore[operator]
    lengths = torch.tensor([len(ids) for ids in encoded["input_ids"]], dtype=torch.long)
    seq_len = int(lengths.max()) if len(texts) else 0
    pad = seq_len - lengths  # left padding of each row
    attention_mask = (torch.arange(seq_len) >= pad[:, None]).long()
    real = attention_mask.bool()  # row-major, so the real tokens fill it in the tokenizer's order
    input_ids = torch.full((len(texts), seq_len), pad_token_id(tokenizer), dtype=torch.long)
    input_ids[real] = torch.tensor(list(chain.from_iterable(encoded["input_ids"])), dtype=torch.long)
    offsets = torch.zeros((len(texts), seq_len, 2), dtype=torch.long)  # padding: (0, 0), as a special token
    offsets[real] = torch.tensor(list(chain.from_iterable(encoded["offset_mapping"])),
                                 dtype=torch.long).reshape(-1, 2)
    named = torch.full((len(texts), len(names)), MISSING, dtype=torch.long)
    for column, name in enumerate(names):
        chars = torch.tensor([row.get(name, MISSING) for row in positions], dtype=torch.long)
        has = (chars != MISSING).nonzero().squeeze(1)
        if len(has):
            named[has, column] = _covering_tokens(offsets[has], chars[has], name, texts, has)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return PromptTable(list(texts), input_ids, attention_mask, position_ids, lengths, list(names), named)


def _covering_tokens(offsets: Tensor, chars: Tensor, name: str, texts: Sequence[str], rows: Tensor) -> Tensor:
    """(N,) the token of each row that covers its character, else the last one ending before it (a tokenizer that
    drops whitespace covers no space; the token after one belongs to the next word): `offsets` (N, T, 2), `chars`
    (N,), `rows` (N,) their prompts in `texts` (for the error)."""
    start, end = offsets[..., 0], offsets[..., 1]
    char = chars[:, None]
    carries = start != end  # special tokens (and padding) carry no characters
    covering = carries & (start <= char) & (char < end)
    before = carries & (end <= char)
    tokens = torch.arange(offsets.shape[1])
    first_covering = torch.where(covering, tokens, offsets.shape[1]).min(dim=1).values
    last_before = torch.where(before, tokens, MISSING).max(dim=1).values
    found = torch.where(covering.any(dim=1), first_covering, last_before)
    lost = (found == MISSING).nonzero()
    if len(lost):
        row = int(lost[0, 0])
        raise PositionError(f"position {name!r} (character {int(chars[row])}) is not covered by any token of "
                            f"{texts[int(rows[row])]!r}")
    return found


def pad_token_id(tokenizer: object) -> int:
    for attribute in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attribute, None)
        if isinstance(value, int):
            return value
    return 0


def answer_token_ids(tokenizer: object, answers: Sequence[str]) -> list[int]:
    """The first token of each answer string; the answers must start with different tokens."""
    ids = []
    for answer in answers:
        tokens = tokenizer(answer, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        if not tokens:
            raise TokenizerError(f"answer {answer!r} must tokenize to at least one token")
        ids.append(tokens[0])
    if len(set(ids)) != len(ids):
        raise TokenizerError(f"answers {list(answers)} must start with different tokens, got token ids {ids}: this "
                             f"tokenizer does not know the task's answers (is the model trained on another task?)")
    return ids
