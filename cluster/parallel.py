"""Data parallelism over torch.distributed: the `alignment.parallel.DataParallel` of a sharded trial.

Every batch of counterfactual pairs is cut into contiguous parts, one per worker, whose
sizes differ by at most one row (32 rows on 2 workers: 16 + 16; 33: 17 + 16). Each row's
loss is weighted 1/n, so the workers' shares add up to the mean cross-entropy of the
whole batch, and the summed gradients are those of one worker on the whole batch: a
sharded trial takes the same steps as an unsharded one. A worker left without rows (a
batch smaller than the number of workers) computes row 0 with weight 0, because every
forward pass through a ZeRO-3 model is a collective its peers wait on.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor


def part_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of worker `rank`'s contiguous part of n rows; sizes differ by at most one."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank} (world size {world_size})")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def part_rows(n: int, rank: int, world_size: int) -> tuple[Tensor, Tensor]:
    """(rows, weights) of worker `rank` in a batch of n: weights 1/n; row 0 with weight 0 if it has none."""
    start, stop = part_bounds(n, rank, world_size)
    if stop > start:
        return torch.arange(start, stop), torch.full((stop - start,), 1.0 / n)
    return torch.zeros(1, dtype=torch.long), torch.zeros(1)


class TorchDataParallel:
    """`DataParallel` over the default torch.distributed process group (gloo on CPU, nccl on GPU).

    Collectives run on `device` (the worker's GPU under nccl, the CPU under gloo); tensors come
    back on the device they came from.
    """

    def __init__(self, device: torch.device | str | None = None):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("TorchDataParallel needs torch.distributed initialised (Ray Train or torchrun "
                               "does it)")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if device is None:
            nccl = dist.get_backend() == "nccl"
            device = torch.device("cuda", torch.cuda.current_device()) if nccl else "cpu"
        self.device = torch.device(device)

    def part(self, n: int) -> tuple[Tensor, Tensor]:
        return part_rows(n, self.rank, self.world_size)

    def sum(self, value: Tensor) -> Tensor:
        total = value.detach().to(self.device, copy=True)
        dist.all_reduce(total)
        return total.to(value.device)

    def reduce_gradients(self, parameters: Iterable[Tensor]) -> None:
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        # one collective per step
        flat = torch.cat([g.reshape(-1).to(self.device, torch.float32) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
            offset += grad.numel()
