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
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Mode = Literal["tutorial", "last"]


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

    def __init__(self, model: nn.Module, layer: int, intervention: nn.Module, mode: Mode, position: int,
                 total_steps: int, lr: float = 1e-3, boundary_lr: float = 1e-2, warmup: float = 0.1):
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
        self.mode, self.position, self.vocab = mode, position, model.config.vocab_size

    def logits(self, base_ids: Tensor, source_ids: Tensor) -> Tensor:
        """(B, vocab) the intervened model's last-position logits, without gradient."""
        with torch.no_grad():
            _, counterfactual = self.model({"input_ids": base_ids}, [{"input_ids": source_ids}],
                                           {"sources->base": self.position})
        return counterfactual.logits[:, -1].float()

    def step(self, index: int, base_ids: Tensor, source_ids: Tensor, labels: Tensor) -> float:
        """One optimizer step on one batch; returns the loss (cross-entropy + boundary sum)."""
        last = torch.tensor([base_ids.shape[1] - 1], device=base_ids.device)
        extra = {"logits_to_keep": last} if self.mode == "last" else {}
        _, counterfactual = self.model({"input_ids": base_ids, **extra}, [{"input_ids": source_ids, **extra}],
                                       {"sources->base": self.position})
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
