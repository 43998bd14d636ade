"""Interventions: swap the part of a hidden vector that carries a variable, from source into base.

Distributed alignment search (DAS; Geiger, Wu et al. 2023, "Finding Alignments Between
Interpretable Causal Variables and Distributed Neural Representations") looks for a variable
in a *learned* basis: rotate the base and source vectors into it, put the source's
coordinates of the variable's subspace into the base, rotate back. Boundless DAS (Wu et al.
2023, "Interpretability at Scale") also learns how big that subspace is: each variable owns
a block of the rotated coordinates, and a sigmoid "boundary" with a temperature decides how
much of the block is swapped, annealed from soft (half the block) to nearly hard (0.1
coordinate) and used hard at evaluation (alignment/train.py). A penalty on the boundary
widths keeps the subspaces small.

Every intervention here is one computation, for a basis W (hidden x n, orthonormal columns)
and a mask m_v over its n coordinates per variable v:

    out = base + sum_v active_v * (((source_v - base) @ W) * m_v) @ W.T

| kind            | basis W                        | mask per variable                        |
|-----------------|--------------------------------|------------------------------------------|
| boundless       | full rotation (trained)        | learned boundary over its own block      |
| das             | k columns per variable         | the whole block (fixed size k)           |
| low_rank        | k columns in all (trained)     | learned boundary (Boundless, cheaper)    |
| random_rotation | full rotation (frozen, random) | learned boundary (a control)             |
| neuron_mask     | standard basis                 | a learned sigmoid per neuron (localist)  |
| full_swap       | standard basis                 | everything (activation patching)         |

With W orthogonal this equals rotate -> swap -> rotate back, and with W = I it needs no
matmul. The modules hold math only: no hooks, no model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import Tensor, nn

from alignment.rotations import Basis, LowRankRotation, Rotation, RotationMap, StandardBasis
from causal_models.hypotheses import INTERVENTIONS

KINDS = INTERVENTIONS  # defined once, torch-free, in causal_models.hypotheses


class Mask(nn.Module):
    """Per-variable weights over the basis coordinates: (n_variables, width), in [0, 1].

    `block` is each variable's share of the coordinates; a block-relative temperature schedule
    scales with it (alignment.train.temperature_at). `annealed`: whether the weights depend on
    the temperature (so that training starts soft and evaluation is hard).
    """

    temperature: Tensor
    annealed = True

    def __init__(self, n_variables: int, width: int):
        super().__init__()
        self.n_variables, self.width = n_variables, width
        self.block = max(1, width // n_variables)
        self.register_buffer("temperature", torch.tensor(1.0))
        self.hard = False

    def weights(self) -> Tensor:
        raise NotImplementedError

    def penalty(self) -> Tensor:
        """The size penalty (0 where the size is not learned)."""
        return torch.zeros((), device=self.temperature.device)

    def sizes(self) -> list[int]:
        """Coordinates swapped per variable under the hard mask."""
        with torch.no_grad(), self.hard_mode():
            return [int(round(float(v))) for v in self.weights().sum(dim=1)]

    @contextmanager
    def hard_mode(self) -> Iterator[None]:
        previous, self.hard = self.hard, True
        try:
            yield
        finally:
            self.hard = previous


class Everything(Mask):
    """Every coordinate of each variable's own block (fixed-size DAS), or of the whole width when `shared`
    (the full swap, where a pair intervenes on one variable at a time)."""

    annealed = False

    def __init__(self, n_variables: int, width: int, shared: bool = False):
        super().__init__(n_variables, width)
        self.shared = shared

    def weights(self) -> Tensor:
        if self.shared:
            return torch.ones(self.n_variables, self.width, device=self.temperature.device)
        block = self.width // self.n_variables
        eye = torch.eye(self.n_variables, device=self.temperature.device)
        return eye.repeat_interleave(block, dim=1)


class Boundary(Mask):
    """Boundless DAS: variable v swaps the first `width_v * block` coordinates of its own block.

    mask_v(i) = [c > start_v] * sigmoid((start_v + beta_v * block - c) / T), c = i + 1/2, inside
    block v and 0 outside it, with beta_v in [0, 1] the learned boundary (clamped in the forward
    and projected back into [0, 1] after each step by `project`). Only the end of the subspace
    is learned: its start is the block's, so the mask's start is hard and the coordinates at
    the front are swapped fully while T is still large (the rotation moves the variable there).
    With `soft_start` the start is a sigmoid too, as in the 2023 code and pyvene:
    sigmoid((c - start_v) / T) * sigmoid((start_v + beta_v * block - c) / T) over all coordinates,
    which swaps no coordinate by more than about half while T is a sizeable share of the block.
    The penalty is the sum of the clamped widths.
    """

    starts: Tensor
    centers: Tensor

    def __init__(self, n_variables: int, width: int, init_width: float = 0.5, soft_start: bool = False,
                 log_scale: bool = True):
        super().__init__(n_variables, width)
        if not 0.0 < init_width <= 1.0:
            raise ValueError(f"init_width must be in (0, 1], got {init_width}")
        if width // n_variables < 1:
            raise ValueError(f"each of {n_variables} variables needs at least one coordinate of {width}")
        self.soft_start, self.log_scale = soft_start, log_scale
        initial = math.log(init_width) if log_scale else init_width
        self.boundaries = nn.Parameter(torch.full((n_variables,), float(initial)))
        self.register_buffer("starts", torch.arange(n_variables, dtype=torch.float32) * self.block)
        self.register_buffer("centers", torch.arange(width, dtype=torch.float32) + 0.5)

    def share(self) -> Tensor:
        """(n_variables,) each boundary as a share of its block, in [0, 1] (differentiable)."""
        if self.log_scale:
            return self.boundaries.clamp(max=0.0).exp()
        return self.boundaries.clamp(0.0, 1.0)

    def weights(self) -> Tensor:
        starts = self.starts[:, None]
        ends = starts + self.share()[:, None] * self.block
        if self.hard:
            return ((self.centers > starts) & (self.centers < ends)).float()
        falling = torch.sigmoid((ends - self.centers) / self.temperature)
        if self.soft_start:
            return torch.sigmoid((self.centers - starts) / self.temperature) * falling
        inside = (self.centers > starts) & (self.centers < starts + self.block)
        return falling * inside.float()

    def set_share(self, share: float | Tensor) -> None:
        """Set every boundary (or each, from a tensor) to `share` of its block."""
        value = torch.as_tensor(share, dtype=torch.float32).clamp(0.0, 1.0).expand_as(self.boundaries)
        with torch.no_grad():
            self.boundaries.copy_(value.log() if self.log_scale else value)

    def penalty(self) -> Tensor:
        return self.share().sum()

    def project(self) -> None:
        with torch.no_grad():
            if self.log_scale:
                self.boundaries.clamp_(max=0.0)
            else:
                self.boundaries.clamp_(0.0, 1.0)


class NeuronMask(Mask):
    """A learned sigmoid weight per neuron and variable (pyvene's SigmoidMaskIntervention, per variable).

    Starts at 0.5 everywhere; the penalty is the mean mask weight, so unused neurons switch off.
    Hard mode keeps neurons whose weight is at least 0.5.
    """

    def __init__(self, n_variables: int, width: int):
        super().__init__(n_variables, width)
        self.logits = nn.Parameter(torch.zeros(n_variables, width))

    def weights(self) -> Tensor:
        if self.hard:
            return (self.logits >= 0).float()
        return torch.sigmoid(self.logits / self.temperature)

    def penalty(self) -> Tensor:
        return torch.sigmoid(self.logits / self.temperature).sum(dim=1).div(self.width).sum()


class SubspaceSwap(nn.Module):
    """out = base + sum_v active_v * (((source_v - base) @ W) * mask_v) @ W.T, in fp32.

    Example:
        swap = build_intervention("boundless", hidden_size=64, n_variables=2)
        out = swap(base, sources, active)   # (B, 64), (B, 2, 64), (B, 2) -> (B, 64)
    """

    basis: Basis
    mask: Mask

    def __init__(self, kind: str, basis: Basis, mask: Mask):
        super().__init__()
        self.kind = kind
        self.basis = basis
        self.mask = mask

    @property
    def hidden_size(self) -> int:
        return self.basis.hidden_size

    @property
    def n_variables(self) -> int:
        return self.mask.n_variables

    def forward(self, base: Tensor, sources: Tensor, active: Tensor) -> Tensor:
        """base (B, hidden); sources (B, n_variables, hidden); active (B, n_variables) -> (B, hidden)."""
        dtype = base.dtype
        base32, difference = base.float(), sources.float() - base.float()[:, None, :]
        weights = self.mask.weights() * active.to(difference.dtype)[:, :, None]   # (B, V, n)
        if isinstance(self.basis, StandardBasis):
            return (base32 + (difference * weights).sum(dim=1)).to(dtype)
        basis = self.basis.matrix()                                                 # (hidden, n)
        rotated = (difference @ basis) * weights                                    # (B, V, n)
        return (base32 + rotated.sum(dim=1) @ basis.T).to(dtype)

    def penalty(self) -> Tensor:
        return self.mask.penalty()

    def axis_penalty(self) -> Tensor:
        """How far the swapped basis columns are from single neurons: 0 when each is an axis, 1 when flat.

        The L1 norm of a unit column lies in [1, sqrt(hidden)]; the penalty is its normalised
        excess, averaged over the coordinates the mask uses (the localist option: it prefers
        sparse, axis-aligned rotations).
        """
        if isinstance(self.basis, StandardBasis):
            return torch.zeros((), device=self.mask.temperature.device)
        basis = self.basis.matrix()
        used = self.mask.weights().detach().amax(dim=0)
        spread = (basis.abs().sum(dim=0) - 1) / (math.sqrt(self.hidden_size) - 1)
        return (used * spread).sum() / used.sum().clamp(min=1e-6)

    def set_temperature(self, temperature: float) -> None:
        self.mask.temperature.fill_(float(temperature))

    def project(self) -> None:
        """Keep constrained parameters in range after an optimizer step."""
        if isinstance(self.mask, Boundary):
            self.mask.project()

    def materialized(self) -> AbstractContextManager[None]:
        """Compute the basis once for the block (see `Basis.materialized`)."""
        if isinstance(self.basis, StandardBasis):
            return nullcontext()
        return self.basis.materialized()

    def hard_mode(self) -> AbstractContextManager[None]:
        return self.mask.hard_mode()

    def rotation_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.basis.parameters() if p.requires_grad]

    def boundary_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.mask.parameters() if p.requires_grad]


def build_intervention(
    kind: str,
    hidden_size: int,
    n_variables: int = 1,
    *,
    subspace_dim: int | None = None,
    rotation_map: RotationMap = "cayley",
    init_width: float = 0.5,
    soft_start: bool = False,
    log_boundary: bool = True,
    seed: int = 0,
) -> SubspaceSwap:
    """An intervention of `kind` for vectors of `hidden_size`, one block per variable.

    Args:
        subspace_dim: "das": coordinates per variable (default 1); "low_rank": columns in
            all (default min(hidden, 64 * n_variables)); ignored otherwise.
        rotation_map: "cayley" (fast) or "matrix_exp" (the 2023 code's map).
        init_width: initial boundary as a share of each block (boundless, low_rank, random_rotation).
        soft_start: the boundary mask's start is a sigmoid too (the 2023 code), not the block's edge.
        log_boundary: learn the log of each boundary's share (False: the share itself, the 2023 code).
        seed: seeds the random initial rotation.
    """
    if kind not in KINDS:
        raise ValueError(f"intervention must be one of {list(KINDS)}, got {kind!r}")
    if n_variables < 1:
        raise ValueError(f"n_variables must be >= 1, got {n_variables}")
    def boundary(width: int) -> Boundary:
        return Boundary(n_variables, width, init_width, soft_start, log_boundary)

    if kind == "boundless":
        return SubspaceSwap(kind, Rotation(hidden_size, seed, rotation_map), boundary(hidden_size))
    if kind == "random_rotation":
        return SubspaceSwap(kind, Rotation(hidden_size, seed, rotation_map, trainable=False), boundary(hidden_size))
    if kind == "das":
        width = (subspace_dim or 1) * n_variables
        return SubspaceSwap(kind, LowRankRotation(hidden_size, width, seed), Everything(n_variables, width))
    if kind == "low_rank":
        width = subspace_dim or min(hidden_size, 64 * n_variables)
        return SubspaceSwap(kind, LowRankRotation(hidden_size, width, seed), boundary(width))
    if kind == "neuron_mask":
        return SubspaceSwap(kind, StandardBasis(hidden_size), NeuronMask(n_variables, hidden_size))
    return SubspaceSwap(kind, StandardBasis(hidden_size), Everything(n_variables, hidden_size, shared=True))
