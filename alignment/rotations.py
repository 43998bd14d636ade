"""Orthonormal bases that DAS learns: a full rotation, or the first k columns of one.

DAS rotates a hidden vector into a learned basis and swaps some coordinates there. The basis
is an orthogonal matrix R (hidden x hidden) or, when only k coordinates are ever swapped,
a matrix W (hidden x k) with orthonormal columns, which is all the swap needs.

Parametrization: R = R0 @ Q(A), where R0 is a fixed random orthogonal matrix (the init) and
Q maps a skew-symmetric A (stored as a trainable square matrix, zero at init) to an
orthogonal matrix. The default map is Cayley, Q = (I - A/2)^-1 (I + A/2): one linear solve
forward and one backward. torch's default `matrix_exp` map costs a 2n x 2n `matrix_exp`
in the backward pass (measured here: 0.55 s vs 0.043 s at n = 768, 2 threads) and is kept
only to reproduce the 2023 code. The rotation always lives in fp32, whatever the model's dtype.

`materialized()` computes R once per optimizer step: inside it, every forward pass reuses one
detached copy that collects gradients, which are pushed through the parametrization once on
exit, however many micro-batches ran (pyvene rebuilds R three times per call).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

RotationMap = Literal["cayley", "matrix_exp"]


def random_orthogonal(n: int, k: int | None = None, seed: int = 0) -> Tensor:
    """An (n, k) matrix with orthonormal columns, Haar-random for a given seed (k defaults to n)."""
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(n, k or n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return (q * torch.sign(torch.diagonal(r))).float()


class Basis(nn.Module):
    """An (hidden, width) matrix with orthonormal columns, computed once per step in `materialized()`."""

    hidden_size: int
    width: int

    def __init__(self) -> None:
        super().__init__()
        self._current: Tensor | None = None

    def compute(self) -> Tensor:
        raise NotImplementedError

    def matrix(self) -> Tensor:
        """(hidden, width): the materialized matrix inside `materialized()`, else freshly computed."""
        return self._current if self._current is not None else self.compute()

    @contextmanager
    def materialized(self) -> Iterator[None]:
        """Compute the basis once for the block; on a clean exit, backpropagate its accumulated gradient."""
        full = self.compute()
        leaf = full.detach().requires_grad_(full.requires_grad)
        self._current = leaf
        try:
            yield
        finally:
            self._current = None
        if leaf.grad is not None:
            full.backward(leaf.grad)


class Rotation(Basis):
    """A full orthogonal rotation R = R0 @ Q(A), Q the Cayley map (or matrix_exp)."""

    init: Tensor

    def __init__(self, hidden_size: int, seed: int = 0, rotation_map: RotationMap = "cayley",
                 trainable: bool = True):
        super().__init__()
        if rotation_map not in ("cayley", "matrix_exp"):
            raise ValueError(f"rotation_map must be 'cayley' or 'matrix_exp', got {rotation_map!r}")
        self.hidden_size = self.width = hidden_size
        self.rotation_map = rotation_map
        self.register_buffer("init", random_orthogonal(hidden_size, seed=seed))
        self.generator = nn.Parameter(torch.zeros(hidden_size, hidden_size), requires_grad=trainable)

    def compute(self) -> Tensor:
        if not self.generator.requires_grad and not self.generator.any():
            return self.init
        upper = self.generator.triu(1)
        skew = upper - upper.T
        if self.rotation_map == "matrix_exp":
            return self.init @ torch.linalg.matrix_exp(skew)
        eye = torch.eye(self.hidden_size, device=skew.device, dtype=skew.dtype)
        return self.init @ torch.linalg.solve(eye - skew / 2, eye + skew / 2)

    def set_matrix(self, matrix: Tensor) -> None:
        """Start from `matrix` (an orthogonal (hidden, hidden) matrix) with a zero generator."""
        with torch.no_grad():
            self.init.copy_(matrix.float())
            self.generator.zero_()


class LowRankRotation(Basis):
    """(hidden, k) orthonormal columns, W = qr(X).Q with signs fixed so the map is smooth."""

    def __init__(self, hidden_size: int, rank: int, seed: int = 0):
        super().__init__()
        if not 0 < rank <= hidden_size:
            raise ValueError(f"rank must be in 1..{hidden_size} (the hidden size), got {rank}")
        self.hidden_size, self.width = hidden_size, rank
        self.weight = nn.Parameter(random_orthogonal(hidden_size, rank, seed=seed))

    def compute(self) -> Tensor:
        q, r = torch.linalg.qr(self.weight)
        return q * torch.sign(torch.diagonal(r))

    def set_matrix(self, matrix: Tensor) -> None:
        with torch.no_grad():
            self.weight.copy_(matrix[:, : self.width].float())


class StandardBasis(Basis):
    """The identity: swap neurons as they are (activation patching, neuron masks)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.hidden_size = self.width = hidden_size

    def compute(self) -> Tensor:
        raise RuntimeError("the standard basis is never materialized; SubspaceSwap skips the matmul")
