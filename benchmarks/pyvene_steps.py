"""One pyvene 0.1.8 training step, as its Boundless DAS tutorial writes it, and in its best case.

The tutorial (`tutorials/advanced_tutorials/Boundless_DAS.ipynb`) calls
`intervenable(base, [source], {"sources->base": position})`, takes cross-entropy over the full
`(batch, seq, vocab)` logits with every label -100 but the last, adds the boundary sum, steps
Adam (lr 1e-3 for the rotation, 1e-2 for the boundary) and a linear warm-up schedule, zeroes
the intervention's gradients and sets the next temperature from a bf16 50 -> 0.1 schedule.
Mode "last" is the same step with the last position as `logits_to_keep` in the base and
source inputs (pyvene passes them on to the model), so the head runs at the last position
only: the best a user can do without changing pyvene. It is passed as a one-element index
tensor, as align-search does: `logits_to_keep=1` slices a strided view, which costs the head
a slow batched matmul on CPU (alignment/frozen.py). Plain DAS is `RotatedSpaceIntervention`
with a fixed interchange dimension (pyvene's default swaps the whole space and learns nothing).

A `PyveneBatch` holds what one call takes: the base and source model inputs (left-padded
prompts carry their attention mask and position ids, as align-search passes them) and the
unit locations. Those are one int when every prompt of a trial puts the site at the same
token (the tutorial's form; `single_token`) or, per example, `([[[source tokens] per
example]], [[[base tokens] per example]])` for the one intervention. pyvene 0.1.8 scatters an int-located batch with the
first example's location for all (`use_fast`), and keeps that mode for the model's later
calls: a trainer must be given one form only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Mode = Literal["tutorial", "last"]
Locations = int | tuple[list[list[list[int]]], list[list[list[int]]]]


@dataclass
class PyveneBatch:
    """One batch as pyvene takes it: model inputs of the bases and sources, answer labels, unit locations."""

    base: dict[str, Tensor]
    source: dict[str, Tensor]
    labels: Tensor
    locations: Locations

    def to(self, device: torch.device) -> PyveneBatch:
        def moved(inputs: dict[str, Tensor]) -> dict[str, Tensor]:
            return {name: value.to(device) for name, value in inputs.items()}
        return PyveneBatch(moved(self.base), moved(self.source), self.labels.to(device), self.locations)


def single_token(base_positions: Tensor, source_positions: Tensor) -> int | None:
    """The one token index of every (N, G) base and source site, or None where they differ or G > 1."""
    first = base_positions.flatten()[0]
    if base_positions.shape[1] == 1 and bool((base_positions == first).all() & (source_positions == first).all()):
        return int(first)
    return None


def unit_locations(base_positions: Tensor, source_positions: Tensor, single: int | None) -> Locations:
    """pyvene's locations of one intervention: `single` when given, else the (B, G) token indices per example."""
    if single is not None:
        return single
    return [source_positions.tolist()], [base_positions.tolist()]


def table_batch(table: Any, base_rows: Tensor, source_rows: Tensor, labels: Tensor, base_positions: Tensor,
                source_positions: Tensor, single: int | None) -> PyveneBatch:
    """Pairs of rows of a PromptTable with their (B, G) site tokens, as pyvene takes them (see `unit_locations`)."""
    def inputs(rows: Tensor) -> dict[str, Tensor]:
        return {"input_ids": table.input_ids[rows], "attention_mask": table.attention_mask[rows],
                "position_ids": table.position_ids[rows]}
    return PyveneBatch(inputs(base_rows), inputs(source_rows), labels,
                       unit_locations(base_positions, source_positions, single))


def pyvene_intervention(kind: str, hidden: int, das_dim: int, seed: int) -> nn.Module:
    """A fresh pyvene intervention (its rotation initialized from `seed`)."""
    import pyvene as pv

    torch.manual_seed(seed)
    if kind == "boundless":
        return pv.BoundlessRotatedSpaceIntervention(embed_dim=hidden)
    if kind == "das":
        intervention = pv.RotatedSpaceIntervention(embed_dim=hidden)
        intervention.set_interchange_dim(das_dim)
        return intervention
    raise ValueError(f"kind must be 'das' or 'boundless', got {kind!r}")


def rotation_of(intervention: nn.Module) -> Tensor:
    """(hidden, hidden) pyvene's materialized orthogonal rotation, detached."""
    return intervention.rotate_layer.weight.detach().clone()


class PyveneTrainer:
    """Trains a copy of `intervention` at the output of decoder layer `layer` as pyvene's tutorial does."""

    def __init__(self, model: nn.Module, layer: int, intervention: nn.Module, mode: Mode, total_steps: int,
                 lr: float = 1e-3, boundary_lr: float = 1e-2, warmup: float = 0.1):
        import pyvene as pv
        from transformers import get_linear_schedule_with_warmup

        self.intervention = copy.deepcopy(intervention)
        config = pv.IntervenableConfig(representations=[
            {"layer": layer, "component": "block_output", "intervention": self.intervention}])
        self.model = pv.IntervenableModel(config, model)
        self.model.disable_model_gradients()
        self.boundless = isinstance(self.intervention, pv.BoundlessRotatedSpaceIntervention)
        groups: list[dict] = [{"params": self.intervention.rotate_layer.parameters()}]
        if self.boundless:
            groups.append({"params": [self.intervention.intervention_boundaries], "lr": boundary_lr})
        self.optimizer = torch.optim.Adam(groups, lr=lr)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, int(warmup * total_steps),
                                                         total_steps)
        self.temperatures = torch.linspace(50, 0.1, total_steps).to(torch.bfloat16)
        self.mode, self.vocab = mode, model.config.vocab_size

    def logits(self, batch: PyveneBatch) -> Tensor:
        """(B, vocab) the intervened model's last-position logits, without gradient."""
        with torch.no_grad():
            _, counterfactual = self.model(batch.base, [batch.source], {"sources->base": batch.locations})
        return counterfactual.logits[:, -1].float()

    def step(self, index: int, batch: PyveneBatch) -> float:
        """One optimizer step on one batch; returns the loss (cross-entropy + boundary sum)."""
        base_ids, labels = batch.base["input_ids"], batch.labels
        last = torch.tensor([base_ids.shape[1] - 1], device=base_ids.device)
        extra = {"logits_to_keep": last} if self.mode == "last" else {}
        _, counterfactual = self.model({**batch.base, **extra}, [{**batch.source, **extra}],
                                       {"sources->base": batch.locations})
        logits = counterfactual.logits                                      # (B, T or 1, vocab)
        if self.mode == "tutorial":
            full_labels = torch.full(base_ids.shape, -100, dtype=torch.long, device=logits.device)
            full_labels[:, -1] = labels
            loss = F.cross_entropy(logits.reshape(-1, self.vocab), full_labels.reshape(-1))
        else:
            loss = F.cross_entropy(logits[:, -1], labels.to(logits.device))
        if self.boundless:
            loss = loss + self.intervention.intervention_boundaries.sum()
        value = loss.item()
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.model.set_zero_grad()
        if self.boundless:
            self.model.set_temperature(self.temperatures[min(index, len(self.temperatures) - 1)])
        return value
