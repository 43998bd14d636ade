"""One trial from start to finish: data, model, prealign accuracy, training, test IIA, outputs.

The output folder holds `config.json` (fully resolved), `metrics.jsonl` (one row per log and
evaluation), `intervention/` (the best state by dev IIA) and `summary.json`:
`prealign_accuracy`, `best_dev_iia`, `test_iia`, `test_iia_full_vocab`, `boundary_widths`
(dimensions per variable) and the context needed to read them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from alignment.batches import TrialData, build_trial_data
from alignment.config import TrialConfig
from alignment.config_io import to_dict
from alignment.frozen import FrozenSite
from alignment.interchange import Interchange
from alignment.interventions import build_intervention
from alignment.metrics import interchange_accuracy, task_accuracy
from alignment.models import LoadedModel, load_model
from alignment.parallel import DataParallel
from alignment.persistence import atomic_write_text, model_identity, save_intervention
from alignment.sites import layer_site
from alignment.train import Report, TrainState, train
from causal_models import Hypothesis, get_task, make_splits, to_dataset

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
                      config.intervention.kind, config.source_position)


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


def run_trial(config: TrialConfig, output_dir: str | Path, inputs: TrialInputs | None = None,
              report: Report | None = None, resume: TrainState | None = None,
              parallel: DataParallel | None = None) -> dict[str, Any]:
    """Train and evaluate one hypothesis; write the outputs; return the summary.

    `parallel` is for a worker of a sharded trial (cluster.run_sharded_trial), which runs this
    on every worker with its part of each batch.
    """
    started = time.perf_counter()
    inputs = inputs or TrialInputs()
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    torch.manual_seed(config.train.seed)
    loaded = inputs.loaded or load_model(config.model_path, config.train.bf16, config.trust_remote_code)
    config = resolve(config, loaded)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "config.json", json.dumps(to_dict(config), indent=2) + "\n")
    splits = inputs.splits or build_splits(config)
    task = get_task(config.task)
    answers = sorted(set(task.template(config.data.template).answers.values()))
    data = build_trial_data(loaded.tokenizer, splits, config.variables, answers, inputs.table_prompts)
    interchange = _interchange(config, loaded, data, inputs.cache_dir)
    prealign = _prealign(interchange, data, config, parallel)
    log.info("prealign accuracy %.3f (task accuracy of the un-intervened model)", prealign.answers)
    positioned = {name: interchange.locate(pairs) for name, pairs in data.splits.items()}
    if resume is not None:
        _truncate_metrics(output / "metrics.jsonl", resume.step)
    with open(output / "metrics.jsonl", "w" if resume is None else "a") as metrics:
        def record(row: dict[str, Any]) -> None:
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
        if resume is None:
            record({"step": 0, "prealign_accuracy": prealign.answers,
                    "prealign_accuracy_full_vocab": prealign.full_vocab})
        result = train(interchange, positioned["train"], positioned["dev"], data.answer_ids, config.intervention,
                       config.train, record=record, report=report, resume=resume, parallel=parallel)
    interchange.intervention.load_state_dict(result.best_intervention)
    test = interchange_accuracy(interchange, positioned["test"], data.answer_ids, config.train.eval_batch_size,
                                parallel)
    summary = _summary(config, loaded, interchange, data, prealign, result, test, time.perf_counter() - started)
    save_intervention(output / "intervention", interchange.intervention, _description(config, loaded, summary))
    atomic_write_text(output / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


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


def _interchange(config: TrialConfig, loaded: LoadedModel, data: TrialData, cache_dir: str | None) -> Interchange:
    site = config.site or layer_site(loaded.model, config.layer or 0)
    frozen = FrozenSite(loaded.model, site, data.table, config.train.cache, config.train.cache_budget_mb, cache_dir)
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


def _summary(config: TrialConfig, loaded: LoadedModel, interchange: Interchange, data: TrialData, prealign: Any,
             result: Any, test: Any, seconds: float) -> dict[str, Any]:
    test_pairs = data.split("test")
    sizes = interchange.intervention.mask.sizes()
    examples = result.steps * config.train.batch_size * config.train.gradient_accumulation
    return {
        "hypothesis": hypothesis_of(config).id, "task": config.task, "causal_model": config.causal_model,
        "variables": list(config.variables), "layer": config.layer, "site": interchange.frozen.site,
        "position": config.position, "source_position": config.source_position or config.position,
        "intervention": config.intervention.kind, "seed": config.train.seed,
        "prealign_accuracy": prealign.answers, "prealign_accuracy_full_vocab": prealign.full_vocab,
        "best_dev_iia": result.best_dev_iia, "best_step": result.best_step, "steps": result.steps,
        "test_iia": test.answers, "test_iia_full_vocab": test.full_vocab, "n_test": test.n,
        "test_unchanged_share": float((test_pairs.labels == test_pairs.base_labels).float().mean()),
        "boundary_widths": dict(zip(config.variables, sizes)), "hidden_size": interchange.intervention.hidden_size,
        "cached": interchange.frozen.cached, "model": model_identity(loaded.model, config.model_path),
        "seconds": round(seconds, 2), "train_examples_per_second": round(examples / max(seconds, 1e-9), 1),
    }


def _description(config: TrialConfig, loaded: LoadedModel, summary: dict[str, Any]) -> dict[str, Any]:
    return {"task": config.task, "causal_model": config.causal_model, "variables": list(config.variables),
            "template": config.data.template, "site": summary["site"], "layer": config.layer,
            "position": config.position, "source_position": summary["source_position"],
            "subspace_dim": config.intervention.subspace_dim, "rotation_map": config.intervention.rotation_map,
            "model": summary["model"], "metrics": {k: summary[k] for k in (
                "prealign_accuracy", "best_dev_iia", "test_iia", "test_iia_full_vocab")}}
