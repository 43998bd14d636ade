"""An interchange intervention on batches of counterfactual pairs.

For each pair: take the site's hidden state at the source position of each intervened
variable's source prompt, hand them with the base's hidden state at the base position to the
intervention, write its output back into the base's hidden states, and read the logits at the
answer position. Positions are resolved once per split, not per step.

A position may be a group of G tokens ("amount_first_digit+last"): a variable spread over
several tokens. The same intervention (one rotation, one boundary per variable) then acts at
each of the G tokens in the same forward pass, token g of the base taking its source from
token g of the group in the source prompt, and nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from alignment.batches import PairTensors
from alignment.frozen import FrozenSite
from alignment.interventions import SubspaceSwap
from causal_models.hypotheses import check_position


@dataclass
class PositionedPairs:
    """A split's pairs with the token indices of the site in every base and source prompt."""

    pairs: PairTensors
    base_positions: Tensor     # (N, G), G tokens of the position (1 unless it is a group)
    source_positions: Tensor   # (N, V, G), 0 where inactive

    def __len__(self) -> int:
        return len(self.pairs)

    def select(self, index: Tensor) -> PositionedPairs:
        return PositionedPairs(self.pairs.select(index), self.base_positions[index], self.source_positions[index])

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> list[PositionedPairs]:
        order = torch.randperm(len(self), generator=generator) if generator is not None else torch.arange(len(self))
        return [self.select(order[start:start + batch_size]) for start in range(0, len(self), batch_size)]


class Interchange:
    """`intervention` applied at `frozen.site`, base position `position`, source position `source_position`.

    Either position may be a group "a+b" (both of the same size).
    """

    def __init__(self, frozen: FrozenSite, intervention: SubspaceSwap, position: str,
                 source_position: str | None = None):
        check_position(position, source_position)
        self.frozen, self.intervention = frozen, intervention
        self.position, self.source_position = position, source_position or position

    def locate(self, pairs: PairTensors) -> PositionedPairs:
        """Resolve the base and source token positions of every pair (errors name the prompt)."""
        table = self.frozen.table
        base = table.token_indices(self.position, pairs.base_rows)                              # (N, G)
        source = torch.zeros(*pairs.source_rows.shape, base.shape[1], dtype=torch.long)         # (N, V, G)
        if pairs.active.any():
            source[pairs.active] = table.token_indices(self.source_position, pairs.source_rows[pairs.active])
        return PositionedPairs(pairs, base, source)

    def logits(self, batch: PositionedPairs, plain: bool = False) -> Tensor:
        """(B, vocab) answer-position logits of the bases after the interchange.

        `plain` runs the reference path (full forward passes with hooks) instead of the fast one.
        """
        pairs = batch.pairs
        sources = self._sources(batch, plain)                                 # (B, G, V, hidden)
        device = sources.device
        n, tokens = batch.base_positions.shape
        rows = torch.arange(n, device=device)[:, None].expand(n, tokens)      # (B, G)
        active = pairs.active.to(device).repeat_interleave(tokens, dim=0)     # (B * G, V)
        flat_sources = sources.flatten(0, 1)                                  # (B * G, V, hidden)

        def edit(hidden: Tensor, positions: Tensor) -> Tensor:
            # positions: (B, G) the base positions in `hidden`'s token axis (shifted when only a suffix runs)
            positions = positions.to(device)
            base = hidden[rows, positions].flatten(0, 1)                      # (B * G, hidden)
            new = self.intervention(base, flat_sources, active).view(n, tokens, -1)
            return hidden.index_put((rows, positions), new.to(hidden.dtype))

        logits_of = self.frozen.plain_logits if plain else self.frozen.logits
        return logits_of(pairs.base_rows, edit, batch.base_positions)

    def _sources(self, batch: PositionedPairs, plain: bool) -> Tensor:
        """(B, G, V, hidden) the site's output in each variable's source prompt at each token of the group."""
        pairs, active = batch.pairs, batch.pairs.active
        tokens = batch.base_positions.shape[1]
        vectors_of = self.frozen.plain_vectors if plain else self.frozen.vectors
        positions = batch.source_positions[active]                                           # (A, G)
        vectors = vectors_of(pairs.source_rows[active].repeat_interleave(tokens), positions.flatten())
        width = vectors.shape[-1]
        sources = torch.zeros(len(pairs), active.shape[1], tokens, width, dtype=vectors.dtype, device=vectors.device)
        sources[active.to(vectors.device)] = vectors.view(-1, tokens, width)
        return sources.transpose(1, 2)
