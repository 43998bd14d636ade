"""Forward hooks as context managers that always clean up after themselves.

Every hook here is registered on entry and removed in `finally`, never touching hooks it did
not add (pyvene removes every hook on the model at each call). Decoder layers return a
tensor in transformers 5 and a tuple whose first item is the hidden states in 4.x; both work.

`skip_layers` is the one place a module is swapped, and only for the duration of the block:
it stands in for decoder layers 0..L so that a forward pass starts from cached hidden states
at layer L and runs only the layers above it (the frozen-prefix cache, DESIGN.md "Speed").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import torch
from torch import Tensor, nn

from alignment.sites import get_module


def hidden_of(output: Any) -> Tensor:
    """The hidden states of a module output (a tensor or a tuple starting with one)."""
    return output if isinstance(output, Tensor) else output[0]


def _with_hidden(output: Any, hidden: Tensor) -> Any:
    return hidden if isinstance(output, Tensor) else (hidden, *output[1:])


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the site's output is known."""


@contextmanager
def capture_output(model: nn.Module, path: str, stop: bool = False) -> Iterator[list[Tensor]]:
    """Collect the output hidden states of module `path`; with `stop`, end the forward pass there.

    Run the model inside the block with `run_until_stopped` when `stop` is set.
    """
    captured: list[Tensor] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        captured.append(hidden_of(output))
        if stop:
            raise _StopForward

    handle = get_module(model, path).register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def run_until_stopped(forward: Callable[[], Any]) -> None:
    """Call `forward`, treating a stop raised by `capture_output(stop=True)` as normal completion."""
    with suppress(_StopForward):
        forward()


@contextmanager
def edit_output(model: nn.Module, path: str, edit: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Within the block, module `path` outputs `edit(hidden)` instead of `hidden`."""
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        return _with_hidden(output, edit(hidden_of(output)))

    handle = get_module(model, path).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class _StandIn(nn.Module):
    """Replaces a decoder layer: passes its input through, or returns a given tensor."""

    def __init__(self, returns_tuple: bool, replacement: Tensor | None = None):
        super().__init__()
        self.returns_tuple = returns_tuple
        self.replacement = replacement

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        hidden = self.replacement if self.replacement is not None else (
            args[0] if args else kwargs["hidden_states"])
        return (hidden,) if self.returns_tuple else hidden


@contextmanager
def skip_layers(model: nn.Module, layer_list: str, last: int, hidden: Tensor,
                returns_tuple: bool) -> Iterator[None]:
    """Within the block, layers 0..`last` are skipped and layer `last` outputs `hidden`.

    Args:
        layer_list: path of the decoder-layer ModuleList.
        last: index of the site layer.
        hidden: (batch, seq, hidden) the site layer's output to continue from.
        returns_tuple: whether the model's layers return tuples (transformers 4.x).
    """
    layers = get_module(model, layer_list)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{layer_list!r} must be an nn.ModuleList, got {type(layers).__name__}")
    originals = [layers[i] for i in range(last + 1)]
    try:
        for i in range(last):
            layers[i] = _StandIn(returns_tuple)
        layers[last] = _StandIn(returns_tuple, hidden)
        yield
    finally:
        for i, original in enumerate(originals):
            layers[i] = original


def output_is_tuple(model: nn.Module, path: str, example_ids: Tensor) -> bool:
    """Whether module `path` returns a tuple (probed with one short forward pass)."""
    seen: list[bool] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        seen.append(not isinstance(output, Tensor))
        raise _StopForward

    handle = get_module(model, path).register_forward_hook(hook)
    try:
        with torch.no_grad():
            run_until_stopped(lambda: model(input_ids=example_ids[:1, :2]))
    finally:
        handle.remove()
    return seen[0]
