"""Training one intervention: the loop, its schedules, and its resumable state.

The model is frozen; only the intervention's parameters train. Each optimizer step reads
`gradient_accumulation` batches and backpropagates every one of them (the 2023 code called
backward on one batch in k and dropped the rest). Adam has two groups, the rotation (lr) and
the boundaries (boundary_lr, and a short second-moment memory `boundary_beta2`); the learning
rate warms up linearly for `warmup` of the steps, then falls linearly to `lr_floor` of its peak.
The loss is cross-entropy on the counterfactual answer token plus the width penalty (its weight
rising over `penalty_warmup` of the steps) times the boundary widths as shares of their blocks
(plus the optional axis penalty).

The temperature (`temperature_at`) is the calibration that makes one schedule fit every
hidden size (docs/calibration.md): it starts as a share of each variable's block, so the mask
is equally soft over a 64- or a 4096-wide block, falls geometrically over `anneal_share` of the
steps to `temperature_end` coordinates, where the mask is near-hard at every block size
(`mask_hard_step`), and stays there while the learning rate is still high: the rotation and
the boundary are then trained under the mask that evaluation uses. The 2023 schedule (50 -> 0.1
coordinates, linear over all steps, lr decaying to 0) is `alignment.config.PAPER_2023`.

Dev IIA is measured every `eval_every` steps with the hard mask; the best state is kept, a
near-hard state always beating an earlier soft one (`_better`).
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
from alignment.timing import phase

log = logging.getLogger(__name__)
Report = Callable[[dict[str, Any], Callable[[], "TrainState"]], None]
# Whether the caller (a sweep) may stop the trial at an evaluation, from that evaluation's `report` row.
MayStop = Callable[[dict[str, Any]], bool]


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


def learning_rate_factor(step: int, total: int, warmup: float, floor: float = 0.0) -> float:
    """Linear warm-up over the first `warmup` share of steps, then linear decay to `floor` at the last step."""
    warm = int(warmup * total)
    if step < warm:
        return (step + 1) / warm
    return floor + (1.0 - floor) * max(0.0, (total - step) / max(1, total - warm))


def anneal_steps(total: int, config: InterventionConfig) -> int:
    """Steps over which the temperature falls (it reaches temperature_end at step anneal_steps - 1)."""
    return max(1, math.ceil(config.anneal_share * total))


def temperature_at(step: int, total: int, config: InterventionConfig, block: int = 1) -> float:
    """The mask's temperature at `step`, in coordinates of a variable's block of `block` coordinates (fp32).

    It falls from temperature_start (times `block` for a block-relative start) to temperature_end
    over the first anneal_share of the steps, linearly or geometrically, and stays there.
    """
    start = config.temperature_start * (block if config.temperature_unit == "block" else 1)
    start, end = max(start, config.temperature_end), config.temperature_end
    progress = min(1.0, step / max(1, anneal_steps(total, config) - 1))
    if config.temperature_curve == "linear":
        value = start + (end - start) * progress
    else:
        value = start * (end / start) ** progress
    return float(torch.tensor(value, dtype=torch.float32))


def penalty_weight_at(step: int, total: int, config: InterventionConfig) -> float:
    """The width penalty's weight at `step`: rising linearly over penalty_warmup of the steps, then constant."""
    ramp = config.penalty_warmup * total
    return config.width_penalty * (min(1.0, step / ramp) if ramp > 0 else 1.0)


# The temperature (in coordinates of the rotated basis) below which the soft mask is within about 0.1 of the
# hard one at every coordinate: sigmoid(0.5 / 0.23) = 0.9 at the coordinate nearest the boundary.
NEAR_HARD_TEMPERATURE = 0.23


def mask_hard_step(total: int, config: InterventionConfig) -> int:
    """The first optimizer step from which the boundary mask is near-hard at every block size (`total` if never).

    Before it, hard-mask IIA measures a mask that training has not yet produced, so early
    stopping (ASHA's rungs, the collapse rule) must not judge a trial before this step. A
    block-relative start makes the crossing depend on the block (earlier for small blocks);
    the anneal's end is where every block size is near-hard, so that is the step returned.
    """
    if config.temperature_end > NEAR_HARD_TEMPERATURE:
        return total
    if config.temperature_unit == "block":
        return min(total, anneal_steps(total, config) - 1)
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
        optimizer, lambda step: learning_rate_factor(step, steps, config.warmup, config.lr_floor),
        last_epoch=state.step - 1)
    batches_per_epoch = math.ceil(len(train_pairs) / config.batch_size)
    hard_step = mask_hard_step(steps, intervention_config) if intervention.mask.annealed else 0
    for step in range(state.step, steps):
        intervention.set_temperature(temperature_at(step, steps, intervention_config, intervention.mask.block))
        with phase("step"):
            losses = _optimizer_step(interchange, train_pairs, step, batches_per_epoch, config, intervention_config,
                                     optimizer, parallel, penalty_weight_at(step, steps, intervention_config))
        scheduler.step()
        state.step = step + 1
        if state.step % config.log_every == 0 or state.step == steps:
            row = {"step": state.step, **losses, "lr": scheduler.get_last_lr()[0],
                   "temperature": float(intervention.mask.temperature), **_widths(interchange)}
            record(row)
        if state.step % config.eval_every == 0 or state.step == steps:
            _evaluate(interchange, dev_pairs, answer_ids, config, state, steps, hard_step, optimizer, record, report,
                      parallel)
    best = state.best_intervention or copy.deepcopy(intervention.state_dict())
    return TrainResult(state.step, state.best_dev_iia, state.best_step, best, state.history)


def _optimizer(intervention: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = [{"params": intervention.rotation_parameters(), "lr": config.lr},  # type: ignore[operator]
              {"params": intervention.boundary_parameters(), "lr": config.boundary_lr,  # type: ignore[operator]
               "betas": (0.9, config.boundary_beta2)}]
    groups = [g for g in groups if g["params"]]
    if not groups:  # nothing to train (full swap): a dummy keeps the loop uniform
        groups = [{"params": [torch.nn.Parameter(torch.zeros(()))], "lr": 0.0}]
    return torch.optim.Adam(groups)


def _optimizer_step(interchange: Interchange, train_pairs: PositionedPairs, step: int, batches_per_epoch: int,
                    config: TrainConfig, intervention_config: InterventionConfig,
                    optimizer: torch.optim.Optimizer, parallel: DataParallel | None = None,
                    width_penalty: float | None = None) -> dict[str, float]:
    """One optimizer step; `width_penalty` is this step's penalty weight (default: the config's)."""
    intervention = interchange.intervention
    weight = intervention_config.width_penalty if width_penalty is None else width_penalty
    workers = parallel.world_size if parallel is not None else 1
    optimizer.zero_grad(set_to_none=True)
    totals = {"loss": 0.0, "ce": 0.0, "penalty": 0.0}
    micro = [_batch(train_pairs, step * config.gradient_accumulation + i, batches_per_epoch, config)
             for i in range(config.gradient_accumulation)]
    with intervention.materialized():
        for batch in micro:
            share, ce = _cross_entropy(interchange, batch, parallel)
            penalty = weight * intervention.penalty()
            if intervention_config.axis_penalty:
                penalty = penalty + intervention_config.axis_penalty * intervention.axis_penalty()
            loss = ce + penalty
            if not torch.isfinite(loss):
                raise TrialDiverged(f"loss became {loss.detach().item()} at step {step + 1} "
                                    f"(cross-entropy {ce.detach().item()})")
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
              state: TrainState, steps: int, hard_step: int, optimizer: torch.optim.Optimizer,
              record: Callable[[dict[str, Any]], None], report: Report | None,
              parallel: DataParallel | None = None) -> None:
    """Dev IIA now; keep the state if it is the best so far (`_better`)."""
    with phase("dev_eval"):
        accuracy = interchange_accuracy(interchange, dev_pairs, answer_ids, config.eval_batch_size, parallel)
    intervention = interchange.intervention
    if _better(accuracy.answers, state.step, state, steps, hard_step):
        state.best_dev_iia, state.best_step = accuracy.answers, state.step
        state.best_intervention = copy.deepcopy(intervention.state_dict())
    row = {"step": state.step, "dev_iia": accuracy.answers, "dev_iia_full_vocab": accuracy.full_vocab,
           "best_dev_iia": state.best_dev_iia, "best_step": state.best_step,
           "temperature": float(intervention.mask.temperature),
           "mask_hard": _hard(state.step, steps, hard_step), "final": state.step == steps, **_widths(interchange)}
    state.history.append(row)
    record(row)
    if report is not None:
        def snapshot() -> TrainState:
            state.intervention = copy.deepcopy(intervention.state_dict())
            state.optimizer = copy.deepcopy(optimizer.state_dict())
            return state
        report(row, snapshot)


def _hard(step: int, steps: int, hard_step: int) -> bool:
    """Whether the mask trained up to `step` was near-hard (the final state always counts)."""
    return step >= hard_step or step == steps


def _better(dev_iia: float, step: int, state: TrainState, steps: int, hard_step: int) -> bool:
    """Whether the state at `step` beats the best so far: a near-hard state beats any earlier soft one, then IIA.

    Before the mask is near-hard, the hard mask that evaluation uses is not what training
    optimised, and the boundary is still wide: such a state is kept only until the first
    near-hard one, so the result is the intervention trained under the mask it is judged by.
    """
    best_hard = state.best_step > 0 and _hard(state.best_step, steps, hard_step)
    now_hard = _hard(step, steps, hard_step)
    return (now_hard, dev_iia) > (best_hard, state.best_dev_iia)
