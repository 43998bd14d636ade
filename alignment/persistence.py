"""Saving and loading a trained intervention: safetensors weights plus a self-describing JSON.

A folder holds `intervention.safetensors` (only the intervention: rotation, boundaries,
temperature) and `intervention.json`, an `InterventionDescription`: the `InterventionConfig` it
was built and trained with, its sizes, what it aligns (variables, causal model, task, site and
positions), which model it was trained on (architecture, hidden size, a hash of the model
config), its metrics, and the versions that made it. It is read back through the same strict
`from_dict` as every config; a file of format version 1 (the config's fields kind,
subspace_dim, rotation_map, log_boundary, soft_start at the top level) is read as the config it
describes. Loading restores the exact logits and refuses a model it was not trained on, saying
why. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from alignment.config import InterventionConfig
from alignment.config_io import ConfigError, from_dict, to_dict
from alignment.files import atomic_write_text
from alignment.interventions import Boundary, SubspaceSwap, build_intervention
from causal_models.errors import UserError
from causal_models.hypotheses import InterventionKind

FORMAT = "align-search/intervention"
VERSION = 2
# Format 1 kept these InterventionConfig fields at the top level; absent boundary fields meant the 2023 boundary.
_V1_CONFIG = ("kind", "subspace_dim", "rotation_map", "log_boundary", "soft_start")
_V1_BOUNDARY = {"log_boundary": False, "soft_start": True}
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
class InterventionDescription:
    """What intervention.json holds. `intervention` is the config the module was built (and trained)
    with; the sizes, temperature and hard widths are the saved module's; the rest says what it
    aligns, where, on which model, and how well (None or empty where the saver did not say)."""

    intervention: InterventionConfig
    hidden_size: int
    n_variables: int
    width: int
    temperature: float
    boundary_widths: tuple[int, ...]
    task: str | None = None
    causal_model: str | None = None
    variables: tuple[str, ...] = ()
    template: str | None = None
    site: str | None = None
    layer: int | None = None
    position: str | None = None
    source_position: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION

    def needed(self, name: str) -> str:
        """A context field (task, causal_model, site, position, source_position) that steering needs."""
        value = getattr(self, name)
        if not isinstance(value, str):
            raise InterventionFileError(f"{DESCRIPTION} must name the intervention's {name} to steer with it, got "
                                        f"{value!r}. Save it with its trial (align, sweep) or pass {name} when saving")
        return value


@dataclass(frozen=True)
class SavedIntervention:
    intervention: SubspaceSwap
    description: InterventionDescription


def config_of(intervention: SubspaceSwap, config: InterventionConfig | None = None) -> InterventionConfig:
    """`config` (default: the defaults) with what rebuilds `intervention`'s module read from the module:
    its kind, rotation map, subspace size and boundary form."""
    config = config or InterventionConfig()
    basis, mask = intervention.basis, intervention.mask
    subspace_dim = {"das": basis.width // intervention.n_variables, "low_rank": basis.width}.get(intervention.kind)
    config = replace(config, kind=cast(InterventionKind, intervention.kind),
                     rotation_map=getattr(basis, "rotation_map", config.rotation_map),
                     subspace_dim=subspace_dim or config.subspace_dim)
    if isinstance(mask, Boundary):
        config = replace(config, log_boundary=mask.log_scale, soft_start=mask.soft_start)
    return config


def save_intervention(directory: str | Path, intervention: SubspaceSwap, context: Mapping[str, Any] | None = None,
                      config: InterventionConfig | None = None) -> Path:
    """Write the weights and intervention.json.

    Args:
        context: what it aligns, where and on which model: fields of InterventionDescription
            (task, causal_model, variables, template, site, layer, position, source_position,
            model, metrics); an unknown key is refused.
        config: the config it was built and trained with (default: the defaults); its kind, map,
            subspace size and boundary form are the module's either way (`config_of`).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    description = from_dict(InterventionDescription, {
        **(context or {}), "intervention": to_dict(config_of(intervention, config)),
        "hidden_size": intervention.hidden_size, "n_variables": intervention.n_variables,
        "width": intervention.basis.width, "temperature": float(intervention.mask.temperature),
        "boundary_widths": intervention.mask.sizes(), "versions": versions()})
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{WEIGHTS}.")
    os.close(handle)
    save_file({k: v.detach().cpu().contiguous() for k, v in intervention.state_dict().items()}, temporary)
    os.replace(temporary, directory / WEIGHTS)
    atomic_write_text(directory / DESCRIPTION, json.dumps(to_dict(description), indent=2, sort_keys=True) + "\n")
    return directory


def load_intervention(directory: str | Path, model: nn.Module | None = None) -> SavedIntervention:
    """Rebuild a saved intervention; with `model`, refuse it unless it is the model it was trained on."""
    directory = Path(directory)
    if not (directory / DESCRIPTION).is_file() or not (directory / WEIGHTS).is_file():
        raise FileNotFoundError(f"an intervention folder must hold {DESCRIPTION} and {WEIGHTS}, got {str(directory)!r}")
    description = read_description(directory / DESCRIPTION)
    if model is not None:
        check_model(description, model)
    config = description.intervention
    try:
        intervention = build_intervention(config.kind, description.hidden_size, description.n_variables,
                                          subspace_dim=config.subspace_dim, rotation_map=config.rotation_map,
                                          log_boundary=config.log_boundary, soft_start=config.soft_start)
        intervention.load_state_dict(load_file(str(directory / WEIGHTS)))
    except (KeyError, ValueError, RuntimeError, SafetensorError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InterventionFileError(f"{str(directory)!r} must hold an intervention align-search saved, got "
                                    f"{type(error).__name__}: {first[:200]}. Save it again, or share a good copy"
                                    ) from None
    return SavedIntervention(intervention, description)


def read_description(path: str | Path) -> InterventionDescription:
    """The InterventionDescription in an intervention.json (format 1 or 2); strict about its keys."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InterventionFileError(f"{str(path)!r} must be the JSON align-search wrote, got a torn or foreign "
                                    f"file ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise InterventionFileError(f"{str(path)!r} must have format {FORMAT!r}, got {got!r}")
    if data.get("version", 1) == 1:
        data = _from_version_1(data)
    try:
        return from_dict(InterventionDescription, data)
    except ConfigError as error:
        raise InterventionFileError(f"{str(path)!r} must describe an intervention align-search saved: {error}"
                                    ) from None


def _from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """A format-1 description in today's layout: its config fields gathered into `intervention`."""
    config = {**_V1_BOUNDARY, **{k: data[k] for k in _V1_CONFIG if k in data}}
    return {**{k: v for k, v in data.items() if k not in _V1_CONFIG}, "intervention": config, "version": VERSION}


def check_model(description: InterventionDescription, model: nn.Module) -> None:
    """Raise InterventionMismatch naming what differs between the saved model identity and `model`."""
    saved, actual = description.model, model_identity(model)
    for key in ("architecture", "hidden_size", "num_hidden_layers", "config_hash"):
        if saved.get(key) is not None and saved.get(key) != actual.get(key):
            raise InterventionMismatch(
                f"this intervention was trained on {saved.get('name')!r} ({saved.get('architecture')}, "
                f"hidden size {saved.get('hidden_size')}, {saved.get('num_hidden_layers')} layers); the model "
                f"given has {key} {actual.get(key)!r} instead of {saved.get(key)!r}. Load it onto the model "
                f"it was trained on")
