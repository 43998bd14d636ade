"""Validity controls: the second phase of a sweep, run for the best hypotheses of each causal model.

A high IIA can be an illusion: patching a subspace can wake a dormant pathway, and expressive
maps reach high IIA even on random models. So the best hypotheses of each causal model (by
dev IIA, top_k of them) are checked, as ordinary trials (in the sweep, in MLflow, cached like
the rest), against:
- random_rotation: a frozen random rotation at the hypothesis's learned hard width per
  variable, untrained, evaluated over `controls.random_draws` draws on the hypothesis's own
  test pairs at its site (`alignment.untrained`): a subspace claim must beat it;
- random_model: the same hypothesis trained on a randomly initialised copy of the model: a
  sanity check that the alignment needs the trained weights;
- full_swap: the whole vector swapped at the same site, untrained: a description of what the
  site carries (it also moves the token's identity and whatever else is there), not a rival;
plus more seeds of the hypothesis itself (mean and spread, not the best of one). The task's
control causal models (already in the grid) and the floors of the pairs complete the
verdict (`search/verdict.py`). The controls phase runs FIFO: no control is stopped early.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

from causal_models import get_task
from search.config import SweepConfig
from search.folder import SweepFolder, TrialSpec, replacing

log = logging.getLogger(__name__)


def plan_controls(config: SweepConfig, folder: SweepFolder) -> list[TrialSpec]:
    """The control and confirmation trials for the best grid hypotheses (planned once, then reused)."""
    existing = [s for s in folder.read_trials() if s.phase == "controls"]
    if existing or config.controls.top_k == 0:
        return existing
    from search.report import aggregate, trial_rows

    specs = folder.read_trials()
    by_key = {s.key: s for s in specs}
    task = get_task(config.task)
    ranked = aggregate(trial_rows(folder))
    planned: list[TrialSpec] = []
    for causal_model in dict.fromkeys(r["causal_model"] for r in ranked):
        if causal_model in task.controls:
            continue
        best = [r for r in ranked if r["causal_model"] == causal_model][: config.controls.top_k]
        for entry in best:
            grid = next(s for s in specs if s.hypothesis.id == entry["hypothesis"] and s.key in by_key)
            planned.extend(_controls_for(grid, config))
    if any(s.role == "random_model" for s in planned):
        make_random_model(config, folder)
    folder.write_trials(specs + planned)
    return planned


def _controls_for(grid: TrialSpec, config: SweepConfig) -> list[TrialSpec]:
    hypothesis = grid.hypothesis
    planned = [TrialSpec(hypothesis, seed, "controls") for seed in config.controls.seeds
               if seed not in config.hypotheses.seeds]
    for kind in config.controls.kinds:
        intervention = kind if kind in ("random_rotation", "full_swap") else hypothesis.intervention
        planned.append(TrialSpec(replace(hypothesis, intervention=intervention), grid.seed, "controls", kind,
                                 target=grid.key))
    return planned


def make_random_model(config: SweepConfig, folder: SweepFolder) -> Path:
    """A randomly initialised copy of the sweep's model (same architecture and tokenizer), saved once.

    The source may be a folder or a GGUF file; the copy is always a plain float32 folder.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from alignment.hub import local_path
    from alignment.models import is_gguf, load_tokenizer, model_config
    from search.prepare import resolve_model_path

    target = folder.path / "random_model"
    if (target / "config.json").is_file():
        return target
    source = local_path(resolve_model_path(config))  # a Hub id's snapshot folder in the Hugging Face cache
    torch.manual_seed(config.data.seed)
    model = AutoModelForCausalLM.from_config(model_config(source), dtype=torch.float32)
    shutil.rmtree(target, ignore_errors=True)  # what an interrupted older save left
    with replacing(target) as temporary:  # the folder appears whole or not at all
        model.save_pretrained(temporary)
        if is_gguf(source):
            load_tokenizer(source).save_pretrained(temporary)
            return target
        for name in source.iterdir():
            if name.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "align_search")):
                shutil.copy(name, temporary / name.name)
        meta = temporary / "align_search.json"
        if meta.is_file():
            data = json.loads(meta.read_text())
            data.update(accuracy=None, random_init_of=str(source))
            meta.write_text(json.dumps(data, indent=2) + "\n")
    return target
