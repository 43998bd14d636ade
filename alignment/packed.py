"""The frozen model's linear layers on the CPU through oneDNN, with their weights packed once.

A training step runs the layers above the site and the LM head on one token per pair: a matrix
product of 16 rows by the weight. torch's default CPU path (MKL's sgemm) reaches a third of the
machine's float32 rate at so few rows; oneDNN, given the weight already reordered into its own
blocked layout, about twice that (the SmolLM2-135M LM head, 16 rows, forward and backward: 53.8 ms
against 26.0 ms; an MLP projection over 3,584 tokens: 69.4 ms against 58.9 ms; benchmarks/README.md).
The model never changes during a sweep, so each weight is packed once, when first used, and
once more transposed for the backward pass, which needs only the gradient of the input (no
weight trains).

`PackedLinear` is an `nn.Linear` with the same parameters (state dict, tied weights and hooks are
unchanged); only its product is computed by oneDNN, equal to torch's up to float32 rounding (a
different summation order). It applies to float32 weights on the CPU that no gradient flows
into, of at least `MIN_ELEMENTS` (smaller products gain nothing), while the packed copies fit
`budget_mb`; anywhere else (an input on another device or of another dtype) it computes as
`nn.Linear` does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_ELEMENTS = 2**16  # 256 x 256: below it MKL's product is as fast


def available() -> bool:
    """Whether this torch has oneDNN's packed linear product on the CPU."""
    ops = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise")
            and hasattr(ops, "_reorder_linear_weight"))


def pack_linears(model: nn.Module, budget_mb: float = 2048.0) -> int:
    """Replace the frozen float32 CPU `nn.Linear` layers of `model` by `PackedLinear`; the number replaced.

    Nothing is replaced when oneDNN is not available or the packed copies (two per weight) would
    exceed `budget_mb`.
    """
    if not available():
        return 0
    found = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, nn.Linear) and _packable(child)]
    if 2 * sum(int(child.weight.numel()) for _, _, child in found) * 4 > budget_mb * 2**20:
        return 0
    for parent, name, child in found:
        setattr(parent, name, PackedLinear(child))
    return len(found)


def _packable(module: nn.Linear) -> bool:
    return (type(module) is nn.Linear and module.weight.dtype == torch.float32 and module.weight.device.type == "cpu"
            and not module.weight.requires_grad and module.weight.numel() >= MIN_ELEMENTS
            and (module.bias is None or not module.bias.requires_grad))


class PackedLinear(nn.Linear):
    """`linear`, its products computed by oneDNN from packed copies of its frozen weight (module docstring).

    Each copy is made the first time it is needed: a trial never runs the layers below its site
    (their outputs are cached) nor backpropagates through them, so it packs only those above.
    """

    def __init__(self, linear: nn.Linear, rows: int = 16):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # the same parameters, tied ones included
        if linear.bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = linear.bias
        self.rows = rows  # oneDNN's hint for the layout; any number of rows works (a step's batch is typical)
        self._packed: Tensor | None = None
        self._packed_transposed: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32 or self.weight.requires_grad:
            return F.linear(x, self.weight, self.bias)
        out: Tensor = _PackedProduct.apply(x, self, self.bias)
        return out

    def packed(self) -> Tensor:
        """The weight in oneDNN's layout, for x W^T."""
        if self._packed is None:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), self.rows)
        return self._packed

    def packed_transposed(self) -> Tensor:
        """The transposed weight in oneDNN's layout, for the input's gradient g W."""
        if self._packed_transposed is None:
            weight = self.weight.detach().t().contiguous()
            self._packed_transposed = torch.ops.mkldnn._reorder_linear_weight(weight, self.rows)
        return self._packed_transposed


class _PackedProduct(torch.autograd.Function):
    """x W^T + b by oneDNN; the backward gives the input's gradient only (g W, from the transposed copy)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, linear: PackedLinear, bias: Tensor | None) -> Tensor:
        ctx.linear = linear
        return _product(x, linear.packed(), bias)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return _product(grad, ctx.linear.packed_transposed(), None), None, None


def _product(x: Tensor, packed: Tensor, bias: Tensor | None) -> Tensor:
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    out = torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], "")
    return out.reshape(*x.shape[:-1], out.shape[-1])
