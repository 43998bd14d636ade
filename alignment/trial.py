"""One trial from start to finish: data, model, prealign accuracy, training, test IIA, outputs.

The output folder holds `config.json` (fully resolved), `metrics.jsonl` (one row per log and
evaluation), `intervention/` (the best state by dev IIA) and `summary.json`:
`prealign_accuracy`, `best_dev_iia` (and `best_step`), `test_iia` at that best state with its
bootstrap 95% interval `test_iia_ci_low`/`test_iia_ci_high` and the per-pair correctness
`test_correct` ("0"/"1" per test pair, `alignment.intervals`), `test_iia_full_vocab`, the
test pairs' floors `floor_no_op` and `floor_copy_source` (`causal_models.pairs.floors`),
`boundary_widths` (hard dimensions per variable) of `hidden_size`, and the context needed to
read them. `run_trial` returns the same as a `TrialResult` (`alignment.results`), whose fields
are these keys.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignment.batches import TrialData, build_trial_data
from alignment.config import TrialConfig
from alignment.config_io import to_dict
from alignment.frozen import FrozenSite
from alignment.interchange import Interchange, PositionedPairs
from alignment.intervals import bootstrap_interval, encode
from alignment.interventions import build_intervention
from alignment.metrics import Accuracy, correct_per_pair, task_accuracy
from alignment.models import LoadedModel, load_model
from alignment.parallel import DataParallel
from alignment.persistence import atomic_write_text, model_identity, save_intervention
from alignment.prompts import PromptTable
from alignment.results import TrialResult
from alignment.sites import component_site
from alignment.timing import phase
from alignment.train import MayStop, Report, TrainResult, TrainState, train
from causal_models import Hypothesis, get_task, make_splits, to_dataset
from causal_models.dataset import row_floors

log = logging.getLogger(__name__)
Rows = Sequence[Mapping[str, Any]]


@dataclass
class TrialInputs:
    """What a sweep shares between trials instead of rebuilding it: the model and the pairs."""

    loaded: LoadedModel | None = None
    splits: Mapping[str, Rows] | None = None
    cache_dir: str | None = None
    table_prompts: Sequence[tuple[str, Mapping[str, int]]] = ()


def resolve(config: TrialConfig, loaded: LoadedModel) -> TrialConfig:
    """Fill in the defaults that depend on the task and model: causal model, variables, template."""
    task = get_task(config.task)
    causal_model = task.causal_model(config.causal_model)
    variables = config.variables or causal_model.default_variables
    for name in variables:
        causal_model.variable(name)
    template = config.data.template or loaded.meta.get("template") or task.default_template
    task.template(template)
    return replace(config, causal_model=causal_model.name, variables=tuple(variables),
                   data=replace(config.data, template=template))


def hypothesis_of(config: TrialConfig) -> Hypothesis:
    return Hypothesis(config.causal_model or "", config.variables, config.layer or 0, config.position,
                      config.intervention.kind, config.source_position, config.component, config.position_tokens)


def build_splits(config: TrialConfig) -> dict[str, Rows]:
    """Train, dev and (held-out) test pairs as dataset rows."""
    task = get_task(config.task)
    data = config.data
    pair_sets = make_splits(task, config.causal_model, config.variables,
                            {"train": data.n_train, "dev": data.n_dev, "test": data.n_test}, data.seed,
                            balance_labels=data.balance_labels, max_unchanged=data.max_unchanged,
                            per_pair=data.per_pair)
    template = task.template(data.template)
    return {split: list(to_dataset(pairs, template)) for split, pairs in pair_sets.items()}


@dataclass
class PreparedTrial:
    """A trial ready to train or evaluate: resolved config, model, token tensors, the site, positioned pairs."""

    config: TrialConfig
    loaded: LoadedModel
    data: TrialData
    interchange: Interchange
    positioned: dict[str, PositionedPairs]
    prealign: Accuracy
    floors: dict[str, float]


def prepare_trial(config: TrialConfig, output: Path, inputs: TrialInputs,
                  parallel: DataParallel | None = None) -> PreparedTrial:
    """Resolve the config, write config.json, build the data and the site, measure prealign accuracy."""
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    torch.manual_seed(config.train.seed)
    with phase("model"):
        loaded = inputs.loaded or load_model(config.model_path, config.train.bf16, config.trust_remote_code,
                                             device=config.train.device, packed=config.train.packed)
    config = resolve(config, loaded)
    with phase("data"):
        splits = inputs.splits or build_splits(config)
        task = get_task(config.task)
        answers = sorted(set(task.template(config.data.template).answers.values()))
        data = build_trial_data(loaded.tokenizer, splits, config.variables, answers, inputs.table_prompts)
    with phase("site"):
        interchange = build_interchange(config, loaded.model, data.table, inputs.cache_dir)
        positioned = {name: interchange.locate(pairs) for name, pairs in data.splits.items()}
    # Everything is checked (positions included) before the first write: bad input changes no file.
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "config.json", json.dumps(to_dict(config), indent=2) + "\n")
    with phase("prealign"):
        prealign = _prealign(interchange, data, config, parallel)
    log.info("prealign accuracy %.3f (task accuracy of the un-intervened model)", prealign.answers)
    return PreparedTrial(config, loaded, data, interchange, positioned, prealign, row_floors(splits["test"]))


def run_trial(config: TrialConfig, output_dir: str | Path, inputs: TrialInputs | None = None,
              report: Report | None = None, resume: TrainState | None = None,
              parallel: DataParallel | None = None, may_stop: MayStop | None = None) -> TrialResult:
    """Train and evaluate one hypothesis; write the outputs; return the result (also summary.json).

    With `report` (a sweep), an evaluation at which the caller may stop the trial also
    evaluates the test split at the best state so far and hands it to `report` as the row's
    "test_at_best" (`iia_fields` plus "step" and "best_dev_iia" of that state, and its
    "boundary_widths"): a trial stopped there has its test IIA at its best dev state. The
    caller says where it may stop the trial with `may_stop` (from the evaluation's row); without
    it, at every evaluation that moves the best state (`_with_test_at_best`). A trial that runs
    to its end is scored by the test evaluation after training, so a caller that can stop it
    nowhere pays for no other. `parallel` is for a worker of a sharded trial
    (cluster.run_sharded_trial), which runs this on every worker with its part of each batch.
    """
    started = time.perf_counter()
    output = Path(output_dir)
    trial = prepare_trial(config, output, inputs or TrialInputs(), parallel)
    config, interchange = trial.config, trial.interchange
    if resume is not None:
        _truncate_metrics(output / "metrics.jsonl", resume.step)
    else:  # a new run in the folder of an earlier one (align --overwrite): its results go first
        (output / "summary.json").unlink(missing_ok=True)
        shutil.rmtree(output / "intervention", ignore_errors=True)
    if report is not None:
        report = _with_test_at_best(report, trial, parallel, may_stop)
    with open(output / "metrics.jsonl", "w" if resume is None else "a") as metrics:
        def record(row: dict[str, Any]) -> None:
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
        if resume is None:
            record({"step": 0, "prealign_accuracy": trial.prealign.answers,
                    "prealign_accuracy_full_vocab": trial.prealign.full_vocab})
        result = train(interchange, trial.positioned["train"], trial.positioned["dev"], trial.data.answer_ids,
                       config.intervention, config.train, record=record, report=report, resume=resume,
                       parallel=parallel)
    interchange.intervention.load_state_dict(result.best_intervention)
    with phase("test_eval"):
        test = iia_fields(*correct_per_pair(interchange, trial.positioned["test"], trial.data.answer_ids,
                                             config.train.eval_batch_size, parallel))
    summary = _summary(trial, result, test, time.perf_counter() - started)
    with phase("save"):
        save_intervention(output / "intervention", interchange.intervention, _description(config, summary),
                          config.intervention)
        atomic_write_text(output / "summary.json", json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def iia_fields(answers: Tensor, full_vocab: Tensor) -> dict[str, Any]:
    """The test IIA of per-pair correctness, its bootstrap 95% interval, and the correctness itself."""
    low, high = bootstrap_interval(answers.int().tolist())
    return {"test_iia": int(answers.sum()) / len(answers), "test_iia_full_vocab": int(full_vocab.sum()) / len(answers),
            "n_test": len(answers), "test_iia_ci_low": low, "test_iia_ci_high": high,
            "test_correct": encode(answers.tolist())}


def _with_test_at_best(report: Report, trial: PreparedTrial, parallel: DataParallel | None,
                       may_stop: MayStop | None = None) -> Report:
    """`report`, with the row's "test_at_best" (the test split at the best state so far) wherever `may_stop`
    says the caller may stop the trial, or, without it, wherever the best state moves to this evaluation.
    Never at the last evaluation: the summary's test evaluation follows it.

    Each best state is evaluated once; a later report with the same best state carries the same
    fields. The best state can be older than the current one (it moved at an evaluation where the
    trial could not be stopped): it is then loaded for the test evaluation (`_at_state`). The best
    state can also move without the best dev IIA rising: the first near-hard evaluation replaces a
    soft-phase best (`alignment.train._better`).
    """
    when = may_stop or _best_is_here
    tested: list[dict[str, Any]] = []  # the fields of the best state evaluated last

    def wrapped(row: dict[str, Any], snapshot: Callable[[], TrainState]) -> None:
        if row.get("final") or not when(row):
            report(row, snapshot)
            return
        shared = _once(snapshot)
        if not tested or tested[0]["step"] != row["best_step"]:
            tested[:] = [_test_at_best(trial, row, shared, parallel)]
        report({**row, "test_at_best": dict(tested[0])}, shared)
    return wrapped


def _best_is_here(row: dict[str, Any]) -> bool:
    return bool(row["best_step"] == row["step"])


def _test_at_best(trial: PreparedTrial, row: dict[str, Any], snapshot: Callable[[], TrainState],
                  parallel: DataParallel | None) -> dict[str, Any]:
    """The test fields and hard widths of the best state as of `row`: the current state, or the saved best."""
    best = None
    if row["best_step"] != row["step"]:
        best = snapshot().best_intervention
        if best is None:
            raise RuntimeError(f"the best state (step {row['best_step']}) is missing from the training state")
    with _at_state(trial.interchange.intervention, best):
        with phase("test_eval"):
            answers, full = correct_per_pair(trial.interchange, trial.positioned["test"], trial.data.answer_ids,
                                             trial.config.train.eval_batch_size, parallel)
        return {"step": row["best_step"], "best_dev_iia": row["best_dev_iia"], **iia_fields(answers, full),
                **_site_fields(trial)}


@contextmanager
def _at_state(intervention: torch.nn.Module, state: Mapping[str, Tensor] | None) -> Iterator[None]:
    """`intervention` at `state` (parameters and buffers, the temperature too) for the block, then back to
    exactly what it was (None: as it is). Values are copied in place, so the optimizer keeps its
    parameters; no rotation is cached between calls (`Basis.materialized` computes it per block)."""
    if state is None:
        yield
        return
    current = {name: value.detach().clone() for name, value in intervention.state_dict().items()}
    intervention.load_state_dict(state)
    try:
        yield
    finally:
        intervention.load_state_dict(current)


def _once(snapshot: Callable[[], TrainState]) -> Callable[[], TrainState]:
    """`snapshot`, taken at most once: the test evaluation and the caller's report (its checkpoint) share one
    copy of the training state, which the restored intervention still matches."""
    taken: list[TrainState] = []

    def shared() -> TrainState:
        if not taken:
            taken.append(snapshot())
        return taken[0]
    return shared


def _site_fields(trial: PreparedTrial) -> dict[str, Any]:
    """The current hard widths and the site's size: what a same-width random rotation control needs."""
    intervention = trial.interchange.intervention
    return {"boundary_widths": dict(zip(trial.config.variables, intervention.mask.sizes())),
            "hidden_size": intervention.hidden_size, **{f"floor_{k}": v for k, v in trial.floors.items()}}


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows written after `step` (they will be written again by the resumed run)."""
    if path.is_file():
        rows = [line for line in path.read_text().splitlines() if _step_of(line) <= step]
        atomic_write_text(path, "".join(f"{row}\n" for row in rows))


def _step_of(line: str) -> float:
    """A metrics row's step; infinity for a line torn by a crash or a full disk (it is dropped)."""
    try:
        return float(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError):
        return float("inf")


def build_interchange(config: TrialConfig, model: Any, table: PromptTable, cache_dir: str | None = None) -> Interchange:
    """What a trial trains: `model` frozen at the config's site over `table`'s prompts, with a fresh
    intervention of the config's kind (one block per variable, seeded by `train.seed`).

    `config` must name its variables (a resolved config: `resolve(config, loaded)`).
    """
    site = config.site or component_site(model, config.layer or 0, config.component)
    train = config.train
    frozen = FrozenSite(model, site, table, train.cache, train.cache_budget_mb, cache_dir, suffix=train.suffix_only,
                        kv_budget_mb=train.kv_budget_mb)
    intervention = build_intervention(
        config.intervention.kind, frozen.hidden_size(), len(config.variables),
        subspace_dim=config.intervention.subspace_dim, rotation_map=config.intervention.rotation_map,
        init_width=config.intervention.init_width, soft_start=config.intervention.soft_start,
        log_boundary=config.intervention.log_boundary, seed=config.train.seed).to(frozen.device)
    return Interchange(frozen, intervention, config.position, config.source_position)


def _prealign(interchange: Interchange, data: TrialData, config: TrialConfig,
              parallel: DataParallel | None = None) -> Any:
    rows = torch.cat([data.split("dev").base_rows, data.split("test").base_rows])
    labels = torch.cat([data.split("dev").base_labels, data.split("test").base_labels])
    return task_accuracy(interchange, rows, labels, data.answer_ids, config.train.eval_batch_size, parallel)


def _summary(trial: PreparedTrial, result: TrainResult, test: dict[str, Any], seconds: float) -> TrialResult:
    config, interchange = trial.config, trial.interchange
    examples = result.steps * config.train.batch_size * config.train.gradient_accumulation
    return TrialResult(
        hypothesis=hypothesis_of(config).id, task=config.task, causal_model=config.causal_model or "",
        variables=config.variables, layer=config.layer, site=interchange.frozen.site,
        component=config.component, position=config.position,
        position_label=hypothesis_of(config).label, source_position=config.source_position or config.position,
        intervention=config.intervention.kind, seed=config.train.seed,
        prealign_accuracy=trial.prealign.answers, prealign_accuracy_full_vocab=trial.prealign.full_vocab,
        best_dev_iia=result.best_dev_iia, best_step=result.best_step, steps=result.steps, **test,
        test_unchanged_share=trial.floors["no_op"], **_site_fields(trial), cached=interchange.frozen.cached,
        model=model_identity(trial.loaded.model, config.model_path),
        seconds=round(seconds, 2), train_examples_per_second=round(examples / max(seconds, 1e-9), 1),
    )


def _description(config: TrialConfig, summary: TrialResult) -> dict[str, Any]:
    return {"task": config.task, "causal_model": config.causal_model, "variables": list(config.variables),
            "template": config.data.template, "site": summary.site, "layer": config.layer,
            "position": config.position, "source_position": summary.source_position,
            "model": summary.model, "metrics": summary.metrics}
