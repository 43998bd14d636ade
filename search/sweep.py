"""The sweep driver: every hypothesis a Ray Tune trial, ASHA stops the weak, MLflow records all.

1. The sweep folder gets the resolved config, the trial list and the shared data (`prepare`).
2. Ray starts locally (or joins `ray_address`); each trial asks for its resources.
3. Tune runs one trial per hypothesis and seed; trials report dev IIA after every evaluation,
   and, where the scheduler or the collapse rule may stop them (`search.tune_parts.may_stop`),
   their test IIA at their best dev state so far (so a stopped trial is scored like a finished
   one; a trial nothing can stop is tested once, at its end). Once a trial's mask is near-hard,
   ASHA (metric "iia", mode max) stops weak trials at its rungs, and a stopper ends trials
   whose learned boundary collapsed to ~0 dimensions (`search/tune_parts.py`); the task's
   control causal models are never stopped by ASHA. `scheduler.kind = "fifo"` runs all.
4. A driver callback mirrors trials into MLflow and records who stopped each stopped trial.
5. The best hypotheses (by dev IIA) of each causal model get their validity controls and more
   seeds, as a second Tune run without early stopping (`search/controls.py`).
6. `report` writes results.csv, heatmaps and the verdict, also into the parent run.

`--resume DIR` starts Tune again over the same trial list: finished trials stay finished (a
trial with a summary in its folder reports it and returns), interrupted ones continue from
the checkpoint in their folder, failed ones get another try (say, once the disk has room
again), and the MLflow parent run and child runs are reused. Tune's
own restore is not used: it unpickles `tuner.pkl` from the sweep folder, and nothing from a
sweep folder is ever unpickled.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from alignment.config_io import ConfigError, to_dict
from alignment.timing import TIMINGS, Phases, phase, recording
from cluster.ray_cluster import check_fits
from search.config import SweepConfig
from search.controls import plan_controls
from search.folder import SweepFolder, TrialSpec
from search.prepare import (
    build_data,
    check_grid,
    check_positions,
    data_sets,
    model_facts,
    prompt_facts,
    resolve_model_path,
    sweep_prompts,
    template_name,
)
from search.ray_session import local_status, ray_session, trial_resources
from search.tracking import Tracker, check_tracking, default_uri

if TYPE_CHECKING:
    from alignment.models import LoadedModel

log = logging.getLogger(__name__)
TUNE_NAME = "tune"
T = TypeVar("T")
WRITE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)  # the CLI says these in one line


@dataclass
class SweepResult:
    folder: Path
    trials: int
    report: dict[str, Any]
    seconds: float
    tracking_lost: str | None = None  # the MLflow URI that stopped answering, if it did


def check_sweep(config: SweepConfig) -> None:
    """Everything that can be checked before the sweep folder is made: Ray address, MLflow, model, grid, resources.

    Writes nothing. (On a cluster joined with `ray_address`, resources are checked once joined.)
    """
    if config.ray_address:
        from cluster.ray_cluster import check_address
        check_address(config.ray_address)
    if config.tracking.uri:
        check_tracking(config.tracking.uri)
    facts = model_facts(resolve_model_path(config))
    check_grid(config, facts, template_name(config, facts.meta))
    if not config.ray_address:
        check_fits(trial_resources(config), local_status(config), "this machine")


def new_folder(config: SweepConfig) -> SweepFolder:
    if config.output_dir:
        path = Path(config.output_dir)
    else:
        path = Path("sweeps") / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = SweepFolder(path)
    if folder.exists():
        raise ConfigError(f"sweep folder {str(path)!r} already holds a sweep; resume it with "
                          f"`align-search sweep --resume {path}` or choose another --out")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"sweep folder must be a directory, got {str(path)!r}, which is a file. Choose another --out")
    held = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if held:  # someone's files: a sweep would overwrite their results.csv, report.md, ...
        raise ConfigError(f"sweep folder must be a new or empty folder, got {str(path)!r}, which holds "
                          f"{', '.join(held[:8])}{' and more' if len(held) > 8 else ''}. Choose another --out")
    _check_writable(path)
    return folder


def _check_writable(path: Path) -> None:
    made = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        try:
            probe.write_text("ok")
        finally:
            probe.unlink(missing_ok=True)
    except OSError as error:
        for folder in made:  # leave nothing behind: the folders this check made, deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise PermissionError(f"sweep folder {str(path)!r} must be writable, got {error.strerror or error} "
                              f"({error.filename or path}). Choose another --out") from None


def prepare_sweep(config: SweepConfig, folder: SweepFolder) -> list[TrialSpec]:
    """Write the config, build the data, plan the trials over its prompts and check them (idempotent)."""
    model_path = resolve_model_path(config)
    facts = model_facts(model_path)
    template = template_name(config, facts.meta)
    folder.write_config(config)
    build_data(folder, config, data_sets(config), template)
    tokenized = sweep_prompts(folder, model_path, config)
    specs = folder.read_trials()
    if not specs:
        specs = check_grid(config, facts, template, prompt_facts(*tokenized) if tokenized else None)
        folder.write_trials(specs)
    if tokenized:
        check_positions(tokenized[0], specs)
    return specs


def tracker_for(config: SweepConfig, folder: SweepFolder) -> Tracker:
    uri = config.tracking.uri or default_uri(folder)
    tracker = Tracker(folder, uri, config.tracking.experiment)
    tracker.check()
    return tracker


def run_sweep(config: SweepConfig, folder: SweepFolder, announce: Callable[[str], None] = log.info) -> SweepResult:
    """Run (or resume) the sweep in `folder`; return where the results are.

    `announce` gets the plan line (trials and estimated time) before any trial starts.
    """
    from search.report import write_report

    started = time.perf_counter()
    phases = Phases()
    with recording(phases):
        with phase("prepare"):  # bad input found here starts no Ray
            specs = [s for s in prepare_sweep(config, folder) if s.phase == "grid"]
        # One Ray for both Tune runs. It starts on a thread of its own while the driver builds the files the
        # trials share and probes their cost; the grid waits for both. It is shut down before the report.
        with ray_session(config) as session:
            tracking = alongside(partial(tracker_for, config, folder))  # MLflow's imports and store, beside the caches
            with phase("caches"):
                announce(_before_trials(config, folder, specs))
            session.wait()  # what is left of Ray's start
            with phase("tracking"):
                tracker = tracking()  # fails in one line, before any trial, when it does not answer
                tracker.start_parent(to_dict(config))
                tracker.reopen(folder.reopen_failed())  # a resumed sweep gives failed trials another chance
            with phase("grid"):
                _run_tune_phase(config, folder, specs, tracker, "grid")
            controls = plan_controls(config, folder)
            if controls:
                with phase("controls"):
                    _run_tune_phase(config, folder, controls, tracker, "controls")
        with phase("tracking"):
            _upload_missing(folder, tracker)
        with phase("report"):
            report = write_report(folder)
        with phase("tracking"):
            tracker.finish_parent(report["parent_metrics"], report["parent_tags"], report["files"])
    phases.write(folder.path / TIMINGS)
    return SweepResult(folder.path, len(specs), report, time.perf_counter() - started,
                       None if tracker.available else tracker.uri)


def alongside(work: Callable[[], T]) -> Callable[[], T]:
    """Start `work` on a thread of its own; the function returned waits for it and returns its result or
    raises its error. It runs in an empty context, without the caller's `recording`: its phases are not the caller's."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = contextvars.Context().run(work)
        except BaseException as error:  # handed to the waiting caller
            outcome["error"] = error

    thread = threading.Thread(target=run, name="align-search-alongside", daemon=True)
    thread.start()

    def wait() -> T:
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]
    return wait


def plan_line(config: SweepConfig, folder: SweepFolder, specs: list[TrialSpec], loaded: LoadedModel | None = None,
              skipped: str | None = None, shared: bool = False) -> str:
    """How many trials the grid runs and how long they should take (search/estimate.py)."""
    from search.estimate import plan_sweep

    facts = model_facts(resolve_model_path(config))
    plan = plan_sweep(config, folder, specs, facts.layers, template_name(config, facts.meta), loaded, skipped, shared)
    return plan.line(config.resources.concurrency)


def _before_trials(config: SweepConfig, folder: SweepFolder, specs: list[TrialSpec]) -> str:
    """The plan line, once the driver's model has built the files the trials share; the model is let go after."""
    loaded, skipped, shared = _driver_model(config, folder, specs)
    line = plan_line(config, folder, specs, loaded, skipped, shared)
    _release(loaded)
    return line


def _release(loaded: LoadedModel | None) -> None:
    """Give back the accelerator memory of the driver's model, which the trials are about to need."""
    if loaded is not None and next(loaded.model.parameters()).is_cuda:
        import torch

        loaded.model.to("cpu")
        torch.cuda.empty_cache()


def _driver_model(config: SweepConfig, folder: SweepFolder,
                  specs: list[TrialSpec]) -> tuple[LoadedModel | None, str | None, bool]:
    """(the model loaded in the driver or None, why not, whether the sweep's shared files are built).

    The driver loads it to build the files the trials share (search/caches.py) and to probe a
    trial's cost (search/estimate.py); not when every trial is done, or when the model is too
    large or slow to load twice (`why_not_loaded`).
    """
    from search.caches import build_shared_files, why_not_built
    from search.estimate import load_in_driver, waiting_specs, why_not_loaded

    waiting = waiting_specs(folder, specs)
    model_path = resolve_model_path(config)
    skipped = why_not_loaded(model_path)
    if skipped or not waiting:
        return None, skipped, False
    loaded = load_in_driver(config, model_path)
    reason = why_not_built(config)
    if reason is None:
        build_shared_files(config, folder, waiting, loaded)
    else:
        log.info("the trials build their shared files: %s", reason)
    return loaded, None, reason is None


def _upload_missing(folder: SweepFolder, tracker: Tracker) -> None:
    for spec in folder.read_trials():
        directory = folder.trial_dir(spec.key)
        if directory.is_dir():
            tracker.upload_trial(spec)


def _run_tune_phase(config: SweepConfig, folder: SweepFolder, specs: list[TrialSpec], tracker: Tracker,
                    phase: str) -> None:
    """A Tune run over `specs`, then one more over those that failed before their code started.

    A node lost between two trials takes the worker that Tune would reuse for the next one: that
    trial fails before it starts, and Tune's retries can all land on the lost worker within a
    second (seen in the node-loss test, `ActorUnavailableError`). Nothing of it ran, so it is run
    again, once; a trial that failed in its own code (it has an attempt on record) is not.
    """
    _run_tune(config, folder, specs, tracker, phase)
    keys = folder.reopen_failed(among={s.key for s in specs}, unstarted_only=True)
    if keys:
        log.warning("%d trial(s) failed before they started (their node or worker was lost); running them once "
                    "more", len(keys))
        tracker.reopen(keys)
        _run_tune(config, folder, [s for s in specs if s.key in keys], tracker, phase)


def _run_tune(config: SweepConfig, folder: SweepFolder, specs: list[TrialSpec], tracker: Tracker,
              phase: str) -> None:
    """One Tune run over `specs`: the grid (config's scheduler, collapse rule) or the controls (FIFO, no stopper)."""
    from ray import tune

    from search.trainable import run_sweep_trial
    from search.tune_parts import SweepCallback, early_stopping, tune_config

    callback: SweepCallback | None = None
    try:
        resources = {"cpu": config.resources.cpu, "gpu": config.resources.gpu, **config.resources.custom}
        attempt = folder.update_state(attempts=folder.read_state().get("attempts", 0) + 1)["attempts"]
        stopping = early_stopping(config, specs, phase)
        callback = SweepCallback(folder, tracker, stopping.ledger, specs)
        order = specs if phase == "grid" and config.scheduler.kind == "asha" else longest_first(config, specs)
        tuner = tune.Tuner(tune.with_resources(run_sweep_trial, resources), param_space={
            "trial": tune.grid_search([s.key for s in order]), "sweep_dir": str(folder.path.resolve())},
            tune_config=tune_config(config, stopping.scheduler),
            run_config=tune.RunConfig(
                name=f"{TUNE_NAME}-{attempt}-{phase}", storage_path=str((folder.path / "ray").resolve()),
                callbacks=[callback], stop=stopping.stopper, verbose=0,
                failure_config=tune.FailureConfig(max_failures=config.resources.max_failures)))
        try:
            tuner.fit()
        except Exception as error:  # Tune wraps what a callback raised (a full disk, say) in a TuneError
            written = _write_error(error)
            if written is None:
                raise
            raise written from None
        callback.drain()
    finally:
        if callback is not None:  # queued MLflow calls finish even when Tune stops with an error
            callback.stop_mirror()


def longest_first(config: SweepConfig, specs: list[TrialSpec]) -> list[TrialSpec]:
    """`specs` in the order to start them where no scheduler compares them (FIFO): those whose steps run the most
    decoder layers first, so that the short trials fill the slots at the end (on the SmolLM2 IOI grid, the last
    trial started alone 5 s before the end). ASHA keeps the grid's order: its rungs depend on who reports first."""
    from search.estimate import depth_of

    layers = model_facts(resolve_model_path(config)).layers
    return sorted(specs, key=lambda spec: -depth_of(spec.hypothesis, layers))


def _write_error(error: BaseException) -> OSError | None:
    """The failed write (disk full, over quota or a size limit, read-only) behind `error`, if one is."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in WRITE_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    return None
