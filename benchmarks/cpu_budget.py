"""Where a sweep's CPU-seconds go, per process and per driver phase, and the wall time they allow.

benchmarks/sweep_profile.py splits a sweep's wall seconds. This splits its CPU-seconds, which
bound it on a small machine: no schedule makes the wall time shorter than everyone's
CPU-seconds over the cores. It runs `align-search sweep` (the flags of sweep_profile) and reads
/proc every `--interval` seconds: the CPU time (user + system) of the command and of every
process descended from it (Ray's own processes, the trials' workers), and the machine's busy
time (/proc/stat). It prints

- CPU-seconds per kind of process: the driver, the trial workers, Ray's own processes, other;
- per driver phase (its timings.json; a phase runs from its first start to the next phase's
  start): the wall seconds, the driver's CPU-seconds, and everyone's;
- the floor: everyone's CPU-seconds over the cores, against the command's wall time.

What a process does in its last interval before it exits is missed (at most `--interval` each);
the machine's busy time over the same samples is the check, other work on the machine included.

The price grid of benchmarks/sweep.py, from the repository root in the project's environment:
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.cpu_budget \\
        --set 'model_path="alignment/task_models/price_tagging"' \\
        --set 'hypotheses.causal_models=["left_boundary", "right_boundary"]' \\
        --set 'hypotheses.positions=["amount_first_digit", "amount_last_digit", "amount_dollars", "last"]' \\
        --set controls.top_k=0 --set train.max_steps=150 --set train.batch_size=32 --set train.threads=1 \\
        --set resources.concurrency=2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignment.timing import TIMINGS, read_phases
from benchmarks.common import load_average
from benchmarks.sweep_profile import publish, sweep_arguments, sweep_command

TICK = os.sysconf("SC_CLK_TCK")
KINDS = ("driver", "trial workers", "Ray's own", "other")


@dataclass
class Sample:
    """One look at /proc: when (epoch s), the CPU-seconds so far of each process of the command, the machine's."""

    time: float
    cpu: dict[int, float]
    machine: float


@dataclass
class Recording:
    root: int
    samples: list[Sample] = field(default_factory=list)
    commands: dict[int, str] = field(default_factory=dict)


def process_table() -> tuple[dict[int, int], dict[int, float]]:
    """(parent of each process, its CPU-seconds so far) from /proc."""
    parents, cpu = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # it exited meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces and parentheses
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICK
    return parents, cpu


def descendants(root: int, parents: dict[int, int]) -> set[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid, parent in parents.items():
        children[parent].append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in parents and pid not in found:
            found.add(pid)
            todo += children[pid]
    return found


def machine_busy() -> float:
    """The machine's CPU-seconds so far, idle and I/O wait left out."""
    with open("/proc/stat") as stat:
        values = [int(x) for x in stat.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICK


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def record(command: list[str], interval: float) -> tuple[Recording, float]:
    """Run `command`, sampling it every `interval` s; (the recording, its wall seconds). Its output is dropped, but
    for the end of its standard error when it fails."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        recording = Recording(child.pid)
        while True:
            parents, cpu = process_table()
            mine = descendants(child.pid, parents)
            for pid in mine - recording.commands.keys():
                recording.commands[pid] = command_line(pid)
            recording.samples.append(Sample(time.time(), {pid: cpu[pid] for pid in mine}, machine_busy()))
            if child.poll() is not None:
                break
            time.sleep(interval)
        if child.returncode:
            errors.seek(0)
            said = errors.read().decode(errors="replace").strip().splitlines()[-5:]
            raise SystemExit(f"{' '.join(command)} failed with exit status {child.returncode}:\n" + "\n".join(said))
    return recording, time.perf_counter() - started


def kind(pid: int, root: int, command: str) -> str:
    if pid == root:
        return "driver"
    if "default_worker.py" in command:
        return "trial workers"
    if "ray" in command:
        return "Ray's own"
    return "other"


def used_between(recording: Recording, start: float, end: float) -> dict[int, float]:
    """Each process's CPU-seconds from its last sample at or before `start` (0 for one first seen after it) to its
    last sample at or before `end`."""
    base: dict[int, float] = {}
    last: dict[int, float] = {}
    for sample in recording.samples:
        if sample.time > end:
            break
        for pid, seconds in sample.cpu.items():
            if sample.time <= start:
                base[pid] = seconds
            last[pid] = seconds
    return {pid: seconds - base.get(pid, 0.0) for pid, seconds in last.items()}


def machine_between(recording: Recording, start: float, end: float) -> float:
    inside = [s.machine for s in recording.samples if start <= s.time <= end]
    return inside[-1] - inside[0] if len(inside) > 1 else 0.0


def budget(recording: Recording, phases: dict[str, dict[str, Any]], cores: int, wall: float,
           interval: float) -> dict[str, Any]:
    """CPU-seconds per kind of process, per driver phase, and the floor they put on the wall time."""
    first, end = recording.samples[0].time, recording.samples[-1].time
    whole = used_between(recording, first, end)
    per_kind = dict.fromkeys(KINDS, 0.0)
    for pid, seconds in whole.items():
        per_kind[kind(pid, recording.root, recording.commands.get(pid, ""))] += seconds
    marks = sorted((phase["started"], name) for name, phase in phases.items())
    bounds = [(first, "before the first phase (Python start, imports, checks)"), *marks]
    rows = []
    for (start, name), (stop, _) in zip(bounds, [*bounds[1:], (end, "")]):
        used = used_between(recording, start, stop)
        rows.append({"phase": name, "wall": stop - start, "driver": used.get(recording.root, 0.0),
                     "everyone": sum(used.values()), "machine": machine_between(recording, start, stop)})
    total = sum(per_kind.values())
    return {"wall": wall, "cores": cores, "interval": interval, "cpu_seconds": total, "per_kind": per_kind,
            "phases": rows, "machine_cpu_seconds": machine_between(recording, first, end), "floor": total / cores,
            "processes": len(whole)}


def print_budget(result: dict[str, Any]) -> None:
    print(f"\n{result['processes']} processes; {result['cpu_seconds']:.1f} CPU-seconds in {result['wall']:.1f} s "
          f"(the machine: {result['machine_cpu_seconds']:.1f})")
    print("\n| process | CPU-seconds | share |\n|---|---|---|")
    for name, seconds in result["per_kind"].items():
        print(f"| {name} | {seconds:.1f} | {100 * seconds / max(result['cpu_seconds'], 1e-9):.0f} % |")
    print("\n| driver phase (to the next one's start) | wall s | driver CPU-s | everyone's CPU-s | cores busy |")
    print("|---|---|---|---|---|")
    for row in result["phases"]:  # a phase of under two looks at /proc has no share of cores worth printing
        busy = f"{row['everyone'] / row['wall']:.2f}" if row["wall"] >= 2 * result["interval"] else "-"
        print(f"| {row['phase']} | {row['wall']:.1f} | {row['driver']:.1f} | {row['everyone']:.1f} | {busy} |")
    print(f"\nfloor on {result['cores']} cores: {result['floor']:.1f} s of the command's {result['wall']:.1f} s "
          f"({100 * result['floor'] / result['wall']:.0f} %)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = sweep_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between two looks at /proc")
    args = parser.parse_args(argv)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "sweep"
        recording, wall = record(sweep_command(args, folder), args.interval)
        result = budget(recording, read_phases(folder / TIMINGS), os.cpu_count() or 1, wall, args.interval)
    return publish(result, args, load_before, print_budget)


if __name__ == "__main__":
    main(sys.argv[1:])
