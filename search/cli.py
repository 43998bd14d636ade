"""The `align-search` command line: the only module that reads argv or prints.

Each command lives in its own module, which registers its parser and handler
(`register(subparsers)` sets `handler` on its parser); `main` parses, calls the handler and
prints what it returns. The command modules import nothing heavy at import time (no torch,
Ray or MLflow; a test checks it), so `align-search tasks` answers at once.

User errors (a bad name, a missing folder, a wrong config value: any `UserError`) print one
line and exit 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import atexit
import errno
import gc
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from causal_models.errors import UserError
from search import (
    align_command,
    cluster_command,
    model_commands,
    share_command,
    steer_command,
    sweep_commands,
    task_commands,
    ui_command,
)
from search.flags import Parser

COMMANDS = (task_commands, model_commands, align_command, cluster_command, sweep_commands, ui_command,
            steer_command, share_command)
# Errors only a write can give, which mean the disk, not a bug: full, over a size limit or quota, read-only.
WRITE_ERRORS = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file would pass the size limit",
                errno.EDQUOT: "the disk quota is used up", errno.EROFS: "the file system is read-only"}
# Other errors of the file system a user's path can cause, as `<path> must be <rule>, got <what>`.
PATH_ERRORS = {FileNotFoundError: ("exist", "no such file or folder"),
               NotADirectoryError: ("a path through folders", "one that passes through a file"),
               PermissionError: ("open to this user", "permission denied")}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="align-search", description="Find where a causal variable lives inside a language "
                     "model: Boundless DAS hypotheses swept with Ray Tune, recorded in MLflow.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.register(sub)
    return parser


def user_message(error: BaseException) -> str | None:
    """The one line the CLI prints for a user error, or None for a bug (which keeps its traceback)."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, OSError) and error.errno in WRITE_ERRORS:
        what = repr(error.filename) if error.filename else "an output file"
        return (f"{what} must be writable, got {errno.errorcode[error.errno]} ({WRITE_ERRORS[error.errno]}). "
                f"Free some space or choose another output folder; files written before are left as they were")
    for kind, (rule, got) in PATH_ERRORS.items():
        if isinstance(error, kind):
            if error.errno is None or error.filename is None:  # raised with a message of our own
                return str(error)
            return f"{str(error.filename)!r} must be {rule}, got {got}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The interpreter's exit collects garbage over every object torch, transformers, Ray and MLflow made: 1.3 s
    # of a sweep's end (measured), for memory the process gives back anyway. Frozen objects are not walked.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)  # runs after the handlers registered later (Ray's shutdown, MLflow's)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # MLflow's own INFO lines ("Creating initial MLflow database tables") are noise here
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # in case it already was
    try:
        output = args.handler(args, announce=lambda line: print(line, flush=True))
    except Exception as error:
        message = user_message(error)
        if message is None:
            raise
        print(f"align-search: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("align-search: interrupted", file=sys.stderr)
        return 130
    _print(output)
    return 0


def _print(output: Any) -> None:
    if output is None:
        return
    if isinstance(output, str):
        print(output)
    else:
        print(json.dumps(_finite(output), sort_keys=True))


def _finite(value: Any) -> Any:
    """JSON has no NaN: a number that is not one (a rate over no prompts) prints as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


if __name__ == "__main__":
    raise SystemExit(main())
