"""Before any trial runs: resolve the model, enumerate the trials, build the shared data once.

Counterfactual pairs are built once per (causal model, variables) with fixed seeds and saved
in the sweep folder; every trial of that causal model reads them. Every prompt of every
dataset goes into one list, in a fixed order, so that all trials tokenize the same prompt
table and share one hidden-state cache per layer.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alignment.config import TrialConfig
from alignment.config_io import ConfigError
from alignment.models import ModelLoadError, locate_model, model_config, read_meta
from alignment.persistence import atomic_write_text
from causal_models import enumerate_hypotheses, get_task, make_splits, parse_layers, to_dataset
from search.config import SweepConfig
from search.folder import SweepFolder, TrialSpec, replacing

log = logging.getLogger(__name__)
SPLITS = ("train", "dev", "test")


def resolve_model_path(config: SweepConfig) -> str:
    """The config's model, or the model align-search ships for the task."""
    if config.model_path:
        return config.model_path
    from alignment.taskmodels import shipped_model_path
    return str(shipped_model_path(config.task))


@dataclass(frozen=True)
class ModelFacts:
    """What the sweep checks its grid against, read without loading the weights."""

    layers: int
    hidden_size: int | None
    meta: dict[str, Any]


def model_facts(path: str) -> ModelFacts:
    """Decoder layer count, hidden size and align_search.json meta of a model folder or GGUF file."""
    locate_model(Path(path))  # missing, incomplete, pickled weights, GGUF without its package: one clear error
    config = model_config(path)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    if not isinstance(layers, int):
        raise ModelLoadError(f"cannot read the layer count of {path!r} from its config")
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    return ModelFacts(layers, hidden if isinstance(hidden, int) else None, read_meta(path))


def template_name(config: SweepConfig, meta: dict[str, Any]) -> str:
    task = get_task(config.task)
    name = config.data.template or meta.get("template") or task.default_template
    task.template(name)
    return str(name)


def plan_trials(config: SweepConfig, n_layers: int, template: str) -> list[TrialSpec]:
    """The grid of the config's hypotheses, one trial per seed."""
    task = get_task(config.task)
    grid = config.hypotheses
    prompt_template = task.template(template)
    positions = (list(prompt_template.position_names) if grid.positions == "all" else
                 list(grid.positions) if not isinstance(grid.positions, str) else [grid.positions])
    try:
        layers = parse_layers(grid.layers if isinstance(grid.layers, str) else list(grid.layers), n_layers)
    except ValueError as error:  # a layer outside the model, an empty or malformed list
        raise ConfigError(f"hypotheses.layers: {error}") from None
    hypotheses = enumerate_hypotheses(task, layers, list(grid.causal_models),
                                      [list(v) for v in grid.variables] or None, positions,
                                      list(grid.interventions), template)
    return [TrialSpec(h, seed) for h in hypotheses for seed in grid.seeds]


def check_grid(config: SweepConfig, facts: ModelFacts, template: str) -> list[TrialSpec]:
    """The planned grid, checked against the model before any trial starts (a trial would fail much later)."""
    specs = plan_trials(config, facts.layers, template)
    for spec in specs:
        check_width(spec.hypothesis.intervention, config.intervention.subspace_dim, len(spec.hypothesis.variables),
                    facts.hidden_size)
    return specs


def check_width(kind: str, subspace_dim: int | None, n_variables: int, hidden_size: int | None) -> None:
    """A DAS or low-rank subspace (or any kind's `subspace_dim`) must fit in the model's hidden size."""
    width = {"das": (subspace_dim or 1) * n_variables, "low_rank": subspace_dim or 1}.get(kind, subspace_dim)
    if hidden_size is not None and width is not None and width > hidden_size:
        raise ConfigError(f"intervention.subspace_dim must fit the model's hidden size {hidden_size} "
                          f"({kind} over {n_variables} variable(s) needs {width} dimensions), got {subspace_dim}")


def check_positions(folder: SweepFolder, specs: list[TrialSpec], model_path: str) -> None:
    """Every position of the grid must be found by the model's tokenizer in every prompt of the sweep."""
    import torch

    from alignment.models import load_tokenizer
    from alignment.prompts import build_prompt_table

    if Path(model_path).is_file():  # a GGUF tokenizer loads with its weights; the trials check it
        return
    tokenizer = load_tokenizer(model_path)
    prompts = load_prompts(folder)
    names = sorted({name for _, positions in prompts for name in positions})
    table = build_prompt_table(tokenizer, [text for text, _ in prompts], [p for _, p in prompts], names)
    used = {p for s in specs for p in (s.hypothesis.position, s.hypothesis.source_position) if p}
    for position in sorted(used):
        table.token_index(position, torch.arange(len(table)))


def trial_config(config: SweepConfig, spec: TrialSpec, model_path: str, template: str) -> TrialConfig:
    """The TrialConfig of one trial of the sweep."""
    hypothesis = spec.hypothesis
    intervention = replace(config.intervention, kind=hypothesis.intervention)  # type: ignore[arg-type]
    return TrialConfig(model_path=model_path, task=config.task, causal_model=hypothesis.causal_model,
                       variables=hypothesis.variables, layer=hypothesis.layer, position=hypothesis.position,
                       source_position=hypothesis.source_position, intervention=intervention,
                       train=replace(config.train, seed=spec.seed), data=replace(config.data, template=template))


def build_data(folder: SweepFolder, config: SweepConfig, specs: list[TrialSpec], template: str) -> None:
    """Write each (causal model, variables) dataset once, and the shared prompt list."""
    prompts: dict[str, dict[str, int]] = {}
    for causal_model, variables in sorted({(s.hypothesis.causal_model, s.hypothesis.variables) for s in specs}):
        directory = folder.data_dir(causal_model, variables)
        if not (directory / "done").is_file():
            _write_pairs(directory, config, causal_model, variables, template)
        rows = load_rows(directory)
        for row in rows["train"] + rows["dev"] + rows["test"]:
            prompts.setdefault(row["base_prompt"], row["base_positions"])
            for text, position in zip(row["source_prompts"], row["source_positions"]):
                prompts.setdefault(text, position)
    atomic_write_text(folder.prompts_file, json.dumps(list(prompts.items())))


def _write_pairs(directory: Path, config: SweepConfig, causal_model: str, variables: tuple[str, ...],
                 template: str) -> None:
    """Sample and save one dataset; it appears under `directory` whole or not at all."""
    task = get_task(config.task)
    sizes = {"train": config.data.n_train, "dev": config.data.n_dev, "test": config.data.n_test}
    pair_sets = make_splits(task, causal_model, variables, sizes, config.data.seed,
                            balance_labels=config.data.balance_labels,
                            max_unchanged=config.data.max_unchanged, per_pair=config.data.per_pair)
    shutil.rmtree(directory, ignore_errors=True)  # what an interrupted older build left
    directory.parent.mkdir(parents=True, exist_ok=True)
    with replacing(directory) as temporary:
        for split, pairs in pair_sets.items():
            to_dataset(pairs, task.template(template)).save_to_disk(str(temporary / split))
        stats = {split: pairs.stats.to_dict() for split, pairs in pair_sets.items()}
        (temporary / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        (temporary / "done").write_text("")


def load_rows(directory: Path) -> dict[str, list[dict[str, Any]]]:
    import datasets

    if not (directory / "done").is_file():
        raise ConfigError(f"sweep data must have been built, got no {directory / 'done'}")
    return {split: list(datasets.load_from_disk(str(directory / split))) for split in SPLITS}


def load_prompts(folder: SweepFolder) -> list[tuple[str, dict[str, int]]]:
    return [(text, position) for text, position in json.loads(folder.prompts_file.read_text())]
