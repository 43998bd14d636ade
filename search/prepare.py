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

import torch

from alignment.config import TrialConfig
from alignment.config_io import ConfigError
from alignment.models import ModelLoadError, is_gguf, load_tokenizer, locate_model, model_config, read_meta
from alignment.persistence import atomic_write_text
from alignment.prompts import PromptTable, build_prompt_table
from causal_models import enumerate_hypotheses, get_task, make_splits, parse_layers, to_dataset
from causal_models.dataset import quiet_datasets
from causal_models.hypotheses import CROSS, grid_positions, is_offset, position_members
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


@dataclass(frozen=True)
class PromptFacts:
    """What the sweep's prompts tell its grid, read through the model's tokenizer.

    n_tokens: tokens in the shortest prompt ("every" is the offsets -n_tokens..-1).
    tokens: offset ("-3") -> the text of its token in the sample prompt (a shortest one).
    order: position name or offset -> its offset from the end in the sample prompt (to order
        the grid's positions as the tokens run, like the paper's figures).
    """

    n_tokens: int
    tokens: dict[str, str]
    order: dict[str, int]


def plan_trials(config: SweepConfig, n_layers: int, template: str,
                prompts: PromptFacts | None = None) -> list[TrialSpec]:
    """The grid of the config's hypotheses, one trial per seed.

    Without `prompts` (checks made before the data exist), "every" stands for the last token only.
    """
    task = get_task(config.task)
    grid = config.hypotheses
    names = task.template(template).position_names
    positions = grid_positions(grid.positions, names, prompts.n_tokens if prompts else 1)
    if prompts is not None:
        positions = _in_token_order(positions, prompts)
    try:
        layers = parse_layers(grid.layers if isinstance(grid.layers, str) else list(grid.layers), n_layers)
    except ValueError as error:  # a layer outside the model, an empty or malformed list
        raise ConfigError(f"hypotheses.layers: {error}") from None
    hypotheses = enumerate_hypotheses(task, layers, list(grid.causal_models),
                                      [list(v) for v in grid.variables] or None, positions,
                                      list(grid.interventions), template, list(grid.components),
                                      prompts.tokens if prompts else None)
    return [TrialSpec(h, seed) for h in hypotheses for seed in grid.seeds]


def _in_token_order(positions: list[str], prompts: PromptFacts) -> list[str]:
    """Single positions as their tokens run in the sample prompt, then groups and cross-position ones as listed."""
    singles = [p for p in positions if p in prompts.order]
    singles.sort(key=lambda position: prompts.order[position])
    return singles + [p for p in positions if p not in prompts.order]


def data_sets(config: SweepConfig) -> list[tuple[str, tuple[str, ...]]]:
    """The (causal model, variables) pairs of the grid: one counterfactual dataset each."""
    task = get_task(config.task)
    found = []
    for name in config.hypotheses.causal_models:
        model = task.causal_model(name)
        for variables in config.hypotheses.variables or (model.default_variables,):
            found.append((name, tuple(variables)))
    return sorted(set(found))


def check_grid(config: SweepConfig, facts: ModelFacts, template: str,
               prompts: PromptFacts | None = None) -> list[TrialSpec]:
    """The planned grid, checked against the model before any trial starts (a trial would fail much later)."""
    specs = plan_trials(config, facts.layers, template, prompts)
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


def sweep_prompts(folder: SweepFolder, model_path: str, config: SweepConfig) -> tuple[PromptTable, Any] | None:
    """Every prompt of the sweep in one table, tokenized by the model's tokenizer (and that tokenizer).

    None for a GGUF model whose grid names no token offset: its tokenizer is slow to read, and
    its trials check their named positions themselves.
    """
    if is_gguf(model_path) and not _uses_offsets(config):
        return None
    tokenizer = load_tokenizer(model_path)
    prompts = load_prompts(folder.prompts_file)
    names = sorted({name for _, positions in prompts for name in positions})
    return build_prompt_table(tokenizer, [text for text, _ in prompts], [p for _, p in prompts], names), tokenizer


def _uses_offsets(config: SweepConfig) -> bool:
    positions = grid_positions(config.hypotheses.positions, (), 1)  # "every" as "-1"
    return any(is_offset(member) for position in positions for side in position.split(CROSS)
               for member in position_members(side))


def prompt_facts(table: PromptTable, tokenizer: Any) -> PromptFacts:
    """The shortest prompt's length, the text of each of its tokens by offset, and where its named positions are."""
    sample = int(table.lengths.argmin())
    n_tokens = int(table.lengths[sample])
    ids = table.input_ids[sample].tolist()
    tokens = {str(offset): tokenizer.decode([ids[offset]]) for offset in range(-n_tokens, 0)}
    order = {str(offset): offset for offset in range(-n_tokens, 0)}
    for column, name in enumerate(table.names):
        index = int(table.named[sample, column])
        if index >= 0:
            order[name] = index - table.seq_len
    return PromptFacts(n_tokens, tokens, order)


def check_positions(table: PromptTable, specs: list[TrialSpec]) -> None:
    """Every position of the grid must be found by the model's tokenizer in every prompt of the sweep."""
    used = {p for s in specs for p in (s.hypothesis.position, s.hypothesis.source_position) if p}
    for position in sorted(used):
        table.token_indices(position, torch.arange(len(table)))


def trial_config(config: SweepConfig, spec: TrialSpec, model_path: str, template: str) -> TrialConfig:
    """The TrialConfig of one trial of the sweep."""
    hypothesis = spec.hypothesis
    intervention = replace(config.intervention, kind=hypothesis.intervention)  # type: ignore[arg-type]
    return TrialConfig(model_path=model_path, task=config.task, causal_model=hypothesis.causal_model,
                       variables=hypothesis.variables, layer=hypothesis.layer, position=hypothesis.position,
                       source_position=hypothesis.source_position, intervention=intervention,
                       train=replace(config.train, seed=spec.seed), data=replace(config.data, template=template),
                       component=hypothesis.component,  # type: ignore[arg-type]
                       position_tokens=hypothesis.position_tokens)


def build_data(folder: SweepFolder, config: SweepConfig, datasets: list[tuple[str, tuple[str, ...]]],
               template: str) -> None:
    """Write each (causal model, variables) dataset once, and the shared prompt list."""
    prompts: dict[str, dict[str, int]] = {}
    for causal_model, variables in sorted(set(datasets)):
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
    quiet_datasets()
    with replacing(directory) as temporary:
        for split, pairs in pair_sets.items():
            to_dataset(pairs, task.template(template)).save_to_disk(str(temporary / split))
        stats = {split: pairs.stats.to_dict() for split, pairs in pair_sets.items()}
        (temporary / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        (temporary / "done").write_text("")


def load_rows(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """Each split's pairs as rows. Read whole through Arrow (`to_list`): row by row, datasets formats each row on its
    own, 10x slower (0.20 s against 0.02 s for 2000 price-tagging pairs), and the driver and every worker read them."""
    import datasets

    if not (directory / "done").is_file():
        raise ConfigError(f"sweep data must have been built, got no {directory / 'done'}")
    return {split: datasets.load_from_disk(str(directory / split)).to_list() for split in SPLITS}


def load_prompts(path: Path) -> list[tuple[str, dict[str, int]]]:
    """The sweep's prompt list (`SweepFolder.prompts_file`): every prompt of every trial, with its positions."""
    return [(text, position) for text, position in json.loads(path.read_text())]
