"""A layer x position sweep: align-search (ASHA, shared caches, concurrency 2) against pyvene trial by trial.

The grid is the price-tagging task's boundary variables (Left Boundary, Right Boundary) x
every decoder layer x `--positions` of the shipped price-tagging model, Boundless DAS, the
same number of steps, batch size, learning rates and counterfactual pairs for both:

    align-search  `align-search sweep` in the project's environment: Ray Tune, two trials at
                  once (one CPU each), ASHA stopping weak hypotheses, one shared prefix cache
                  per layer, MLflow logging, the report. Its wall time is the whole command.
    pyvene        pyvene 0.1.8 as its Boundless DAS tutorial uses it (benchmarks/pyvene_steps.py),
                  one trial after another, each trained for the full step count on the pairs the
                  sweep wrote (its data/ folder) and scored on the same held-out test pairs
                  (restricted-vocabulary IIA, the pyvene intervention at its final temperature).

It prints the wall-time ratio and the best hypothesis with its test IIA for both; the issue's
target is >= 10x less wall time for align-search and best IIAs within 0.03. `--pyvene-sample K`
trains pyvene on K hypotheses only (align-search's best among them) and extrapolates its wall
time from their mean, saying so in the output; the default trains the whole grid.

Run from the repository root in the benchmark's environment (benchmarks/README.md):
    /work/bench-venv/bin/python -m benchmarks.sweep --out benchmarks/results/sweep.json
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from alignment.batches import TrialData, build_trial_data
from alignment.models import load_model
from benchmarks.common import TASK, TASK_MODEL_DIR, load_average, machine
from benchmarks.pyvene_steps import PyveneTrainer, pyvene_intervention

ROOT = Path(__file__).resolve().parents[1]
VARIABLES = ("left_boundary", "right_boundary")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(TASK_MODEL_DIR))
    parser.add_argument("--positions", default="amount_first_digit,amount_last_digit,amount_dollars,last",
                        type=lambda s: s.split(","))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--boundary-lr", type=float, default=3e-2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each trial (both libraries)")
    parser.add_argument("--concurrency", type=int, default=2, help="align-search trials at once")
    parser.add_argument("--pyvene-sample", type=int, default=0, help="pyvene on this many hypotheses only (0: all)")
    parser.add_argument("--align-search", default=str(ROOT / ".venv" / "bin" / "align-search"),
                        help="the align-search command of the project's environment")
    parser.add_argument("--sweep-dir", help="keep align-search's sweep folder here (default: a temporary one)")
    parser.add_argument("--out", help="write the results as JSON here")
    return parser.parse_args(argv)


def run_align_search(args: argparse.Namespace, folder: Path) -> float:
    """Wall seconds of the whole `align-search sweep` command over the grid."""
    positions = json.dumps(args.positions)
    command = [args.align_search, "sweep", "--out", str(folder), "--set", f"model_path={json.dumps(args.model)}",
               "--set", f"hypotheses.causal_models={json.dumps(list(VARIABLES))}",
               "--set", f"hypotheses.positions={positions}", "--set", "controls.top_k=0",
               "--set", f"train.max_steps={args.steps}", "--set", f"train.batch_size={args.batch_size}",
               "--set", f"train.lr={args.lr}", "--set", f"train.boundary_lr={args.boundary_lr}",
               "--set", f"train.threads={args.threads}", "--set", f"resources.concurrency={args.concurrency}"]
    print("align-search:", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def align_search_results(folder: Path) -> list[dict[str, Any]]:
    """The grid's rows of results.csv: hypothesis, causal model, layer, position, test IIA, status."""
    with open(folder / "results.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["role"] == "hypothesis"]
    return [{"hypothesis": r["hypothesis"], "causal_model": r["causal_model"], "layer": int(r["layer"]),
             "position": r["position"], "test_iia": float(r["test_iia"]) if r["test_iia"] else None,
             "status": r["status"], "stopped_by": r["stopped_by"]} for r in rows]


def sweep_pairs(folder: Path, variable: str, tokenizer: Any, template: str) -> TrialData:
    """The train and test pairs the sweep wrote for `variable`, tokenized as align-search does."""
    import datasets

    data = folder / "data" / f"{variable}__{variable}"
    splits = {split: list(datasets.load_from_disk(str(data / split))) for split in ("train", "test")}
    answers = sorted(set(TASK.template(template).answers.values()))
    return build_trial_data(tokenizer, splits, [variable], answers)


def _uniform(index: torch.Tensor, what: str) -> int:
    if not bool((index == index[0]).all()):
        raise SystemExit(f"pyvene's tutorial takes one token index; {what} is at {sorted(set(index.tolist()))}")
    return int(index[0])


def pyvene_trial(model: Any, data: TrialData, layer: int, position: str, args: argparse.Namespace,
                 seed: int = 0) -> tuple[float, float]:
    """(test IIA, wall seconds) of one hypothesis trained with pyvene for `args.steps` steps."""
    started = time.perf_counter()
    table, train, test = data.table, data.splits["train"], data.splits["test"]
    rows = torch.cat([train.base_rows, train.source_rows[:, 0], test.base_rows, test.source_rows[:, 0]])
    index = _uniform(table.token_index(position, rows), position)
    hidden = model.config.hidden_size
    trainer = PyveneTrainer(model, layer, pyvene_intervention("boundless", hidden, 0, seed), "tutorial", index,
                            args.steps, lr=args.lr, boundary_lr=args.boundary_lr)
    order: list[int] = []
    rng = random.Random(seed)
    for step in range(args.steps):
        if len(order) < args.batch_size:            # a new epoch: every pair once, in a new order
            epoch = list(range(len(train.labels)))
            rng.shuffle(epoch)
            order += epoch
        batch, order = order[:args.batch_size], order[args.batch_size:]
        picked = torch.tensor(batch)
        trainer.step(step, table.input_ids[train.base_rows[picked]], table.input_ids[train.source_rows[picked, 0]],
                     train.labels[picked])
    correct = 0
    for start in range(0, len(test.labels), 256):
        picked = torch.arange(start, min(start + 256, len(test.labels)))
        logits = trainer.logits(table.input_ids[test.base_rows[picked]], table.input_ids[test.source_rows[picked, 0]])
        choice = data.answer_ids[logits[:, data.answer_ids].argmax(dim=1)]
        correct += int((choice == test.labels[picked]).sum())
    return correct / len(test.labels), time.perf_counter() - started


def run_pyvene(args: argparse.Namespace, folder: Path, grid: list[dict[str, Any]]) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    template = json.loads((folder / "sweep.json").read_text())["data"]["template"] or loaded.meta["template"]
    data = {v: sweep_pairs(folder, v, loaded.tokenizer, template) for v in VARIABLES}
    chosen = grid
    if args.pyvene_sample:
        best = max(grid, key=lambda r: r["test_iia"] or 0.0)
        others = [r for r in grid if r is not best]
        chosen = [best, *random.Random(0).sample(others, min(args.pyvene_sample - 1, len(others)))]
    results = []
    for row in chosen:
        iia, seconds = pyvene_trial(loaded.model, data[row["causal_model"]], row["layer"], row["position"], args)
        print(f"  pyvene {row['hypothesis']}: test IIA {iia:.3f} in {seconds:.1f} s", flush=True)
        results.append({**row, "pyvene_test_iia": iia, "pyvene_seconds": seconds})
    measured = sum(r["pyvene_seconds"] for r in results)
    total = measured if len(chosen) == len(grid) else statistics.mean(
        r["pyvene_seconds"] for r in results) * len(grid)
    return {"trials": results, "wall_s": total, "measured_s": measured, "extrapolated": len(chosen) < len(grid)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.sweep_dir or Path(scratch) / "sweep")
        load_before = load_average()
        ours_s = run_align_search(args, folder)
        grid = align_search_results(folder)
        layers = len({r["layer"] for r in grid})
        print(f"align-search: {len(grid)} hypotheses ({layers} layers x {len(args.positions)} positions x "
              f"{len(VARIABLES)} variables) in {ours_s:.1f} s; "
              f"{sum(r['status'] == 'stopped_early' for r in grid)} stopped early", flush=True)
        theirs = run_pyvene(args, folder, grid)
        load_after = load_average()
    ours_best = max(grid, key=lambda r: r["test_iia"] or 0.0)
    theirs_best = max(theirs["trials"], key=lambda r: r["pyvene_test_iia"])
    ratio = theirs["wall_s"] / ours_s
    agree = abs(ours_best["test_iia"] - theirs_best["pyvene_test_iia"]) <= 0.03
    kind = "extrapolated from " + str(len(theirs["trials"])) + " trials" if theirs["extrapolated"] else "measured"
    print(f"\nwall time: align-search {ours_s:.0f} s, pyvene trial by trial {theirs['wall_s']:.0f} s ({kind}): "
          f"{ratio:.1f}x ({'MET' if ratio >= 10 else 'MISSED'} >= 10x)")
    print(f"best hypothesis: align-search {ours_best['hypothesis']} IIA {ours_best['test_iia']:.3f}; pyvene "
          f"{theirs_best['hypothesis']} IIA {theirs_best['pyvene_test_iia']:.3f} "
          f"({'MET' if agree else 'MISSED'}: within 0.03)")
    result = {"args": vars(args), "machine": machine(), "load": [load_before, load_after],
              "align_search": {"wall_s": ours_s, "grid": grid}, "pyvene": theirs, "ratio": ratio,
              "best": {"align_search": ours_best, "pyvene": theirs_best, "within_0.03": agree},
              "date": time.strftime("%Y-%m-%d")}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
