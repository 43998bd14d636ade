"""What Ray Tune adds to each trial of a sweep: the constant `search/estimate.py` calls TUNE_SECONDS.

Runs a FIFO sweep of short trials (the shipped price-tagging model, Left Boundary at every
token of layer 2's block output: 27 trials, 20 steps each) at concurrency 1, times the grid's
Tune phase (starting Ray included) and subtracts the trials' own time (`seconds` in each
summary.json, from the trial's first line to its last). What is left, per trial, is what the
plan line's probe cannot see: Tune scheduling the trial in a worker, the trainable reading its
pairs and prompts from the sweep folder, the driver mirroring it into MLflow.

    .venv/bin/python -m benchmarks.tune_overhead --out /tmp/tune-overhead
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import search.sweep as sweep_module
from search.cli import main as cli


def measure(out: Path) -> dict[str, Any]:
    marks: dict[str, float] = {}
    original = sweep_module._run_tune

    def timed(*args: Any, **kwargs: Any) -> None:
        if "start" not in marks:  # the grid phase (controls are off)
            marks["start"] = time.perf_counter()
        original(*args, **kwargs)
        marks["end"] = time.perf_counter()

    sweep_module._run_tune = timed
    try:
        code = cli(["sweep", "--out", str(out / "sweep"), "--scheduler", "fifo",
                    "--set", 'hypotheses.causal_models=["left_boundary"]', "--set", 'hypotheses.layers="2"',
                    "--set", 'hypotheses.positions="every"', "--set", "controls.top_k=0",
                    "--set", "resources.concurrency=1", "--set", "train.max_steps=20", "--set", "train.eval_every=10",
                    "--set", "data.n_train=200", "--set", "data.n_dev=50", "--set", "data.n_test=50"])
    finally:
        sweep_module._run_tune = original
    if code != 0:
        raise SystemExit(code)
    seconds = [json.loads(path.read_text())["seconds"] for path in (out / "sweep").glob("trials/*/summary.json")]
    wall = marks["end"] - marks["start"]
    return {"trials": len(seconds), "tune_wall_s": round(wall, 1), "sum_trial_seconds": round(sum(seconds), 1),
            "overhead_per_trial_s": round((wall - sum(seconds)) / len(seconds), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    print(json.dumps(measure(parser.parse_args().out)))


if __name__ == "__main__":
    main()
