"""What a sweep's driver does before the first trial, step by step: prepare, load the model, build the shared files,
probe; alone, or with the sweep's Ray starting beside it as `align-search sweep` starts it.

The driver's `timings.json` holds these as two phases (prepare, caches); this splits the caches
phase into its steps and, with `--with-ray`, shows how much of it is Ray's start competing for
the cores. `build_shared_files` is profiled with cProfile when `--profile N` asks (its N most
costly calls by cumulative time). The sweep folder is a temporary one; nothing else is written.

Run from the repository root in the project's environment, e.g. the price grid of
benchmarks/sweep.py:
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.driver_steps --with-ray \\
        --set 'hypotheses.causal_models=["left_boundary", "right_boundary"]' \\
        --set 'hypotheses.positions=["amount_first_digit", "amount_last_digit", "amount_dollars", "last"]' \\
        --set controls.top_k=0 --set train.max_steps=150 --set train.batch_size=32 --set train.threads=1 \\
        --set resources.concurrency=2
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from search.caches import build_shared_files, why_not_built
from search.config import SweepConfig, load_config
from search.estimate import load_in_driver
from search.folder import SweepFolder
from search.ray_session import RaySession
from search.sweep import plan_line, prepare_sweep, resolve_model_path

T = TypeVar("T")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a sweep TOML (default: the embedded price-tagging sweep)")
    parser.add_argument("--set", action="append", default=[], help="a `--set key=value` for the sweep, repeatable")
    parser.add_argument("--with-ray", action="store_true",
                        help="start the sweep's Ray beside the steps, as a sweep does")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print the N most costly calls of the shared files' build")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = load_config(args.config, args.set)
    steps: list[tuple[str, float]] = []

    def timed(name: str, work: Callable[[], T]) -> T:
        started = time.perf_counter()
        result = work()
        steps.append((name, time.perf_counter() - started))
        return result

    with tempfile.TemporaryDirectory(prefix="align-search-driver-steps-") as scratch:
        folder = SweepFolder(Path(scratch) / "sweep")
        folder.path.mkdir()
        specs = [s for s in timed("prepare", lambda: prepare_sweep(config, folder)) if s.phase == "grid"]
        with _ray_beside(config) if args.with_ray else contextlib.nullcontext():
            loaded = timed("load the model", lambda: load_in_driver(config, resolve_model_path(config)))
            reason = why_not_built(config)
            if reason is not None:
                print(f"the shared files are left to the trials: {reason}")
            else:
                profile = cProfile.Profile()
                with profile if args.profile else contextlib.nullcontext():
                    timed("the shared files", lambda: build_shared_files(config, folder, specs, loaded))
            timed("the probe and the plan line", lambda: plan_line(config, folder, specs, loaded, None, reason is None))
    print(f"{len(specs)} trials, Ray {'starting beside' if args.with_ray else 'not started'}")
    print("| step | seconds |\n|---|---|")
    for name, seconds in steps:
        print(f"| {name} | {seconds:.2f} |")
    if args.profile and reason is None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(args.profile)


@contextlib.contextmanager
def _ray_beside(config: SweepConfig) -> Iterator[None]:
    session = RaySession(config)
    try:
        yield
        session.wait()
    finally:
        session.close()


if __name__ == "__main__":
    main()
