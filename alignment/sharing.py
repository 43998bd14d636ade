"""Sharing found alignments: a Hugging Face Hub-style folder others can load and steer with.

The 2023 "community sharing" idea, made real: `export_intervention` writes the intervention's
weights and self-describing JSON (model identity, site, variables, causal model, task,
metrics, versions) at the root of a folder, with a README model card. That folder can be
pushed to a Hub repository as it is (`huggingface-cli upload`), and `resolve_shared` finds a
shared intervention from a local folder, a trial folder, or `hf://owner/name` (downloaded
with huggingface_hub when the network allows). Loading onto a different model is refused with
the reason (`alignment.persistence.check_model`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from alignment.hub import HubError, hub_id, snapshot
from alignment.persistence import DESCRIPTION, WEIGHTS, InterventionDescription, read_description

HUB_PREFIX = "hf://"


def intervention_folder(path: str | Path) -> Path:
    """The folder holding intervention.json: the path itself, or a trial folder's `intervention/`."""
    path = Path(path)
    for candidate in (path, path / "intervention"):
        if (candidate / DESCRIPTION).is_file() and (candidate / WEIGHTS).is_file():
            return candidate
    raise FileNotFoundError(f"an intervention must be a folder with {DESCRIPTION} and {WEIGHTS} (or a trial folder "
                            f"holding intervention/), got {str(path)!r}")


def resolve_shared(reference: str | Path) -> Path:
    """A local intervention folder for `reference`: a path, or hf://owner/name[@revision] from the Hub.

    A Hub reference resolves through the Hugging Face cache like a model (alignment/hub.py):
    HF_HUB_OFFLINE, HF_TOKEN and revisions work, and a failure is one line saying which.
    """
    text = str(reference)
    if not text.startswith(HUB_PREFIX):
        return intervention_folder(text)
    found = hub_id(text[len(HUB_PREFIX):])
    if found is None or "/" not in found[0]:
        raise HubError(f"a shared intervention must be hf://owner/name or hf://owner/name@revision, got {text!r}")
    return intervention_folder(snapshot(*found, [DESCRIPTION, WEIGHTS, "README.md"], what="shared intervention"))


def export_intervention(run: str | Path, out: str | Path) -> Path:
    """Copy a trained intervention into a Hub-style folder with a README model card."""
    source = intervention_folder(run)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in (DESCRIPTION, WEIGHTS):
        shutil.copy(source / name, out / name)
    (out / "README.md").write_text(model_card(read_description(source / DESCRIPTION)))
    return out


def model_card(description: InterventionDescription) -> str:
    model, metrics = description.model, description.metrics
    variables = ", ".join(description.variables)
    first_variable = (description.variables or ("VARIABLE",))[0]
    rows = "\n".join(f"| {key} | {value:.3f} |" for key, value in metrics.items() if isinstance(value, (int, float)))
    return f"""---
library_name: align-search
tags: [interpretability, causal-abstraction, boundless-das]
---
# {variables} in {model.get('name')}

A {description.intervention.kind} intervention that aligns the variable(s) **{variables}** of the causal model
`{description.causal_model}` (task `{description.task}`) with the output of `{description.site}`
at position `{description.position}` (source position `{description.source_position}`).
Boundary widths: {list(description.boundary_widths)} of {description.width} rotated dimensions.

Trained on `{model.get('name')}` ({model.get('architecture')}, hidden size {model.get('hidden_size')},
{model.get('num_hidden_layers')} layers, config hash `{model.get('config_hash')}`); loading it onto another model is
refused.

| metric | value |
|---|---|
{rows}

Steer with it:

```
align-search steer THIS_FOLDER --model-path MODEL --prompt "..." --value {first_variable}=true
```
"""
