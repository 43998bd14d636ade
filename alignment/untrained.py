"""Interventions evaluated without training: random rotations of a given width, and the full swap.

A learned subspace claims that *these* k directions of the site carry the variable. The
control that tests the claim swaps k directions nobody chose: a Haar-random rotation with
the hard mask of the learned width (per variable, in its own block), evaluated on the
hypothesis's own test pairs at its own site, over several random draws (mean and sd). It
must not be trained: a random rotation with a learned boundary either collapses to width 0
(IIA at the no-op floor, a vacuous control) or grows to the whole block (a full swap). If
random directions of the same width do as well as the learned ones, the site carries the
variable, but no particular subspace of it does.

The full swap (activation patching) has nothing to learn either; it is evaluated the same
way, once, as a description of what the whole site carries.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import torch

from alignment.config import TrialConfig
from alignment.intervals import bootstrap_interval, encode
from alignment.interventions import Boundary, SubspaceSwap, build_intervention
from alignment.metrics import correct_per_pair
from alignment.persistence import atomic_write_text
from alignment.results import UntrainedResult
from alignment.trial import PreparedTrial, TrialInputs, hypothesis_of, prepare_trial

DRAW_SEED = 10_007  # random rotations of control draws never reuse a hypothesis's initial rotation (seed 0, 1, ...)


def fixed_width_rotation(hidden_size: int, widths: Sequence[int], seed: int) -> SubspaceSwap:
    """A frozen Haar-random rotation whose hard mask swaps the first `widths[v]` coordinates of block v."""
    swap = build_intervention("random_rotation", hidden_size, len(widths), init_width=1.0, seed=seed)
    block = hidden_size // len(widths)
    mask = cast(Boundary, swap.mask)
    mask.set_share(torch.tensor([min(max(w, 0), block) / block for w in widths]))
    swap.requires_grad_(False)
    return swap


def run_untrained(config: TrialConfig, output_dir: str | Path, inputs: TrialInputs | None = None,
                  widths: dict[str, int] | None = None, draws: int = 10) -> UntrainedResult:
    """Evaluate `config`'s intervention on the test split without training; write and return the result.

    Args:
        config: a trial whose intervention kind is "random_rotation" or "full_swap".
        widths: random_rotation: the hard width per variable to swap (the learned widths of the
            hypothesis it controls).
        draws: random_rotation: how many random rotations (mean and sd over them).
    """
    started = time.perf_counter()
    output = Path(output_dir)
    trial = prepare_trial(config, output, inputs or TrialInputs())
    config = trial.config
    if config.intervention.kind == "random_rotation":
        if widths is None:
            raise ValueError("a random-rotation control needs the widths of the hypothesis it controls")
        sizes = [widths[v] for v in config.variables]
        hidden = trial.interchange.intervention.hidden_size
        swaps = [fixed_width_rotation(hidden, sizes, DRAW_SEED * (draw + 1) + config.train.seed)
                 for draw in range(draws)]
    elif config.intervention.kind == "full_swap":
        swaps = [trial.interchange.intervention]
    else:
        raise ValueError(f"an untrained control must be random_rotation or full_swap, got {config.intervention.kind!r}")
    summary = _summary(trial, [_evaluate(trial, swap) for swap in swaps], time.perf_counter() - started)
    atomic_write_text(output / "summary.json", json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def _evaluate(trial: PreparedTrial, swap: SubspaceSwap) -> tuple[list[int], float, list[int]]:
    """(per-pair correctness among answer tokens, full-vocabulary IIA, hard widths) of one intervention."""
    trial.interchange.intervention = swap.to(trial.interchange.frozen.device)
    answers, full = correct_per_pair(trial.interchange, trial.positioned["test"], trial.data.answer_ids,
                                     trial.config.train.eval_batch_size)
    return answers.int().tolist(), int(full.sum()) / len(full), swap.mask.sizes()


def _summary(trial: PreparedTrial, results: list[tuple[list[int], float, list[int]]],
             seconds: float) -> UntrainedResult:
    config = trial.config
    correct = [answers for answers, _, _ in results]
    scores = [sum(answers) / max(1, len(answers)) for answers in correct]
    low, high = bootstrap_interval(correct)
    return UntrainedResult(
        hypothesis=hypothesis_of(config).id, task=config.task, causal_model=config.causal_model or "",
        variables=config.variables, layer=config.layer, site=trial.interchange.frozen.site,
        position=config.position, intervention=config.intervention.kind, seed=config.train.seed,
        trained=False, prealign_accuracy=trial.prealign.answers,
        test_iia=statistics.fmean(scores), test_iia_sd=statistics.stdev(scores) if len(scores) > 1 else 0.0,
        test_iia_draws=tuple(round(s, 4) for s in scores), draws=len(scores),
        test_iia_full_vocab=statistics.fmean(full for _, full, _ in results), n_test=len(correct[0]),
        test_iia_ci_low=low, test_iia_ci_high=high,
        test_correct=encode(correct[0]) if len(correct) == 1 else None,
        boundary_widths=dict(zip(config.variables, results[0][2])),
        hidden_size=trial.interchange.intervention.hidden_size,
        floor_no_op=trial.floors["no_op"], floor_copy_source=trial.floors["copy_source"],
        seconds=round(seconds, 2),
    )
