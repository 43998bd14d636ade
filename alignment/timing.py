"""Where a trial's or a sweep's seconds go: named phases, summed, written as `timings.json`.

A `Phases` records wall seconds and counts per phase name. Code deep inside a trial marks a
phase with `phase("dev_eval")`, which adds to the `Phases` made active by `recording(...)`
in the current context, and costs nothing measurable when none is:

    phases = Phases()
    with recording(phases):
        run_trial(...)                # train() marks "step" and "dev_eval" inside
    phases.write(trial_dir / "timings.json")

The phases of a trial are disjoint (a phase never runs inside another of the same trial), so
their sum is the trial's accounted time; `benchmarks/sweep_profile.py` reads them.
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alignment.files import atomic_write_text

TIMINGS = "timings.json"  # the file name, in a sweep folder (the driver) and in each trial folder
_ACTIVE: contextvars.ContextVar[Phases | None] = contextvars.ContextVar("phases", default=None)


class Phases:
    """Wall seconds and counts of named phases, in the order first seen, and when each first began."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.first: dict[str, float] = {}  # epoch seconds (time.time) of each phase's first start

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.counts[name] = self.counts.get(name, 0) + 1

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.first.setdefault(name, time.time())
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {name: {"seconds": round(seconds, 4), "count": self.counts[name],
                       **({"started": round(self.first[name], 3)} if name in self.first else {})}
                for name, seconds in self.seconds.items()}

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")


@contextmanager
def recording(phases: Phases) -> Iterator[Phases]:
    """Make `phases` the one `phase(...)` adds to, in this context, until the block ends."""
    token = _ACTIVE.set(phases)
    try:
        yield phases
    finally:
        _ACTIVE.reset(token)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block into the active `Phases`, if any."""
    active = _ACTIVE.get()
    if active is None:
        yield
        return
    with active.phase(name):
        yield


def read_phases(path: Path) -> dict[str, dict[str, float]]:
    """A `timings.json` as written by `Phases.write`; empty when there is none."""
    return json.loads(path.read_text()) if path.is_file() else {}
