"""Counterfactual pairs as a Hugging Face `datasets.Dataset`, on disk and back.

One row per pair: the base prompt and each source prompt as text, the character offset of
every named position in each (the torch side maps them to tokens), the intervened variables
(by name and by index into the pair set's variables, which picks the intervention's block),
both labels and each source's own answer as answer strings (`row_floors` reads the floors
from them). The inputs are kept as JSON so that a row can always be
recomputed through the causal model. `save_pairs` writes the dataset, a `pairs.jsonl` for
people to read, and `stats.json` with the achieved label shares.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from causal_models.causal_model import CausalModel
from causal_models.heldout import Reservation, reserve_inputs
from causal_models.pairs import PairSet, SamplingError, floors, sample_pairs, used_inputs
from causal_models.task import Task
from causal_models.templates import PromptTemplate

if TYPE_CHECKING:
    import datasets

META_FILE = "meta.json"


def to_dataset(pair_set: PairSet, template: PromptTemplate) -> datasets.Dataset:
    """One row per pair; same pair set and template -> identical dataset."""
    import datasets  # lazily: it costs a second of start-up that `align-search tasks` need not pay

    rows: dict[str, list[Any]] = {key: [] for key in (
        "base_prompt", "base_positions", "source_prompts", "source_positions", "variables", "variable_ids",
        "base_label", "counterfactual_label", "source_labels", "base_inputs", "source_inputs")}
    index = {name: i for i, name in enumerate(pair_set.variables)}
    for pair in pair_set.pairs:
        base = template.render(pair.base)
        sources = [template.render(pair.sources[v]) for v in pair.variables]
        rows["base_prompt"].append(base.text)
        rows["base_positions"].append(base.positions)
        rows["source_prompts"].append([s.text for s in sources])
        rows["source_positions"].append([s.positions for s in sources])
        rows["variables"].append(list(pair.variables))
        rows["variable_ids"].append([index[v] for v in pair.variables])
        rows["base_label"].append(template.answer(pair.base_output))
        rows["counterfactual_label"].append(template.answer(pair.counterfactual_output))
        rows["source_labels"].append([template.answer(pair.source_outputs[v]) for v in pair.variables])
        rows["base_inputs"].append(json.dumps(pair.base, sort_keys=True))
        rows["source_inputs"].append(json.dumps([pair.sources[v] for v in pair.variables], sort_keys=True))
    return datasets.Dataset.from_dict(rows)


def make_splits(task: Task, causal_model: str | None, variables: list[str] | tuple[str, ...],
                sizes: Mapping[str, int], seed: int, heldout: bool = True, **options: Any) -> dict[str, PairSet]:
    """Pair sets per split ("train", "dev", "test", ...), each with its own seed derived from `seed`.

    With `heldout`, every split after the first excludes the inputs of the first ("train"):
    held-out pairs whose base and source inputs never occur in training. Over a small input
    space some inputs are first reserved for those splits (`causal_models.heldout`), so the
    first split cannot use them all. Each split's stats say how many distinct inputs it used
    and, for the later splits, whether they are held out and how many inputs were reserved.
    `options` go to `sample_pairs`.
    """
    model = task.causal_model(causal_model)
    variables = list(variables or model.default_variables)
    names = list(sizes)
    reservation = _reservation(model, variables, sizes, seed, options) if heldout and len(names) > 1 else None
    splits: dict[str, PairSet] = {}
    for offset, split in enumerate(names):
        if offset == 0:
            exclude = set(reservation.keys) if reservation else None
        else:
            exclude = used_inputs(splits[names[0]]) if heldout else None
        try:
            splits[split] = sample_pairs(model, variables, sizes[split], seed * 1000 + offset, exclude=exclude,
                                         **options)
        except SamplingError as error:
            raise SamplingError(f"split {split!r}: {error}") from None
    first = used_inputs(splits[names[0]])
    for split in names[1:]:
        shared = len(used_inputs(splits[split]) & first)
        splits[split] = replace(splits[split], stats=replace(
            splits[split].stats, held_out=shared == 0, shared_inputs=shared,
            reserved_inputs=len(reservation.keys) if reservation else None))
    return splits


def _reservation(model: CausalModel, variables: list[str], sizes: Mapping[str, int], seed: int,
                 options: Mapping[str, Any]) -> Reservation | None:
    """Inputs to keep for the held-out splits, judged from the first split's size (see causal_models.heldout)."""
    sampler = options.get("sample_inputs") or model.sample_inputs
    if sampler is None:
        return None
    first, *rest = sizes.values()
    per_pair = 1 + (len(variables) if options.get("per_pair") == "all" else 1)
    return reserve_inputs(sampler, first * per_pair, sum(rest) / (first + sum(rest)), seed * 1000 + 999)


def row_floors(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The `no_op` and `copy_source` floors (`causal_models.pairs.floors`) of dataset rows."""
    return floors([r["counterfactual_label"] for r in rows], [r["base_label"] for r in rows],
                  [r["source_labels"] for r in rows])


def dataset_meta(pair_set: PairSet, template: PromptTemplate, task: str) -> dict[str, Any]:
    return {"task": task, "causal_model": pair_set.causal_model, "variables": list(pair_set.variables),
            "seed": pair_set.seed, "template": template.name, "answers": sorted(set(template.answers.values())),
            "positions": list(template.position_names), "stats": pair_set.stats.to_dict()}


def save_pairs(pair_set: PairSet, template: PromptTemplate, task: str, directory: str | Path) -> datasets.Dataset:
    """Write `directory/dataset/` (HF), `pairs.jsonl`, `stats.json` and `meta.json`; return the dataset."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dataset = to_dataset(pair_set, template)
    dataset.save_to_disk(str(directory / "dataset"))
    meta = dataset_meta(pair_set, template, task)
    with open(directory / "pairs.jsonl", "w") as out:
        for row in dataset:
            out.write(json.dumps(_readable(row)) + "\n")
    (directory / "stats.json").write_text(json.dumps(meta["stats"], indent=2) + "\n")
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return dataset


def load_pairs(directory: str | Path) -> tuple[datasets.Dataset, dict[str, Any]]:
    """The dataset and its meta written by `save_pairs`."""
    directory = Path(directory)
    if not (directory / META_FILE).is_file():
        raise FileNotFoundError(f"pairs folder must hold {META_FILE} (written by `align-search data`), "
                                f"got {str(directory)!r}")
    meta = json.loads((directory / META_FILE).read_text())
    import datasets

    return datasets.load_from_disk(str(directory / "dataset")), meta


def _readable(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "base_prompt": row["base_prompt"],
        "source_prompts": dict(zip(row["variables"], row["source_prompts"])),
        "variables": row["variables"],
        "base_output": row["base_label"],
        "counterfactual_output": row["counterfactual_label"],
        "base_inputs": json.loads(row["base_inputs"]),
        "source_inputs": dict(zip(row["variables"], json.loads(row["source_inputs"]))),
        "source_outputs": dict(zip(row["variables"], row["source_labels"])),
    }


def quiet_datasets() -> None:
    """No 'Saving the dataset' progress bar for a few thousand rows: a command prints its own lines."""
    from datasets.utils.logging import disable_progress_bar
    disable_progress_bar()
