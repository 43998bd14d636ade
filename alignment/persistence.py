"""Saving and loading a trained intervention: safetensors weights plus a self-describing JSON.

A folder holds `intervention.safetensors` (only the intervention: rotation, boundaries,
temperature) and `intervention.json`: what it is (kind, sizes, variables, causal model, task,
site and positions), which model it was trained on (architecture, hidden size, a hash of the
model config), its metrics, and the versions that made it. Loading restores the exact logits
and refuses a model it was not trained on, saying why. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from alignment.files import atomic_write_text
from alignment.interventions import Boundary, SubspaceSwap, build_intervention
from causal_models.errors import UserError

FORMAT = "align-search/intervention"
VERSION = 1
WEIGHTS = "intervention.safetensors"
DESCRIPTION = "intervention.json"
_VOLATILE = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures", "_commit_hash"}


class InterventionMismatch(UserError, ValueError):
    """An intervention loaded onto a model it was not trained on."""


class InterventionFileError(UserError, ValueError):
    """A saved intervention whose files are torn, foreign or missing."""


def model_identity(model: nn.Module, name: str | None = None) -> dict[str, Any]:
    """Name, architecture, hidden size, layer count and config hash of a Hugging Face model."""
    config = getattr(model, "config", None)
    data = config.to_dict() if config is not None else {}
    stable = {k: v for k, v in sorted(data.items()) if k not in _VOLATILE}
    digest = hashlib.sha1(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]
    architectures = data.get("architectures") or [type(model).__name__]
    return {"name": name or data.get("_name_or_path") or type(model).__name__, "architecture": architectures[0],
            "model_type": data.get("model_type"), "hidden_size": data.get("hidden_size", data.get("n_embd")),
            "num_hidden_layers": data.get("num_hidden_layers", data.get("n_layer")), "config_hash": digest}


def versions() -> dict[str, str]:
    import transformers

    from alignment import __version__
    return {"align_search": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


@dataclass(frozen=True)
class SavedIntervention:
    intervention: SubspaceSwap
    description: dict[str, Any]


def save_intervention(directory: str | Path, intervention: SubspaceSwap, description: Mapping[str, Any]) -> Path:
    """Write the weights and the description (kind and sizes are filled in from the module)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    full = {"format": FORMAT, "version": VERSION, "kind": intervention.kind,
            "hidden_size": intervention.hidden_size, "n_variables": intervention.n_variables,
            "width": intervention.basis.width, "temperature": float(intervention.mask.temperature),
            "boundary_widths": intervention.mask.sizes(), "versions": versions(),
            **({"log_boundary": intervention.mask.log_scale, "soft_start": intervention.mask.soft_start}
               if isinstance(intervention.mask, Boundary) else {}), **description}
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{WEIGHTS}.")
    os.close(handle)
    save_file({k: v.detach().cpu().contiguous() for k, v in intervention.state_dict().items()}, temporary)
    os.replace(temporary, directory / WEIGHTS)
    atomic_write_text(directory / DESCRIPTION, json.dumps(full, indent=2, sort_keys=True) + "\n")
    return directory


def load_intervention(directory: str | Path, model: nn.Module | None = None) -> SavedIntervention:
    """Rebuild a saved intervention; with `model`, refuse it unless it is the model it was trained on."""
    directory = Path(directory)
    if not (directory / DESCRIPTION).is_file() or not (directory / WEIGHTS).is_file():
        raise FileNotFoundError(f"an intervention folder must hold {DESCRIPTION} and {WEIGHTS}, got {str(directory)!r}")
    description = _read_description(directory / DESCRIPTION)
    if model is not None:
        check_model(description, model)
    try:
        intervention = build_intervention(description["kind"], description["hidden_size"],
                                          description["n_variables"], subspace_dim=description.get("subspace_dim"),
                                          rotation_map=description.get("rotation_map", "cayley"),
                                          # saved before these were recorded: the 2023 boundary (a share, soft start)
                                          log_boundary=description.get("log_boundary", False),
                                          soft_start=description.get("soft_start", True))
        intervention.load_state_dict(load_file(str(directory / WEIGHTS)))
    except (KeyError, ValueError, RuntimeError, SafetensorError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InterventionFileError(f"{str(directory)!r} must hold an intervention align-search saved, got "
                                    f"{type(error).__name__}: {first[:200]}. Save it again, or share a good copy"
                                    ) from None
    return SavedIntervention(intervention, description)


def _read_description(path: Path) -> dict[str, Any]:
    try:
        description = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InterventionFileError(f"{str(path)!r} must be the JSON align-search wrote, got a torn or foreign "
                                    f"file ({error})") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        got = description.get("format") if isinstance(description, dict) else type(description).__name__
        raise InterventionFileError(f"{str(path)!r} must have format {FORMAT!r}, got {got!r}")
    return description


def check_model(description: Mapping[str, Any], model: nn.Module) -> None:
    """Raise InterventionMismatch naming what differs between the saved model identity and `model`."""
    saved, actual = description.get("model", {}), model_identity(model)
    for key in ("architecture", "hidden_size", "num_hidden_layers", "config_hash"):
        if saved.get(key) is not None and saved.get(key) != actual.get(key):
            raise InterventionMismatch(
                f"this intervention was trained on {saved.get('name')!r} ({saved.get('architecture')}, "
                f"hidden size {saved.get('hidden_size')}, {saved.get('num_hidden_layers')} layers); the model "
                f"given has {key} {actual.get(key)!r} instead of {saved.get(key)!r}. Load it onto the model "
                f"it was trained on")
