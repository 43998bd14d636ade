"""Where a sweep's seconds go: the driver's phases, each trial's phases, and what no phase holds.

Runs `align-search sweep` (the embedded defaults unless `--set`/`--config` say otherwise),
then reads what the sweep itself recorded (`alignment/timing.py`): the driver's
`timings.json` (prepare, caches, ray_start, tracking, grid, controls, report, ray_stop) and every
trial's (inputs, model, data, site, prealign, step, dev_eval, test_eval, checkpoint,
tune_report, save), with each trial's start from its `attempts.jsonl`. It prints:

- the command's wall time split into the driver's phases, and what is left (Python start,
  imports, config and the CLI's own work);
- per Tune run (grid, controls): its slot-seconds (wall x concurrency) split into the trials'
  phases summed over trials, "worker start" (from the run's start to each slot's first trial)
  and "between and after trials" (the rest: Tune's scheduling, actor reuse, idle slots while
  the last trials finish);
- the trials' phases, mean per trial.

Run from the repository root in the project's environment:
    .venv/bin/python -m benchmarks.sweep_profile --out benchmarks/results/sweep_profile.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignment.timing import TIMINGS, read_phases
from benchmarks.common import load_average, machine
from search.folder import SweepFolder

ROOT = Path(__file__).resolve().parents[1]
TRIAL_PHASES = ("inputs", "model", "data", "site", "prealign", "step", "dev_eval", "test_eval", "checkpoint",
                "tune_report", "save")


def sweep_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags that say which sweep to run (also benchmarks/cpu_budget.py's)."""
    parser.add_argument("--config", help="a sweep TOML (default: the embedded price-tagging sweep)")
    parser.add_argument("--set", action="append", default=[], help="a `--set key=value` for the sweep, repeatable")
    parser.add_argument("--align-search", default=str(ROOT / ".venv" / "bin" / "align-search"))
    parser.add_argument("--out", help="write the results as JSON here")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = sweep_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--sweep-dir", help="run the sweep into this folder and keep it; a folder that already "
                        "holds a finished sweep is profiled without running one")
    return parser.parse_args(argv)


def sweep_command(args: argparse.Namespace, folder: Path) -> list[str]:
    command = [args.align_search, "sweep", *([args.config] if args.config else []), "--out", str(folder)]
    for value in args.set:
        command += ["--set", value]
    return command


def run_sweep(args: argparse.Namespace, folder: Path) -> float:
    command = sweep_command(args, folder)
    print("running:", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def trial_profiles(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Per Tune run ("grid", "controls"): each trial's phases, its start (epoch s) and its end (timings' mtime)."""
    sweep = SweepFolder(folder)
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for spec in sweep.read_trials():
        directory = sweep.trial_dir(spec.key)
        if not (directory / TIMINGS).is_file():
            continue
        runs[spec.phase].append({"key": spec.key, "phases": read_phases(directory / TIMINGS),
                                 "start": sweep.attempts(spec.key)[-1]["time"],
                                 "end": (directory / TIMINGS).stat().st_mtime})
    return runs


def split_run(trials: list[dict[str, Any]], started: float, seconds: float, concurrency: int) -> dict[str, float]:
    """A Tune run's slot-seconds: the trials' phases summed, worker start, and the rest."""
    slots = seconds * concurrency
    phases = {name: sum(t["phases"].get(name, {}).get("seconds", 0.0) for t in trials) for name in TRIAL_PHASES}
    firsts = sorted(t["start"] for t in trials)[:concurrency]
    worker_start = sum(first - started for first in firsts)
    accounted = sum(phases.values()) + worker_start
    return {"slot_seconds": slots, **phases, "worker start": worker_start,
            "between and after trials": slots - accounted}


def profile(folder: Path, command_s: float | None) -> dict[str, Any]:
    config = json.loads((folder / "sweep.json").read_text())
    concurrency = int(config["resources"]["concurrency"])
    driver = read_phases(folder / TIMINGS)
    runs = trial_profiles(folder)
    result: dict[str, Any] = {"command_s": command_s, "driver": driver, "concurrency": concurrency, "runs": {}}
    for name, trials in runs.items():
        if name in driver:
            result["runs"][name] = {"trials": len(trials), **split_run(
                trials, driver[name]["started"], driver[name]["seconds"], concurrency)}
    result["per_trial"] = {name: {phase: statistics_of([t["phases"].get(phase, {}).get("seconds", 0.0) for t in trials])
                                  for phase in TRIAL_PHASES} for name, trials in runs.items()}
    return result


def statistics_of(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def print_profile(result: dict[str, Any]) -> None:
    driver = result["driver"]
    total = result["command_s"]
    print("\n| driver phase | seconds | share |\n|---|---|---|")
    whole = total or sum(p["seconds"] for p in driver.values())
    for name, phase in driver.items():
        print(f"| {name} | {phase['seconds']:.1f} | {100 * phase['seconds'] / whole:.0f} % |")
    if total:
        left = total - sum(p["seconds"] for p in driver.values())
        print(f"| outside the driver (Python start, imports, the CLI) | {left:.1f} | {100 * left / total:.0f} % |")
        print(f"| **the command** | **{total:.1f}** | |")
    for name, run in result["runs"].items():
        slots = run["slot_seconds"]
        print(f"\n{name}: {run['trials']} trials, {slots:.0f} slot-seconds ({result['concurrency']} at once)")
        print("| part | slot-seconds | share | mean per trial |\n|---|---|---|---|")
        for part, seconds in run.items():
            if part in ("trials", "slot_seconds"):
                continue
            mean = result["per_trial"][name].get(part)
            each = "" if mean is None else f"{mean:.2f}"
            print(f"| {part} | {seconds:.1f} | {100 * seconds / slots:.0f} % | {each} |")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.sweep_dir) if args.sweep_dir else Path(scratch) / "sweep"
        finished = (folder / TIMINGS).is_file()
        command_s = None if finished else run_sweep(args, folder)
        result = profile(folder, command_s)
    return publish(result, args, load_before, print_profile)


def publish(result: dict[str, Any], args: argparse.Namespace, load_before: list[float],
            show: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Add the machine's facts, its load before and after, the date and the flags to `result`; print it with `show`
    and write it to `--out` as JSON."""
    result.update(machine=machine(), load=[load_before, load_average()], date=time.strftime("%Y-%m-%d"),
                  args=vars(args))
    show(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
