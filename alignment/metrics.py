"""Interchange intervention accuracy (IIA) and the model's own task accuracy.

IIA is the share of counterfactual pairs on which the intervened model answers the
counterfactual label. It is read two ways: among the task's answer tokens only (the model
chooses between "Yes" and "No"; the number a causal claim rests on) and over the full
vocabulary (the 2023 code's only number, which also counts answers outside the task as
wrong). Task accuracy without intervention ("prealign") comes first: IIA cannot exceed it
by much, and an alignment on a model that cannot do the task means nothing.
Evaluation always uses the hard mask. With a `DataParallel` (a sharded trial) each worker
scores its part of every batch and the counts are summed over workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from alignment.interchange import Interchange, PositionedPairs
from alignment.parallel import DataParallel


@dataclass(frozen=True)
class Accuracy:
    """Accuracy among the answer tokens, over the full vocabulary, and the number of examples."""

    answers: float
    full_vocab: float
    n: int


def hits(logits: Tensor, labels: Tensor, answer_ids: Tensor) -> tuple[Tensor, Tensor]:
    """(B,) bool each: right among the answer tokens, right over the full vocabulary, for (B, vocab) logits."""
    answer_ids = answer_ids.to(logits.device)
    labels = labels.to(logits.device)
    restricted = answer_ids[logits[:, answer_ids].argmax(dim=1)]
    return restricted == labels, logits.argmax(dim=1) == labels


def accuracy_of(logits: Tensor, labels: Tensor, answer_ids: Tensor) -> tuple[int, int]:
    """(correct among answer tokens, correct over the full vocabulary) for (B, vocab) logits."""
    right, right_full = hits(logits, labels, answer_ids)
    return int(right.sum()), int(right_full.sum())


def interchange_accuracy(interchange: Interchange, pairs: PositionedPairs, answer_ids: Tensor,
                         batch_size: int, parallel: DataParallel | None = None) -> Accuracy:
    """IIA of `pairs` under the hard mask (each worker scoring its part of every batch under `parallel`)."""
    correct = correct_full = 0
    intervention = interchange.intervention
    with torch.no_grad(), intervention.hard_mode(), intervention.materialized():
        for batch in pairs.batches(batch_size):
            rows, counted = _my_rows(len(batch), parallel)
            if rows is not None:
                batch = batch.select(rows)
            right, right_full = accuracy_of(interchange.logits(batch), batch.pairs.labels, answer_ids)
            if counted:
                correct, correct_full = correct + right, correct_full + right_full
    return _accuracy(*_summed(correct, correct_full, parallel), len(pairs))


def correct_per_pair(interchange: Interchange, pairs: PositionedPairs, answer_ids: Tensor, batch_size: int,
                     parallel: DataParallel | None = None) -> tuple[Tensor, Tensor]:
    """(N,) bool each: whether the intervened model answers each pair's counterfactual label, among the
    answer tokens and over the full vocabulary (hard mask; under `parallel` every worker gets all N)."""
    answers, full = [], []
    intervention = interchange.intervention
    with torch.no_grad(), intervention.hard_mode(), intervention.materialized():
        for batch in pairs.batches(batch_size):
            rows, counted = _my_rows(len(batch), parallel)
            mine = batch if rows is None else batch.select(rows)
            right, right_full = hits(interchange.logits(mine), mine.pairs.labels, answer_ids)
            scores = torch.zeros(2, len(batch), dtype=torch.float64)
            if counted:
                index = torch.arange(len(batch)) if rows is None else rows.cpu()
                scores[0, index], scores[1, index] = right.double().cpu(), right_full.double().cpu()
            if parallel is not None:
                scores = parallel.sum(scores)
            answers.append(scores[0] > 0.5)
            full.append(scores[1] > 0.5)
    return torch.cat(answers), torch.cat(full)


def task_accuracy(interchange: Interchange, rows: Tensor, labels: Tensor, answer_ids: Tensor,
                  batch_size: int, parallel: DataParallel | None = None) -> Accuracy:
    """Accuracy of the un-intervened model on prompts `rows` with answers `labels`."""
    correct = correct_full = 0
    frozen = interchange.frozen
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk_rows, chunk_labels = rows[start:start + batch_size], labels[start:start + batch_size]
            mine, counted = _my_rows(len(chunk_rows), parallel)
            if mine is not None:
                chunk_rows, chunk_labels = chunk_rows[mine], chunk_labels[mine]
            logits = frozen.logits(chunk_rows)
            right, right_full = accuracy_of(logits, chunk_labels, answer_ids)
            if counted:
                correct, correct_full = correct + right, correct_full + right_full
    return _accuracy(*_summed(correct, correct_full, parallel), len(rows))


def _my_rows(n: int, parallel: DataParallel | None) -> tuple[Tensor | None, bool]:
    """(this worker's rows of a batch of n, or None for all of them; whether they count)."""
    if parallel is None:
        return None, True
    rows, weights = parallel.part(n)
    return rows, bool((weights > 0).any())


def _summed(correct: int, correct_full: int, parallel: DataParallel | None) -> tuple[int, int]:
    if parallel is None:
        return correct, correct_full
    total = parallel.sum(torch.tensor([correct, correct_full], dtype=torch.float64))
    return int(total[0]), int(total[1])


def _accuracy(correct: int, correct_full: int, n: int) -> Accuracy:
    if n == 0:
        return Accuracy(float("nan"), float("nan"), 0)
    return Accuracy(correct / n, correct_full / n, n)
