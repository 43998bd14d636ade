"""Where one align-search trial step spends its time: torch.profiler's top operators.

Builds the same model, pairs and trainer as `trial_vs_pyvene` (no pyvene needed), runs
`--warmup` steps, then profiles `--steps` steps of align-search and of the floor and prints
both operator tables, so that what a step costs beyond the floor can be read off.

    /work/bench-venv/bin/python -m benchmarks.profile_step --layer 6 --kind boundless
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from alignment.frozen import FrozenSite
from alignment.rotations import random_orthogonal
from alignment.sites import layer_site
from alignment.tokenizer import task_tokenizer
from benchmarks.common import TASK, floor_step, price_tagging_pairs, random_model
from benchmarks.trial_vs_pyvene import BATCH, AlignSearchTrainer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="gpt2-small")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--kind", default="boundless", choices=["das", "boundless"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=25, help="operators to print")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = random_model(args.shape)
    total = args.warmup + args.steps
    pairs = price_tagging_pairs(task_tokenizer(TASK, ["alpaca"]), "alpaca", BATCH * total, "last")
    frozen = FrozenSite(model, layer_site(model, args.layer), pairs.data.table)
    hidden = frozen.hidden_size()
    trainer = AlignSearchTrainer(frozen, pairs, args.kind, random_orthogonal(hidden), hidden // 2, total)
    batches = [trainer.batch(i) for i in range(total)]
    for index in range(args.warmup):
        trainer.step(index)
        floor_step(frozen, batches[index].pairs.base_rows, batches[index].pairs.labels)
    def floor(index: int) -> float:
        return floor_step(frozen, batches[index].pairs.base_rows, batches[index].pairs.labels)

    for name, step in (("align-search", trainer.step), ("floor", floor)):
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for index in range(args.warmup, total):
                step(index)
        print(f"\n== {name}/{args.kind if name != 'floor' else ''} layer {args.layer}, {args.steps} steps ==")
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
