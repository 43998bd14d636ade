"""An interchange intervention on batches of counterfactual pairs.

For each pair: take the site's hidden state at the source position of each intervened
variable's source prompt, hand them with the base's hidden state at the base position to the
intervention, write its output back into the base's hidden states, and read the logits at the
answer position. Positions are resolved once per split, not per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from alignment.batches import PairTensors
from alignment.frozen import FrozenSite
from alignment.interventions import SubspaceSwap


@dataclass
class PositionedPairs:
    """A split's pairs with the token index of the site in every base and source prompt."""

    pairs: PairTensors
    base_positions: Tensor     # (N,)
    source_positions: Tensor   # (N, V), 0 where inactive

    def __len__(self) -> int:
        return len(self.pairs)

    def select(self, index: Tensor) -> PositionedPairs:
        return PositionedPairs(self.pairs.select(index), self.base_positions[index], self.source_positions[index])

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> list[PositionedPairs]:
        order = torch.randperm(len(self), generator=generator) if generator is not None else torch.arange(len(self))
        return [self.select(order[start:start + batch_size]) for start in range(0, len(self), batch_size)]


class Interchange:
    """`intervention` applied at `frozen.site`, base position `position`, source position `source_position`."""

    def __init__(self, frozen: FrozenSite, intervention: SubspaceSwap, position: str,
                 source_position: str | None = None):
        self.frozen, self.intervention = frozen, intervention
        self.position, self.source_position = position, source_position or position

    def locate(self, pairs: PairTensors) -> PositionedPairs:
        """Resolve the base and source token positions of every pair (errors name the prompt)."""
        table = self.frozen.table
        base = table.token_index(self.position, pairs.base_rows)
        source = torch.zeros_like(pairs.source_rows)
        if pairs.active.any():
            source[pairs.active] = table.token_index(self.source_position, pairs.source_rows[pairs.active])
        return PositionedPairs(pairs, base, source)

    def logits(self, batch: PositionedPairs, plain: bool = False) -> Tensor:
        """(B, vocab) answer-position logits of the bases after the interchange.

        `plain` runs the reference path (full forward passes with hooks) instead of the fast one.
        """
        pairs = batch.pairs
        active = pairs.active
        vectors_of = self.frozen.plain_vectors if plain else self.frozen.vectors
        vectors = vectors_of(pairs.source_rows[active], batch.source_positions[active])
        device = vectors.device
        sources = torch.zeros(len(pairs), active.shape[1], vectors.shape[-1], dtype=vectors.dtype, device=device)
        sources[active.to(device)] = vectors
        rows = torch.arange(len(pairs), device=device)
        base_positions = batch.base_positions.to(device)
        active_device = active.to(device)

        def edit(hidden: Tensor) -> Tensor:
            new = self.intervention(hidden[rows, base_positions], sources, active_device)
            return hidden.index_put((rows, base_positions), new.to(hidden.dtype))

        if plain:
            return self.frozen.plain_logits(pairs.base_rows, edit)
        return self.frozen.logits(pairs.base_rows, edit)
