"""`align-search sweep --plan`: every check a sweep makes before its first trial, and the grid, without Ray.

A sweep that fails after Ray started and the first trials ran wastes minutes; one whose grid is
not what the user meant wastes hours. The plan runs what `run_sweep` runs up front (the MLflow
URI, the model's layers and hidden size, the grid, sampling the counterfactual data at the
configured sizes, every position found by the tokenizer in every prompt) in a scratch folder
that is deleted after, and says what the sweep would run. It trains nothing and starts nothing.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

from search.config import SweepConfig
from search.folder import SweepFolder, TrialSpec
from search.prepare import model_facts, resolve_model_path
from search.sweep import check_sweep, prepare_sweep


def plan_sweep(config: SweepConfig) -> str:
    """Check the sweep as `run_sweep` would before its first trial; describe its grid and data."""
    check_sweep(config)
    with tempfile.TemporaryDirectory(prefix="align-search-plan-") as scratch:
        folder = SweepFolder(Path(scratch) / "sweep")
        folder.path.mkdir()
        specs = prepare_sweep(config, folder)
        data = {spec.hypothesis.causal_model: _train_stats(folder, spec) for spec in specs}
    return _describe(config, specs, data)


def _train_stats(folder: SweepFolder, spec: TrialSpec) -> dict[str, object]:
    directory = folder.data_dir(spec.hypothesis.causal_model, spec.hypothesis.variables)
    stats = json.loads((directory / "stats.json").read_text())
    return {split: values["n"] for split, values in stats.items()} | {
        "labels": stats["train"]["label_shares"], "unchanged": stats["train"]["unchanged_share"]}


def _describe(config: SweepConfig, specs: list[TrialSpec], data: dict[str, dict[str, object]]) -> str:
    model_path = resolve_model_path(config)
    facts = model_facts(model_path)
    layers: dict[str, set[int]] = defaultdict(set)
    positions: dict[str, list[str]] = defaultdict(list)
    for spec in specs:
        hypothesis = spec.hypothesis
        layers[hypothesis.causal_model].add(hypothesis.layer)
        if hypothesis.position not in positions[hypothesis.causal_model]:
            positions[hypothesis.causal_model].append(hypothesis.position)
    lines = [f"plan of sweep {config.name!r}: {len(specs)} grid trials on {model_path} ({facts.layers} decoder "
             f"layers, hidden size {facts.hidden_size}), scheduler {config.scheduler.kind}"]
    for name, stats in data.items():
        lines.append(f"  {name}: {sum(s.hypothesis.causal_model == name for s in specs)} trials, layers "
                     f"{', '.join(map(str, sorted(layers[name])))}; positions {', '.join(positions[name])}; pairs "
                     f"{stats['train']}/{stats['dev']}/{stats['test']}, train labels {stats['labels']}, "
                     f"unchanged {stats['unchanged']}")
    if config.controls.top_k:
        lines.append(f"then controls of the best {config.controls.top_k} per causal model: "
                     f"{', '.join(config.controls.kinds)}, seeds {list(config.controls.seeds)}")
    lines.append("checked: model, grid, data sizes and every position in every prompt; nothing was trained or started")
    return "\n".join(lines)
