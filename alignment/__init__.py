"""alignment/: one Boundless DAS trial on any Hugging Face causal LM.

From Python, the front door (names load on first use, so `import alignment` is light):

    from alignment import TrialConfig, run_trial
    summary = run_trial(TrialConfig(model_path="path/or/org-name", layer=1, position="last"), "runs/one")

- `TrialConfig` (with `InterventionConfig`, `TrainConfig`, `DataConfig`): what one trial trains.
- `run_trial(config, out)`: data, model, prealign accuracy, training, test IIA; writes the run folder
  and returns a `TrialResult` (its fields are summary.json's keys; `TrialResult.read(path)` reads one).
- `load_model(path_or_hub_id)`: a frozen causal LM and its tokenizer (`LoadedModel`).
- `build_interchange(config, model, table)`: the frozen model at the site with a fresh intervention,
  what a trial trains (for notebooks, tests and benchmarks).
- `build_intervention`, `save_intervention`, `load_intervention`: the intervention modules and their files.

Reading order, from what a user states to what a step computes:
config -> trial (one run) -> results (what it returns) -> batches (pairs as tensors) -> prompts (token
positions by name) -> sites (where in the model) -> interchange (one interchange on a batch) -> frozen
(the model, cached below the site) -> hooks -> interventions (rotation, boundary, swap) -> rotations ->
train -> metrics;
then persistence and sharing (files), steering (using a found alignment), models and hub (loading),
taskmodels (the small models shipped per task).

A pair changes form on its way: `causal_models.CounterfactualPair` (symbolic, in a `PairSet`) ->
a dataset row (prompts, positions and labels as plain data) -> `batches.PairTensors` (token rows and
labels) -> `interchange.PositionedPairs` (with the token index of the site in each prompt).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"
_EXPORTS = {
    "TrialConfig": "alignment.config", "InterventionConfig": "alignment.config", "TrainConfig": "alignment.config",
    "DataConfig": "alignment.config", "run_trial": "alignment.trial", "build_interchange": "alignment.trial",
    "TrialResult": "alignment.results",
    "load_model": "alignment.models", "LoadedModel": "alignment.models",
    "build_intervention": "alignment.interventions", "save_intervention": "alignment.persistence",
    "load_intervention": "alignment.persistence",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'alignment' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
