"""Before any trial runs: resolve the model, enumerate the trials, build the shared data once.

Counterfactual pairs are built once per (causal model, variables) with fixed seeds and saved
in the sweep folder; every trial of that causal model reads them. Every prompt of every
dataset goes into one list, in a fixed order, so that all trials tokenize the same prompt
table and share one hidden-state cache per layer.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from alignment.config import TrialConfig
from alignment.config_io import ConfigError
from alignment.models import ModelLoadError
from causal_models import enumerate_hypotheses, get_task, make_splits, parse_layers, to_dataset
from search.config import SweepConfig
from search.folder import SweepFolder, TrialSpec

log = logging.getLogger(__name__)
SPLITS = ("train", "dev", "test")


def resolve_model_path(config: SweepConfig) -> str:
    """The config's model, or the model align-search ships for the task."""
    if config.model_path:
        return config.model_path
    from alignment.taskmodels import shipped_model_path
    return str(shipped_model_path(config.task))


def model_facts(path: str) -> tuple[int, dict[str, Any]]:
    """(decoder layer count, align_search.json meta) without loading the weights (a folder or a GGUF file)."""
    from alignment.models import model_config, read_meta

    config = model_config(path)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    if not isinstance(layers, int):
        raise ModelLoadError(f"cannot read the layer count of {path!r} from its config")
    return layers, read_meta(path)


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
    layers = parse_layers(grid.layers if isinstance(grid.layers, str) else list(grid.layers), n_layers)
    hypotheses = enumerate_hypotheses(task, layers, list(grid.causal_models),
                                      [list(v) for v in grid.variables] or None, positions,
                                      list(grid.interventions), template)
    return [TrialSpec(h, seed) for h in hypotheses for seed in grid.seeds]


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
    task = get_task(config.task)
    prompt_template = task.template(template)
    prompts: dict[str, dict[str, int]] = {}
    for causal_model, variables in sorted({(s.hypothesis.causal_model, s.hypothesis.variables) for s in specs}):
        directory = folder.data_dir(causal_model, variables)
        if not (directory / "done").is_file():
            sizes = {"train": config.data.n_train, "dev": config.data.n_dev, "test": config.data.n_test}
            pair_sets = make_splits(task, causal_model, variables, sizes, config.data.seed,
                                    balance_labels=config.data.balance_labels,
                                    max_unchanged=config.data.max_unchanged, per_pair=config.data.per_pair)
            for split, pairs in pair_sets.items():
                to_dataset(pairs, prompt_template).save_to_disk(str(directory / split))
            stats = {split: pairs.stats.to_dict() for split, pairs in pair_sets.items()}
            (directory / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
            (directory / "done").write_text("")
        for row in load_rows(directory)["train"] + load_rows(directory)["dev"] + load_rows(directory)["test"]:
            prompts.setdefault(row["base_prompt"], row["base_positions"])
            for text, position in zip(row["source_prompts"], row["source_positions"]):
                prompts.setdefault(text, position)
    folder.prompts_file.write_text(json.dumps(list(prompts.items())))


def load_rows(directory: Path) -> dict[str, list[dict[str, Any]]]:
    import datasets

    if not (directory / "done").is_file():
        raise ConfigError(f"sweep data must have been built, got no {directory / 'done'}")
    return {split: list(datasets.load_from_disk(str(directory / split))) for split in SPLITS}


def load_prompts(folder: SweepFolder) -> list[tuple[str, dict[str, int]]]:
    return [(text, position) for text, position in json.loads(folder.prompts_file.read_text())]
