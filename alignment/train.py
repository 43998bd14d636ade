"""Training one intervention: the loop, its schedules, and its resumable state.

The model is frozen; only the intervention's parameters train. Each optimizer step reads
`gradient_accumulation` batches and backpropagates every one of them (the 2023 code called
backward on one batch in k and dropped the rest). Adam has two groups, the rotation (lr) and
the boundaries (boundary_lr); the learning rate warms up linearly for `warmup` of the steps
then decays linearly to 0; the temperature falls linearly in fp32 from `temperature_start`
to `temperature_end`. The loss is cross-entropy on the counterfactual answer token plus
`width_penalty` times the clamped boundary widths (plus the optional axis penalty).

Dev IIA is measured every `eval_every` steps with the hard mask; the best state is kept.
With a `DataParallel` (a sharded trial), each worker computes its part of every batch,
backpropagates its share of the loss, and the gradients are summed over workers before the
step: the same update as one worker on the whole batch (alignment/parallel.py).
Batch order depends only on (seed, epoch), so a trial resumed from a `TrainState` at step s
continues exactly as if it had not stopped.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from alignment.config import InterventionConfig, TrainConfig
from alignment.interchange import Interchange, PositionedPairs
from alignment.metrics import interchange_accuracy
from alignment.parallel import DataParallel

log = logging.getLogger(__name__)
Report = Callable[[dict[str, Any], Callable[[], "TrainState"]], None]


class TrialDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainState:
    """Everything needed to continue training after `step` optimizer steps."""

    step: int
    intervention: dict[str, Tensor]
    optimizer: dict[str, Any]
    best_intervention: dict[str, Tensor] | None = None
    best_dev_iia: float = -1.0
    best_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainResult:
    steps: int
    best_dev_iia: float
    best_step: int
    best_intervention: dict[str, Tensor]
    history: list[dict[str, Any]]


def total_steps(n_train: int, config: TrainConfig) -> int:
    """Optimizer steps for `epochs` passes over `n_train` pairs (or `max_steps`)."""
    if config.max_steps is not None:
        return config.max_steps
    batches = math.ceil(n_train / config.batch_size) * config.epochs
    return max(1, math.ceil(batches / config.gradient_accumulation))


def learning_rate_factor(step: int, total: int, warmup: float) -> float:
    """Linear warm-up over the first `warmup` share of steps, then linear decay to 0."""
    warm = int(warmup * total)
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


def temperature_at(step: int, total: int, config: InterventionConfig) -> float:
    """The fp32 linear schedule from temperature_start (step 0) to temperature_end (last step)."""
    schedule = torch.linspace(config.temperature_start, config.temperature_end, max(total, 2), dtype=torch.float32)
    return float(schedule[min(step, len(schedule) - 1)])


# The temperature (in coordinates of the rotated basis) below which the soft mask is within about 0.1 of the
# hard one at every coordinate: sigmoid(0.5 / 0.23) = 0.9 at the coordinate nearest the boundary.
NEAR_HARD_TEMPERATURE = 0.23


def mask_hard_step(total: int, config: InterventionConfig) -> int:
    """The first optimizer step at which the boundary mask is near-hard (`total` if it never is).

    Before it, hard-mask IIA measures a mask that training has not yet produced, so early
    stopping (ASHA's rungs, the collapse rule) must not judge a trial before this step.
    """
    for step in range(total):
        if temperature_at(step, total, config) <= NEAR_HARD_TEMPERATURE:
            return step
    return total


def train(interchange: Interchange, train_pairs: PositionedPairs, dev_pairs: PositionedPairs,
          answer_ids: Tensor, intervention_config: InterventionConfig, config: TrainConfig, *,
          record: Callable[[dict[str, Any]], None] = lambda row: None, report: Report | None = None,
          resume: TrainState | None = None, parallel: DataParallel | None = None) -> TrainResult:
    """Train `interchange.intervention` and keep its best state by dev IIA.

    Args:
        record: called with every log and eval row (metrics.jsonl).
        report: called after every evaluation with the metrics and a function returning the
            current `TrainState` (for checkpoints); a scheduler may stop the trial there.
        resume: continue from this state.
        parallel: split every batch across data-parallel workers (a sharded trial).
    """
    intervention = interchange.intervention
    steps = total_steps(len(train_pairs), config)
    optimizer = _optimizer(intervention, config)
    state = resume or TrainState(0, copy.deepcopy(intervention.state_dict()), optimizer.state_dict())
    if resume is not None:
        intervention.load_state_dict(resume.intervention)
        optimizer.load_state_dict(resume.optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, steps, config.warmup), last_epoch=state.step - 1)
    batches_per_epoch = math.ceil(len(train_pairs) / config.batch_size)
    for step in range(state.step, steps):
        intervention.set_temperature(temperature_at(step, steps, intervention_config))
        losses = _optimizer_step(interchange, train_pairs, step, batches_per_epoch, config, intervention_config,
                                 optimizer, parallel)
        scheduler.step()
        state.step = step + 1
        if state.step % config.log_every == 0 or state.step == steps:
            row = {"step": state.step, **losses, "lr": scheduler.get_last_lr()[0],
                   "temperature": float(intervention.mask.temperature), **_widths(interchange)}
            record(row)
        if state.step % config.eval_every == 0 or state.step == steps:
            _evaluate(interchange, dev_pairs, answer_ids, config, state, steps, optimizer, record, report, parallel)
    best = state.best_intervention or copy.deepcopy(intervention.state_dict())
    return TrainResult(state.step, state.best_dev_iia, state.best_step, best, state.history)


def _optimizer(intervention: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = [{"params": intervention.rotation_parameters(), "lr": config.lr},  # type: ignore[operator]
              {"params": intervention.boundary_parameters(), "lr": config.boundary_lr}]  # type: ignore[operator]
    groups = [g for g in groups if g["params"]]
    if not groups:  # nothing to train (full swap): a dummy keeps the loop uniform
        groups = [{"params": [torch.nn.Parameter(torch.zeros(()))], "lr": 0.0}]
    return torch.optim.Adam(groups)


def _optimizer_step(interchange: Interchange, train_pairs: PositionedPairs, step: int, batches_per_epoch: int,
                    config: TrainConfig, intervention_config: InterventionConfig,
                    optimizer: torch.optim.Optimizer,
                    parallel: DataParallel | None = None) -> dict[str, float]:
    intervention = interchange.intervention
    workers = parallel.world_size if parallel is not None else 1
    optimizer.zero_grad(set_to_none=True)
    totals = {"loss": 0.0, "ce": 0.0, "penalty": 0.0}
    micro = [_batch(train_pairs, step * config.gradient_accumulation + i, batches_per_epoch, config)
             for i in range(config.gradient_accumulation)]
    with intervention.materialized():
        for batch in micro:
            share, ce = _cross_entropy(interchange, batch, parallel)
            penalty = intervention_config.width_penalty * intervention.penalty()
            if intervention_config.axis_penalty:
                penalty = penalty + intervention_config.axis_penalty * intervention.axis_penalty()
            loss = ce + penalty
            if not torch.isfinite(loss):
                raise TrialDiverged(f"loss became {float(loss)} at step {step + 1} (cross-entropy {float(ce)})")
            # every worker adds its share of the cross-entropy and 1/workers of the penalty
            mine = loss if parallel is None else share + penalty / workers
            if mine.requires_grad:
                (mine / len(micro)).backward()
            for key, value in (("loss", loss), ("ce", ce), ("penalty", penalty)):
                totals[key] += float(value.detach()) / len(micro)
    if parallel is not None:
        parallel.reduce_gradients(intervention.parameters())
    optimizer.step()
    intervention.project()
    return totals


def _cross_entropy(interchange: Interchange, batch: PositionedPairs,
                   parallel: DataParallel | None) -> tuple[Tensor, Tensor]:
    """(this worker's share of the batch's mean cross-entropy, with gradient; the batch's mean cross-entropy).

    On one worker both are the same tensor; across workers the second is the sum of the
    first over workers, the same number on each.
    """
    labels = batch.pairs.labels.to(interchange.frozen.device)
    if parallel is None:
        ce = F.cross_entropy(interchange.logits(batch), labels)
        return ce, ce
    rows, weights = parallel.part(len(batch))
    logits = interchange.logits(batch.select(rows))
    per_row = F.cross_entropy(logits, labels[rows.to(labels.device)], reduction="none")
    share = (per_row * weights.to(per_row.device)).sum()
    return share, parallel.sum(share.detach())


def _batch(pairs: PositionedPairs, index: int, batches_per_epoch: int, config: TrainConfig) -> PositionedPairs:
    """Batch number `index` of the run: epoch `index // batches_per_epoch` in its own seeded order."""
    epoch, position = divmod(index, batches_per_epoch)
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
    return pairs.select(order[position * config.batch_size:(position + 1) * config.batch_size])


def _widths(interchange: Interchange) -> dict[str, Any]:
    sizes = interchange.intervention.mask.sizes()
    return {"widths": sizes, "min_width": min(sizes)}


def _evaluate(interchange: Interchange, dev_pairs: PositionedPairs, answer_ids: Tensor, config: TrainConfig,
              state: TrainState, steps: int, optimizer: torch.optim.Optimizer,
              record: Callable[[dict[str, Any]], None], report: Report | None,
              parallel: DataParallel | None = None) -> None:
    accuracy = interchange_accuracy(interchange, dev_pairs, answer_ids, config.eval_batch_size, parallel)
    intervention = interchange.intervention
    if accuracy.answers > state.best_dev_iia:
        state.best_dev_iia, state.best_step = accuracy.answers, state.step
        state.best_intervention = copy.deepcopy(intervention.state_dict())
    row = {"step": state.step, "dev_iia": accuracy.answers, "dev_iia_full_vocab": accuracy.full_vocab,
           "best_dev_iia": state.best_dev_iia, "temperature": float(intervention.mask.temperature),
           "final": state.step == steps, **_widths(interchange)}
    state.history.append(row)
    record(row)
    if report is not None:
        def snapshot() -> TrainState:
            state.intervention = copy.deepcopy(intervention.state_dict())
            state.optimizer = copy.deepcopy(optimizer.state_dict())
            return state
        report(row, snapshot)
