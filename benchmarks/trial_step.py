"""One training step of a real trial, as a sweep's trial runs it: its median time, and where it goes.

A trial is prepared the way `align-search align` prepares one (`alignment.trial.prepare_trial`:
the model, its pairs, the site's cached hidden states, the suffix path), then
`alignment.train._optimizer_step` runs `--warmup` steps and `--steps` timed ones, one at a time,
on one torch thread by default (a sweep's trial has one CPU). `--profile N` then runs N more
under torch.profiler and prints its operator table. No pyvene, nothing written but a
temporary folder.

The shipped price-tagging model at every layer, the price grid's batch (benchmarks/README.md):
    .venv/bin/python -m benchmarks.trial_step --layers 0,1,2 --batch-size 32
    .venv/bin/python -m benchmarks.trial_step --layers 0 --batch-size 32 --profile 50
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from alignment import train
from alignment.config import TrainConfig, TrialConfig
from alignment.trial import PreparedTrial, TrialInputs, prepare_trial
from benchmarks.common import TASK_MODEL_DIR


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(TASK_MODEL_DIR), help="a model folder (default: the shipped one)")
    parser.add_argument("--task", default="price_tagging")
    parser.add_argument("--causal-model", default="left_boundary")
    parser.add_argument("--position", default="amount_first_digit")
    parser.add_argument("--layers", default="0", help="comma-separated decoder layers")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile N more steps")
    return parser.parse_args(argv)


def prepared(args: argparse.Namespace, layer: int, folder: Path) -> PreparedTrial:
    config = TrialConfig(model_path=args.model, task=args.task, causal_model=args.causal_model, layer=layer,
                         position=args.position,
                         train=TrainConfig(batch_size=args.batch_size, threads=args.threads))
    return prepare_trial(config, folder, TrialInputs())


def step_seconds(trial: PreparedTrial, optimizer: torch.optim.Optimizer, first: int, count: int) -> list[float]:
    """The wall seconds of `count` optimizer steps, numbered from `first`, each timed on its own."""
    config, pairs = trial.config, trial.positioned["train"]
    per_epoch = math.ceil(len(pairs) / config.train.batch_size)  # as alignment.train.train batches an epoch
    seconds = []
    for step in range(first, first + count):
        started = time.perf_counter()
        train._optimizer_step(trial.interchange, pairs, step, per_epoch, config.train, config.intervention, optimizer)
        seconds.append(time.perf_counter() - started)
    return seconds


def main(argv: list[str] | None = None) -> list[dict[str, float | int | str | None]]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows: list[dict[str, float | int | str | None]] = []
    print("| layer | median ms a step | min ms | suffix path |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as temporary:
        for layer in [int(text) for text in args.layers.split(",")]:
            trial = prepared(args, layer, Path(temporary) / f"L{layer}")
            optimizer = train._optimizer(trial.interchange.intervention, trial.config.train)
            step_seconds(trial, optimizer, 0, args.warmup)
            timed = step_seconds(trial, optimizer, args.warmup, args.steps)
            reason = trial.interchange.frozen.suffix_reason
            row = {"layer": layer, "median_ms": 1000 * statistics.median(timed), "min_ms": 1000 * min(timed),
                   "suffix_reason": reason}
            rows.append(row)
            print(f"| {layer} | {row['median_ms']:.2f} | {row['min_ms']:.2f} | {reason or 'on'} |")
            if args.profile:
                from torch.profiler import profile

                with profile() as profiler:
                    step_seconds(trial, optimizer, args.warmup + args.steps, args.profile)
                print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    return rows


if __name__ == "__main__":
    main()
