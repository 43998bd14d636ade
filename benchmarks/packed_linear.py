"""torch's CPU product (MKL) against oneDNN's from a packed weight (`alignment.packed.PackedLinear`).

The shapes are SmolLM2-135M's (width 576, MLP 1536, vocabulary 49,152): a training step's 16 rows
through an MLP projection and the LM head, forward and backward (the input's gradient only, as in
a trial), an evaluation's 32 rows, and the driver's cache build (256 prompts of 14 tokens, no
gradient). Both sides are checked to agree before any timing; they alternate, and each time is
the median of `--repeats`.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.packed_linear --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from alignment.packed import PackedLinear, available
from benchmarks.common import load_average, machine

SHAPES = [  # (what, rows, in, out, backward)
    ("step: MLP up, 16 rows", 16, 576, 1536, True),
    ("step: MLP down, 16 rows", 16, 1536, 576, True),
    ("step: LM head, 16 rows", 16, 576, 49152, True),
    ("evaluation: LM head, 32 rows", 32, 576, 49152, False),
    ("cache build: MLP up, 3584 tokens", 3584, 576, 1536, False),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not available():
        raise SystemExit("this torch has no oneDNN packed linear product")
    torch.set_num_threads(args.threads)
    print(f"load {load_average()}; torch threads {args.threads}")
    rows_out = []
    for what, rows, width, out, backward in SHAPES:
        torch.manual_seed(0)
        linear = nn.Linear(width, out, bias=False).requires_grad_(False)
        packed = PackedLinear(linear)
        x = torch.randn(rows, width, requires_grad=backward)
        grad = torch.randn(rows, out)
        _check(linear, packed, x, grad if backward else None)
        times = {"mkl": [], "onednn": []}
        for _ in range(args.repeats):
            for name, module in (("mkl", linear), ("onednn", packed)):
                times[name].append(_seconds(module, x, grad if backward else None))
        mkl, onednn = (statistics.median(times[name]) * 1e3 for name in ("mkl", "onednn"))
        print(f"{what:34s} {'fwd+bwd' if backward else 'fwd':7s}  MKL {mkl:7.2f} ms   oneDNN packed {onednn:7.2f} ms"
              f"   {mkl / onednn:4.2f}x")
        rows_out.append({"what": what, "rows": rows, "in": width, "out": out, "backward": backward,
                         "mkl_ms": round(mkl, 3), "onednn_ms": round(onednn, 3), "speedup": round(mkl / onednn, 3)})
    print(f"load {load_average()}")
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "machine": machine(),
                                        "shapes": rows_out}, indent=2) + "\n")


def _run(module: nn.Module, x: torch.Tensor, grad: torch.Tensor | None) -> None:
    if grad is None:
        with torch.no_grad():
            module(x)
        return
    torch.autograd.grad(module(x), x, grad)


def _check(linear: nn.Linear, packed: PackedLinear, x: torch.Tensor, grad: torch.Tensor | None) -> None:
    """Equal work: the same product (and input gradient) up to float32 rounding."""
    expected, got = linear(x), packed(x)
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-4)
    if grad is not None:
        (want,) = torch.autograd.grad(expected, x, grad)
        (have,) = torch.autograd.grad(got, x, grad)
        torch.testing.assert_close(have, want, atol=1e-3, rtol=1e-4)


def _seconds(module: nn.Module, x: torch.Tensor, grad: torch.Tensor | None) -> float:
    started = time.perf_counter()
    _run(module, x, grad)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
