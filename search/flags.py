"""The command line's one vocabulary: flag names shared by every command, and checked number types.

One flag name per concept, whatever the command: `--model-path` for the model (a folder, a
.gguf file or a Hugging Face Hub id), `--out` for the folder a command writes, `--overwrite` to
let it replace what that folder holds. Older spellings stay as aliases. Numbers are checked
as argparse reads them (finite, in range), so `--lr nan`, `--eval -5` or `--port 99999` stop
with one line before any work starts.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any, NoReturn


class Parser(argparse.ArgumentParser):
    """Every parsing error is one line, `align-search: error: ...`, and exit status 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        print(f"align-search: error: {message}", file=sys.stderr)
        raise SystemExit(2)


MODEL_HELP = "a Hugging Face model folder, a .gguf file, or a Hub id (org/name, org/name@revision)"


def add_model_path(parser: argparse.ArgumentParser, *aliases: str, required: bool = True,
                   help: str = MODEL_HELP) -> None:
    parser.add_argument("--model-path", "--model_path", *aliases, dest="model_path", required=required,
                        metavar="MODEL", help=help)


def add_out(parser: argparse.ArgumentParser, *aliases: str, what: str = "the folder to write") -> None:
    parser.add_argument("--out", *aliases, dest="out", required=True, metavar="DIR",
                        help=f"{what} (new or empty; --overwrite replaces what this command wrote there)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the files of an earlier run in --out (other files are never touched)")


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        return _in_range(value, text, low, high)
    return parse


def number(low: float | None = None, high: float | None = None, above: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (and > above)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be > {above:g}, got {text}")
        return _in_range(value, text, low, high)
    return parse


def _in_range(value: Any, text: str, low: float | None, high: float | None) -> Any:
    if low is not None and value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low:g}, got {text}")
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text}")
    return value


POSITIVE = integer(1)
PORT = integer(1, 65535)
SHARE = number(0.0, 1.0)
