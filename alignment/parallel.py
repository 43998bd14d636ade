"""Data parallelism as a trial sees it: which rows of a batch this worker computes, and sums.

A trial on one device needs none of this. When the frozen model is sharded across workers
(cluster/sharded.py: DeepSpeed ZeRO-3 under Ray Train), every worker runs the same steps on
its own part of each batch, in lockstep (a sharded layer's forward pass is a collective):

- `part(n)`: the rows of a batch of n this worker computes, and the weight of each row's
  loss. Weights are 1/n, so the workers' weighted sums add up to the full batch's mean
  cross-entropy. A worker with no rows (n < workers) gets one row of weight 0: it still
  runs the forward pass its peers wait on, and adds nothing.
- `sum(value)`: a tensor summed over workers, the same result on every worker.
- `reduce_gradients(parameters)`: gradients summed over workers, in place, before the
  optimizer step, so the replicated intervention stays identical on every worker.

`alignment.train`, `alignment.metrics` and `alignment.trial` take an optional
`DataParallel`; `cluster.parallel.TorchDataParallel` implements it with torch.distributed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from torch import Tensor


class DataParallel(Protocol):
    """How a trial splits its batches across data-parallel workers (see the module docstring)."""

    world_size: int

    def part(self, n: int) -> tuple[Tensor, Tensor]:
        """(rows of a batch of `n` this worker computes, (k,) the weight of each row's loss)."""
        ...

    def sum(self, value: Tensor) -> Tensor:
        """`value` summed over workers; every worker gets the result."""
        ...

    def reduce_gradients(self, parameters: Iterable[Tensor]) -> None:
        """Sum the `.grad` of `parameters` over workers, in place."""
        ...
