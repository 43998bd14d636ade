"""The sweep's subcommands: sweep, report, sync. They return text; search/cli.py prints it."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from alignment.config_io import ConfigError, override, to_dict
from search.config import SweepConfig, load_config, to_toml, with_flags
from search.folder import SweepFolder
from search.verdict import SweepVerdict, Verdict, state_words

# Keys a resumed sweep may change: where it runs and logs, not what it computes.
RUNTIME_KEYS = ("ray_address", "tracking.uri", "resources.concurrency", "resources.max_failures", "output_dir")


def register(sub: Any) -> None:
    p = sub.add_parser("sweep", help="run a layer x position sweep (the embedded default with no config)")
    p.add_argument("config", nargs="?", help="a TOML sweep config (default: the embedded price-tagging sweep)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--plan", action="store_true", help="check everything and print the grid; start nothing")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted sweep")
    p.add_argument("--address", help="join a running Ray cluster (auto, HOST:PORT or ray://HOST:PORT)")
    p.add_argument("--tracking-uri", help="log to this MLflow server instead of the sweep folder")
    p.add_argument("--scheduler", choices=["asha", "fifo"])
    p.add_argument("--out", help="the sweep folder, new or empty (default: sweeps/NAME-TIMESTAMP)")
    p.set_defaults(handler=sweep)
    p = sub.add_parser("report", help="rewrite a sweep's results.csv, heatmaps and verdict")
    p.add_argument("folder")
    p.set_defaults(handler=report)
    p = sub.add_parser("sync", help="upload what a sweep could not log to MLflow")
    p.add_argument("folder")
    p.add_argument("--tracking-uri")
    p.set_defaults(handler=sync)


def resolve_sweep_config(args: argparse.Namespace) -> tuple[SweepConfig, SweepFolder | None]:
    """The config to run, and the folder it resumes (None for a new sweep).

    A resumed sweep compares what was asked (a config file, or the stored config with the
    `--set` overrides applied) with what it was made by, key by key.
    """
    flags = {"scheduler": args.scheduler, "address": args.address, "tracking_uri": args.tracking_uri, "out": args.out}
    if not args.resume:
        return with_flags(load_config(args.config, args.set), **flags), None
    folder = SweepFolder(args.resume)
    stored = folder.read_config()
    folder.read_trials(), folder.read_state()  # a torn one stops the resume here, before anything is rewritten
    if args.config or args.set:
        asked = with_flags(load_config(args.config, args.set) if args.config else override(stored, *args.set),
                           **flags)
        differing = _differences(to_dict(stored), to_dict(asked))
        if differing:
            raise ConfigError(f"resume folder {args.resume!r} was made by a different config; differing keys: "
                              f"{', '.join(differing)}. Resume without a config, or start a new sweep")
        stored = asked  # equal but for where it runs and logs
    return with_flags(replace(stored, output_dir=str(folder.path)), **flags), folder


def _differences(stored: dict[str, Any], asked: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(stored) | set(asked)):
        path = f"{prefix}{key}"
        if isinstance(stored.get(key), dict) and isinstance(asked.get(key), dict):
            keys += _differences(stored[key], asked[key], f"{path}.")
        elif stored.get(key) != asked.get(key) and path not in RUNTIME_KEYS:
            keys.append(f"{path} ({stored.get(key)!r} -> {asked.get(key)!r})")
    return keys


def sweep(args: argparse.Namespace, announce: Callable[[str], None]) -> str:
    from search.sweep import check_sweep, new_folder, run_sweep

    config, folder = resolve_sweep_config(args)
    if args.print_config:
        return to_toml(config).rstrip()
    if args.plan:
        from search.plan import plan_sweep
        return plan_sweep(config)
    check_sweep(config)  # bad input fails here, in one line, before the sweep folder exists
    made = folder is None
    folder = folder or new_folder(config)
    started = time.perf_counter()
    try:
        result = run_sweep(config, folder, announce)
    except Exception:
        if made and not (folder.path / "trials").exists():  # failed before any trial ran: leave nothing half-made
            shutil.rmtree(folder.path, ignore_errors=True)
        raise
    lines = _closing_lines(folder, result.report, time.perf_counter() - started)
    if result.tracking_lost:
        lines += (f"\nMLflow at {result.tracking_lost} stopped answering during the sweep; every result is in "
                  f"{folder.path}. Upload what is missing with `align-search sync {folder.path}` once it is back")
    return lines


def _closing_lines(folder: SweepFolder, report: dict[str, Any], seconds: float) -> str:
    verdict: SweepVerdict = report["verdict"]
    stopped = report["stopped_early"]
    by = {who: sum(s["stopped_by"] == who for s in stopped) for who in ("asha", "collapse")}
    lines = [f"sweep finished in {seconds / 60:.1f} min: {report['trials']} trials, {report['finished']} ran to the "
             f"end, {len(stopped)} stopped early (ASHA {by['asha']}, collapsed boundary {by['collapse']}), "
             f"{len(report['diverged'])} diverged, {len(report['failed'])} failed; task accuracy "
             f"{verdict.task_accuracy:.3f}"]
    for name, v in verdict.causal_models.items():
        state = state_words(v.judgement)
        lines += [f"  {name}: {state.upper() if v.judgement.found else state}", f"    {_evidence_line(v)}"]
    for name, value in verdict.controls.items():
        lines.append(f"  {name} (control): best test IIA {value:.3f}")
    lines.append(f"results: {folder.path / 'results.csv'} and {folder.path / 'report.md'} (the reasons in words)")
    lines.append(f"heatmaps: {', '.join(str(p) for p in report['heatmaps'])}")
    lines.append(f"MLflow UI: align-search ui {folder.path}")
    return "\n".join(lines)


def _evidence_line(v: Verdict) -> str:
    """The selected hypothesis, its test IIA with interval, its floors and each control, on one line."""
    from search.report import control_words

    evidence = v.evidence
    parts = [f"best (by dev) {v.best}: test IIA {evidence.iia:.3f} [{evidence.ci95[0]:.3f}, {evidence.ci95[1]:.3f}]",
             f"floors no-op {evidence.floors['no_op']:.3f}, copy-source {evidence.floors['copy_source']:.3f}"]
    parts += [f"{kind.replace('_', ' ')} {control_words(c)}" for kind, c in evidence.controls.items()]
    if v.best_control is not None:
        parts.append(f"best control causal model {v.best_control:.3f}")
    return "; ".join(parts)


def report(args: argparse.Namespace, announce: Callable[[str], None]) -> str:
    from search.report import write_report

    folder = _with_results(args.folder)
    result = write_report(folder)
    return json.dumps({"verdict": result["verdict"].to_dict(), "stopped_early": len(result["stopped_early"]),
                       "files": [str(f) for f in result["files"]]}, indent=2)


def _with_results(path: str) -> SweepFolder:
    """The sweep folder at `path`, which must hold at least one trial's result (else a report has nothing)."""
    folder = SweepFolder(path)
    folder.read_config()
    specs = folder.read_trials()
    if not any(folder.summary(spec.key) or folder.status(spec.key) for spec in specs):
        raise ConfigError(f"sweep folder {path!r} must hold a trial's result to report on, got none of its "
                          f"{len(specs)} trials finished or stopped; nothing was written. Run or resume it first: "
                          f"`align-search sweep --resume {path}`")
    return folder


def sync(args: argparse.Namespace, announce: Callable[[str], None]) -> str:
    from search.report import write_report
    from search.sweep import tracker_for

    folder = SweepFolder(args.folder)
    config = folder.read_config()
    if args.tracking_uri:
        config = replace(config, tracking=replace(config.tracking, uri=args.tracking_uri))
    tracker = tracker_for(config, folder)
    tracker.start_parent(to_dict(config))
    uploaded = sum(tracker.upload_trial(spec) for spec in folder.read_trials() if folder.trial_dir(spec.key).is_dir())
    if not tracker.available:
        raise ConfigError(f"MLflow at {tracker.uri} stopped answering during sync; run it again once it is back")
    result = write_report(folder)
    tracker.finish_parent(result["parent_metrics"], result["parent_tags"], result["files"])
    return f"synced {uploaded} trials of {folder.path} to {tracker.uri}"
