import math

import pytest
import torch

from alignment.interventions import KINDS, build_intervention
from alignment.rotations import LowRankRotation, Rotation

HIDDEN = 24


def inputs(n_variables=1, batch=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, HIDDEN, generator=generator)
    sources = torch.randn(batch, n_variables, HIDDEN, generator=generator)
    return base, sources, torch.ones(batch, n_variables, dtype=torch.bool)


@pytest.mark.parametrize("kind", ["boundless", "random_rotation", "low_rank"])
def test_full_width_boundary_returns_the_source_and_empty_returns_the_base(kind):
    swap = build_intervention(kind, HIDDEN, subspace_dim=HIDDEN)
    base, sources, active = inputs()
    with torch.no_grad(), swap.hard_mode():
        swap.mask.set_share(1.0)
        torch.testing.assert_close(swap(base, sources, active), sources[:, 0], atol=1e-5, rtol=1e-5)
        swap.mask.set_share(0.0)
        torch.testing.assert_close(swap(base, sources, active), base)


def test_full_swap_and_full_das_return_the_source():
    base, sources, active = inputs()
    torch.testing.assert_close(build_intervention("full_swap", HIDDEN)(base, sources, active), sources[:, 0])
    das = build_intervention("das", HIDDEN, subspace_dim=HIDDEN)
    torch.testing.assert_close(das(base, sources, active), sources[:, 0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_inactive_variables_leave_the_base_untouched(kind):
    swap = build_intervention(kind, HIDDEN, n_variables=2, subspace_dim=4)
    base, sources, _ = inputs(2)
    torch.testing.assert_close(swap(base, sources, torch.zeros(5, 2, dtype=torch.bool)), base)


def test_each_variable_swaps_only_its_own_block():
    swap = build_intervention("boundless", HIDDEN, n_variables=2)
    base, sources, _ = inputs(2)
    first = torch.tensor([[True, False]] * 5)
    with torch.no_grad(), swap.hard_mode(), swap.materialized():
        rotation = swap.basis.matrix()
        rotated_out = swap(base, sources, first) @ rotation
        rotated_base, rotated_source = base @ rotation, sources[:, 0] @ rotation
    size = swap.mask.sizes()[0]
    torch.testing.assert_close(rotated_out[:, :size], rotated_source[:, :size], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rotated_out[:, size:], rotated_base[:, size:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("soft_start", [False, True])
def test_soft_mask_tends_to_the_hard_mask_as_the_temperature_falls(soft_start):
    swap = build_intervention("boundless", HIDDEN, n_variables=2, init_width=0.4, soft_start=soft_start)
    swap.set_temperature(1e-3)
    soft = swap.mask.weights().detach()
    with swap.hard_mode():
        hard = swap.mask.weights()
    torch.testing.assert_close(soft, hard)
    assert swap.mask.sizes() == [round(0.4 * HIDDEN / 2)] * 2


def test_a_soft_mask_stays_in_its_block_and_swaps_the_front_fully_at_a_high_temperature():
    """The start of a subspace is its block's edge: only the end is learned (the 2023 mask is soft at both)."""
    block = HIDDEN // 2
    swap = build_intervention("boundless", HIDDEN, n_variables=2, init_width=0.5)
    swap.set_temperature(0.1 * block)
    weights = swap.mask.weights().detach()
    assert weights[0, block:].eq(0).all() and weights[1, :block].eq(0).all()
    assert weights[0, 0] > 0.98 and weights[1, block] > 0.98
    assert weights[0, :block].diff().le(0).all()   # falls from the front to the end of the block
    paper = build_intervention("boundless", HIDDEN, n_variables=2, init_width=0.5, soft_start=True)
    paper.set_temperature(0.1 * block)
    assert paper.mask.weights()[0, 0] < 0.7 and paper.mask.weights()[0, block] > 0.0


@pytest.mark.parametrize("log_boundary", [True, False])
def test_a_boundary_is_set_read_and_kept_as_a_share_of_its_block(log_boundary):
    swap = build_intervention("boundless", HIDDEN, n_variables=2, log_boundary=log_boundary)
    torch.testing.assert_close(swap.mask.share(), torch.tensor([0.5, 0.5]))
    swap.mask.set_share(torch.tensor([0.25, 1.0]))
    assert swap.mask.sizes() == [3, 12]
    with torch.no_grad():
        swap.mask.boundaries.add_(torch.tensor([-50.0, 50.0]))  # a step far out of range
    swap.project()
    shares = swap.mask.share().detach()
    assert 0.0 <= float(shares[0]) < 1e-3 and float(shares[1]) == 1.0
    assert swap.mask.sizes() == [0, 12]


def test_a_log_boundary_moves_by_the_same_factor_whatever_its_size():
    """Adam moves a log-boundary by about lr per step: a share of the width, not of the block."""
    moves = []
    for share in (0.5, 0.01):
        swap = build_intervention("boundless", HIDDEN)
        swap.mask.set_share(share)
        optimizer = torch.optim.Adam(swap.boundary_parameters(), lr=0.05)
        swap.penalty().backward()
        optimizer.step()
        moves.append(float(swap.mask.share().detach()) / share)
    assert moves == pytest.approx([math.exp(-0.05)] * 2, rel=1e-4)


@pytest.mark.parametrize("basis", [Rotation(HIDDEN), Rotation(HIDDEN, rotation_map="matrix_exp"),
                                   LowRankRotation(HIDDEN, 5)], ids=["cayley", "matrix_exp", "low_rank"])
def test_basis_stays_orthonormal_after_100_steps(basis):
    optimizer = torch.optim.Adam(basis.parameters(), lr=0.05)
    target = torch.randn(HIDDEN, basis.width)
    initial = basis.compute().detach().clone()
    for _ in range(100):
        optimizer.zero_grad()
        ((basis.compute() - target) ** 2).sum().backward()
        optimizer.step()
    matrix = basis.compute().detach()
    torch.testing.assert_close(matrix.T @ matrix, torch.eye(basis.width), atol=1e-4, rtol=0)
    assert (matrix - initial).abs().max() > 0.1  # it moved: the steps changed the basis, not just kept it


def test_materialized_rotation_gives_the_same_gradient_as_recomputing_it():
    swap_a, swap_b = build_intervention("boundless", HIDDEN, seed=3), build_intervention("boundless", HIDDEN, seed=3)
    with torch.no_grad():
        swap_a.basis.generator.normal_(0, 0.1)
        swap_b.basis.generator.copy_(swap_a.basis.generator)
    base, sources, active = inputs()
    for _ in range(2):  # two micro-batches
        swap_a(base, sources, active).pow(2).sum().backward()
    with swap_b.materialized():
        for _ in range(2):
            swap_b(base, sources, active).pow(2).sum().backward()
    torch.testing.assert_close(swap_a.basis.generator.grad, swap_b.basis.generator.grad, atol=1e-4, rtol=1e-4)


def test_rotation_stays_fp32_under_bf16_inputs():
    swap = build_intervention("boundless", HIDDEN)
    base, sources, active = inputs()
    out = swap(base.bfloat16(), sources.bfloat16(), active)
    assert out.dtype == torch.bfloat16 and swap.basis.generator.dtype == torch.float32


def test_axis_penalty_is_zero_for_an_axis_aligned_rotation_and_positive_otherwise():
    swap = build_intervention("boundless", HIDDEN)
    assert float(swap.axis_penalty().detach()) > 0.3
    swap.basis.set_matrix(torch.eye(HIDDEN))
    assert float(swap.axis_penalty().detach()) == pytest.approx(0.0, abs=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="intervention must be one of"):
        build_intervention("rotate", HIDDEN)
    with pytest.raises(ValueError, match="rank must be in 1..24"):
        build_intervention("das", HIDDEN, subspace_dim=30)
