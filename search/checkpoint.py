"""A trial's `TrainState` as files: safetensors for tensors, JSON for the rest. Nothing is pickled.

A trial writes one after every evaluation into `trials/<key>/checkpoint/step-N/` and then
points `checkpoint/latest` at it (an atomic rename), so a crash never leaves a half-written
checkpoint in use. A retried trial, or a resumed sweep, continues from the latest one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from alignment.persistence import atomic_write_text
from alignment.train import TrainState

TENSORS = "state.safetensors"
REST = "state.json"


def save_state(state: TrainState, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    for prefix, part in (("intervention", state.intervention), ("best", state.best_intervention or {})):
        tensors.update({f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in part.items()})
    optimizer_rest: dict[str, Any] = {"param_groups": state.optimizer["param_groups"], "state": {}}
    for index, values in state.optimizer["state"].items():
        optimizer_rest["state"][str(index)] = {}
        for name, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                optimizer_rest["state"][str(index)][name] = value
    save_file(tensors, str(directory / TENSORS))
    rest = {"step": state.step, "best_dev_iia": state.best_dev_iia, "best_step": state.best_step,
            "history": state.history, "optimizer": optimizer_rest, "has_best": state.best_intervention is not None}
    (directory / REST).write_text(json.dumps(rest))
    return directory


def load_state(directory: str | Path) -> TrainState:
    directory = Path(directory)
    tensors = load_file(str(directory / TENSORS))
    rest = json.loads((directory / REST).read_text())

    def part(prefix: str) -> dict[str, Tensor]:
        return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(f"{prefix}.")}

    optimizer: dict[str, Any] = {"param_groups": rest["optimizer"]["param_groups"], "state": {}}
    for index, values in rest["optimizer"]["state"].items():
        optimizer["state"][int(index)] = dict(values)
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            optimizer["state"].setdefault(int(index), {})[name] = value
    return TrainState(step=rest["step"], intervention=part("intervention"), optimizer=optimizer,
                      best_intervention=part("best") if rest["has_best"] else None,
                      best_dev_iia=rest["best_dev_iia"], best_step=rest["best_step"], history=rest["history"])


def write_checkpoint(state: TrainState, directory: str | Path) -> Path:
    """Save `state` under `directory/step-N` and make it the latest; drop older ones."""
    directory = Path(directory)
    target = save_state(state, directory / f"step-{state.step}")
    atomic_write_text(directory / "latest", target.name)
    for old in directory.glob("step-*"):
        if old.name != target.name:
            shutil.rmtree(old, ignore_errors=True)
    return target


def read_checkpoint(directory: str | Path) -> TrainState | None:
    """The latest checkpoint under `directory`, or None."""
    latest = Path(directory) / "latest"
    if not latest.is_file():
        return None
    return load_state(Path(directory) / latest.read_text().strip())
