"""The Ray Tune trainable: one trial of a sweep, run inside a Ray worker.

It reads everything from the sweep folder (config, its trial spec, the shared pairs and prompt
list, the per-layer hidden-state cache), trains through `alignment.trial.run_trial`, and
reports dev IIA to Tune after every evaluation, with `hard_reports` (evaluations since the
mask became near-hard, `search/tune_parts.py`), so ASHA can stop it. After every evaluation
it also writes a checkpoint into its trial folder (`search/checkpoint.py`), so a retried
trial or a resumed sweep continues from there, and, at an evaluation where the sweep may stop
the trial (`search.tune_parts.may_stop`), `best.json`: the test IIA (with its interval and
per-pair correctness) and the hard widths at the best dev state so far, which is all the
report needs of a trial stopped early. Only a stopped trial's best.json is read: a trial that
nothing can stop (FIFO without the collapse rule, the controls phase) evaluates its test split
once, at its end, and one that can be stopped evaluates each best state once, where it might be.

A trial whose summary (or final status) already exists reports it and returns: a resumed
sweep never re-runs finished work. A diverged trial (NaN loss) is recorded as such and ends
normally, so it is neither retried nor fatal. Each start of a trial appends a line to its
`attempts.jsonl`: process, node, and the step it resumed from.

The random-rotation and full-swap controls are not trained (`alignment.untrained`): the
random rotation takes the hard widths of the trial it controls (its summary or best.json)
and is evaluated over `controls.random_draws` draws. They run unsharded, also in a sweep with
`hypotheses.shard > 1` (evaluation only, but the whole model in one worker).

The loaded model is kept per worker process: with `reuse_actors`, a worker runs many trials
and loads the model once. A sweep with `hypotheses.shard = N > 1` runs each trial as a Ray
Train job of N workers sharing the model through DeepSpeed ZeRO-3 (`cluster.sharded`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from alignment.models import LoadedModel, load_model, read_meta
from alignment.results import TrialResult, UntrainedResult
from alignment.timing import TIMINGS, Phases, phase, recording
from alignment.train import TrainState, TrialDiverged
from alignment.trial import TrialInputs, run_trial
from alignment.untrained import run_untrained
from search.checkpoint import read_checkpoint, write_checkpoint
from search.folder import SweepFolder
from search.prepare import load_prompts, load_rows, resolve_model_path, template_name, trial_config

_MODELS: dict[tuple[str, bool, bool], LoadedModel] = {}
FINAL_KEYS = ("prealign_accuracy", "best_dev_iia", "test_iia", "test_iia_full_vocab", "test_iia_ci_low",
              "test_iia_ci_high", "best_step", "steps", "floor_no_op", "floor_copy_source", "seconds")
UNTRAINED = ("random_rotation", "full_swap")


def _model(path: str, train: Any, device: str | None) -> LoadedModel:
    key = (path, train.bf16, train.packed)
    if key not in _MODELS:
        _MODELS.clear()  # one model per worker at a time
        _MODELS[key] = load_model(path, train.bf16, device=device, packed=train.packed)
    return _MODELS[key]


# A worker runs many trials of one sweep: their pairs and the sweep's prompt list, written once
# before any trial (search/prepare.py), are read once per worker, and again only if rewritten.
def _stamped(path: Path) -> tuple[str, int]:
    """(path, its modification time in ns; -1 if missing): a cache key that changes when the file does."""
    return str(path), path.stat().st_mtime_ns if path.exists() else -1


@functools.lru_cache(maxsize=8)
def _rows(done: str, stamp: int) -> dict[str, list[dict[str, Any]]]:
    return load_rows(Path(done).parent)


@functools.lru_cache(maxsize=1)
def _prompts(path: str, stamp: int) -> list[tuple[str, dict[str, int]]]:
    return load_prompts(Path(path))


def _node() -> dict[str, str]:
    import ray
    return {"node_id": ray.get_runtime_context().get_node_id(), "pid": str(os.getpid())}


def run_sweep_trial(params: dict[str, Any]) -> None:
    """Tune function trainable; `params` holds "sweep_dir" and "trial" (the trial key)."""
    from ray import tune

    folder = SweepFolder(params["sweep_dir"])
    key = params["trial"]
    done, status = folder.summary(key), folder.status(key)
    if done is not None:  # finished before an interruption: report it, do not re-run
        tune.report({**_final_of(done), **_node(), "done": True})
        return
    if status is not None:  # diverged, failed or stopped before an interruption: the same
        tune.report({**_final(status), **_node(), "iia": status.get("best_dev_iia", 0.0), "done": True})
        return
    phases = Phases()
    with recording(phases):
        _run(tune, folder, key, phases)


def _run(tune: Any, folder: SweepFolder, key: str, phases: Phases) -> None:
    """The trial itself, its phases timed into `phases` (written as the trial folder's timings.json)."""
    trial_dir = folder.trial_dir(key)
    with phase("inputs"):
        resume = read_checkpoint(trial_dir / "checkpoint")
        folder.record_attempt(key, **_node(), resumed_from_step=resume.step if resume else 0)
        config = folder.read_config()
        spec = folder.trial(key)
    model_path = spec_model_path(folder, spec, config)
    cpus = max(1, int(config.resources.cpu))
    torch.set_num_threads(config.train.threads or cpus)
    device = "cuda" if config.resources.gpu > 0 and torch.cuda.is_available() else None
    with phase("model"):
        loaded = _model(model_path, config.train, device) if config.hypotheses.shard == 1 else None
    with phase("inputs"):
        template = template_name(config, loaded.meta if loaded else read_meta(model_path))
        trial = trial_config(config, spec, model_path, template)
        rows = _rows(*_stamped(folder.data_dir(spec.hypothesis.causal_model, spec.hypothesis.variables) / "done"))
        inputs = TrialInputs(loaded, rows, str(folder.cache_dir), _prompts(*_stamped(folder.prompts_file)))
    hard = _hard_reports(config, spec.hypothesis.intervention)
    reporter = _reporter(tune, folder, key, hard, phases)
    may_stop = _may_stop(config, spec, hard)
    summary: TrialResult | UntrainedResult
    try:
        if spec.role in UNTRAINED:
            summary = run_untrained(trial, trial_dir, inputs, _widths_of(folder, spec.target or ""),
                                    config.controls.random_draws)
        elif config.hypotheses.shard > 1:
            from cluster.sharded import run_sharded_trial
            summary = run_sharded_trial(trial, trial_dir, config.hypotheses.shard, reporter, resume,
                                        splits=rows, use_gpu=config.resources.gpu > 0, may_stop=may_stop)
        else:
            summary = run_trial(trial, trial_dir, inputs, report=reporter, resume=resume, may_stop=may_stop)
    except TrialDiverged as error:
        folder.write_status(key, status="diverged", error=str(error))
        phases.write(trial_dir / TIMINGS)
        tune.report({"iia": 0.0, "status": "diverged", "done": True, **_node()})
        return
    phases.write(trial_dir / TIMINGS)
    tune.report({**_final_of(summary), **_node(), "done": True})


def spec_model_path(folder: SweepFolder, spec: Any, config: Any) -> str:
    """The model a trial runs on: the sweep's, or its randomly initialised copy for that control."""
    path = resolve_model_path(config)
    if spec.role == "random_model":
        return str(folder.path / "random_model")
    return path


def _widths_of(folder: SweepFolder, target: str) -> dict[str, int] | None:
    """The hard widths of the trial a random rotation controls: at its end, or at its best dev state if stopped."""
    result = folder.summary(target)
    return result.boundary_widths if result is not None else (folder.best(target) or {}).get("boundary_widths")


def _final_of(result: TrialResult | UntrainedResult) -> dict[str, Any]:
    """A result's last report: its scores, and "iia" to rank by (a trained trial's best dev IIA; an
    untrained control has only its test IIA)."""
    iia = result.best_dev_iia if isinstance(result, TrialResult) else result.test_iia
    return {**_final(result.to_dict()), "iia": iia}


def _final(summary: dict[str, Any]) -> dict[str, Any]:
    """The scores Tune shows, from a summary.json's data or a final status.json."""
    final = {key: summary[key] for key in FINAL_KEYS if key in summary}
    if "boundary_widths" in summary:
        final["min_width"] = min(summary["boundary_widths"].values())
    if "status" in summary:
        final["status"] = summary["status"]
    return final


def _hard_reports(config: Any, kind: str) -> Callable[[int], int]:
    """Evaluations so far after the mask became near-hard, by step (see search/tune_parts.py)."""
    from alignment.train import total_steps
    from search.tune_parts import first_hard_step, hard_reports

    total = total_steps(config.data.n_train, config.train)
    hard_step = first_hard_step(kind, total, config.intervention)
    return lambda step: hard_reports(step, total, config.train.eval_every, hard_step)


def _judged_fields(row: dict[str, Any], hard: Callable[[int], int]) -> dict[str, Any]:
    """What the scheduler and the stopper judge an evaluation's report by (`search.tune_parts.may_stop`)."""
    return {"hard_reports": hard(row["step"]), "min_width": row["min_width"], "final": row["final"]}


def _may_stop(config: Any, spec: Any, hard: Callable[[int], int]) -> Callable[[dict[str, Any]], bool]:
    """Whether the sweep may stop this trial at an evaluation, from its row: the scheduler's and the stopper's
    conditions (`search.tune_parts.may_stop`) on what the reporter sends Tune. Picklable (cloudpickle), for the
    workers of a sharded trial, which evaluate the test split."""
    from search.tune_parts import StopRule

    rule = StopRule.of(config, spec)
    return lambda row: rule(_judged_fields(row, hard))


def _reporter(tune: Any, folder: SweepFolder, key: str, hard: Callable[[int], int], phases: Phases) -> Any:
    trial_dir = folder.trial_dir(key)

    def report(row: dict[str, Any], snapshot: Any) -> None:
        with phase("checkpoint"):
            state: TrainState = snapshot()
            write_checkpoint(state, trial_dir / "checkpoint")
            if "test_at_best" in row:
                folder.write_best(key, row["test_at_best"])
            phases.write(trial_dir / TIMINGS)  # a trial stopped at this report keeps its phases so far
        with phase("tune_report"):
            tune.report({"iia": row["dev_iia"], "dev_iia": row["dev_iia"],
                         "dev_iia_full_vocab": row["dev_iia_full_vocab"], "step": row["step"],
                         **_judged_fields(row, hard), "temperature": row["temperature"], **_node()})
    return report
