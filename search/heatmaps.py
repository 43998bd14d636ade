"""The sweep's heatmaps: mean IIA over layers x positions, one per causal model and component.

Drawn like the paper's figures: token positions along the x axis in the order the tokens run
(as the sweep planned them: named positions and offsets by where they fall in a sample
prompt, offsets labelled with their token, `-3 'dollars'`; groups `[a + b]` after them),
layers up the y axis (layer 0 at the bottom), the mean IIA over seeds in each cell. One figure
per causal model (and variable set, and intervention when the sweep has several) and per
component (`heatmap_<causal model>.png` for the block outputs, `..._attention.png`,
`..._mlp.png`). A long row (every token of a long prompt) wraps into stacked panels of at most
`MAX_COLUMNS` positions, and past `MAX_PANELS` panels continues in another file (`..._part2`).

A cell whose IIA fails the verdict's floor check is hatched (`search.verdict.floor_checks`, the
one rule for both): not the margin above the no-op floor (`floor_no_op`: the share of pairs
whose label the intervention does not change), or above the copy-source floor
(`floor_copy_source`: the share where copying the source's own answer is right) unless that
floor is the claim itself (at least 1 - NEAR_TASK: the variable is the answer). An IIA that a
do-nothing or copy-the-source intervention nearly reaches says nothing about the site, and a
hatched cell is exactly one the verdict would judge not found on its floors.
"""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from causal_models import Hypothesis
from search.folder import SweepFolder, replacing
from search.verdict import NEAR_TASK, floor_checks, floors_of

MAX_COLUMNS = 32
MAX_PANELS = 4
Column = tuple[str, str | None]   # (position, source position)


def heatmaps(folder: SweepFolder, ranked: list[dict[str, Any]], margin: float) -> list[Path]:
    """Draw every heatmap of the sweep in `folder` from the ranked hypotheses; return the files.

    margin: the verdict's margin over the floors (`controls.margin`); cells that fail it are hatched.
    """
    plan = {spec.hypothesis.id: spec.hypothesis for spec in folder.read_trials() if spec.role == "hypothesis"}
    figures: dict[tuple[str, str, str, str], list[tuple[Hypothesis, dict[str, Any]]]] = defaultdict(list)
    for entry in ranked:
        hypothesis = plan.get(entry["hypothesis"])
        if hypothesis is not None:
            key = (hypothesis.causal_model, "+".join(hypothesis.variables), hypothesis.intervention,
                   hypothesis.component)
            figures[key].append((hypothesis, entry))
    names = _file_stems(list(figures))
    columns = _ordered_positions(list(plan.values()))
    files: list[Path] = []
    for key, cells in sorted(figures.items()):
        files += _draw(folder, names[key], _title(key), cells, columns, margin)
    return files


def _ordered_positions(hypotheses: Sequence[Hypothesis]) -> dict[Column, str]:
    """Every column of the sweep (position, source position) in plan order, with its label."""
    columns: dict[Column, str] = {}
    for hypothesis in hypotheses:
        columns.setdefault((hypothesis.position, hypothesis.source_position), hypothesis.label)
    return columns


def _file_stems(keys: list[tuple[str, str, str, str]]) -> dict[tuple[str, str, str, str], str]:
    """heatmap_<causal model>[__<variables>][__<intervention>][_<component>]: only the parts that tell figures apart."""
    variable_sets: dict[str, set[str]] = defaultdict(set)
    for causal_model, variables, _, _ in keys:
        variable_sets[causal_model].add(variables)
    interventions = {key[2] for key in keys}
    stems = {}
    for causal_model, variables, intervention, component in keys:
        stem = f"heatmap_{causal_model}"
        stem += f"__{variables}" if len(variable_sets[causal_model]) > 1 else ""
        stem += f"__{intervention}" if len(interventions) > 1 else ""
        stem += f"_{component}" if component != "block" else ""
        stems[(causal_model, variables, intervention, component)] = stem
    return stems


def _title(key: tuple[str, str, str, str]) -> str:
    causal_model, variables, intervention, component = key
    model = causal_model if variables == causal_model else f"{causal_model}: {variables}"
    where = {"block": "block outputs", "attention": "attention outputs", "mlp": "MLP outputs"}[component]
    return f"IIA, {model} ({intervention}), {where}"


def _draw(folder: SweepFolder, stem: str, title: str, cells: list[tuple[Hypothesis, dict[str, Any]]],
          columns: dict[Column, str], margin: float) -> list[Path]:
    """One heatmap, wrapped into panels and split into files when it is long."""
    layers = sorted({hypothesis.layer for hypothesis, _ in cells})
    used = [column for column in columns if any((h.position, h.source_position) == column for h, _ in cells)]
    values = {(h.layer, (h.position, h.source_position)): entry for h, entry in cells}
    hatched = {cell for cell, entry in values.items() if at_floor(entry, margin)}
    panels = [used[start:start + MAX_COLUMNS] for start in range(0, len(used), MAX_COLUMNS)]
    files = []
    for part, start in enumerate(range(0, len(panels), MAX_PANELS), start=1):
        path = folder.path / (f"{stem}.png" if part == 1 else f"{stem}_part{part}.png")
        heading = title if len(panels) <= MAX_PANELS else f"{title} (part {part})"
        _save(path, heading, layers, panels[start:start + MAX_PANELS], columns, values, hatched, margin)
        files.append(path)
    return files


def _save(path: Path, title: str, layers: list[int], panels: list[list[Column]], labels: dict[Column, str],
          values: dict[tuple[int, Column], dict[str, Any]], hatched_cells: set[tuple[int, Column]],
          margin: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widest = max(len(panel) for panel in panels)
    width, height = 0.55 * widest + 3.0, len(panels) * (0.42 * len(layers) + 2.2)   # inches
    figure, axes_list = plt.subplots(len(panels), 1, squeeze=False, figsize=(width, height))
    hatched = False
    for axes, panel in zip(axes_list[:, 0], panels):
        image, panel_hatched = _panel(axes, layers, panel, labels, values, hatched_cells)
        hatched |= panel_hatched
        figure.colorbar(image, ax=axes, fraction=0.04, pad=0.01)
    axes_list[0, 0].set_title(title)
    words = textwrap.wrap(legend(margin), width=int(width * 14)) if hatched else []   # ~14 characters an inch at 8 pt
    figure.text(0.01, 0.005, "\n".join(words), fontsize=8, ha="left", va="bottom")
    figure.tight_layout(rect=(0, (0.15 * len(words) + 0.05) / height if words else 0, 1, 1))
    with replacing(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)


def _panel(axes: Any, layers: list[int], panel: list[Column], labels: dict[Column, str],
           values: dict[tuple[int, Column], dict[str, Any]], hatched_cells: set[tuple[int, Column]]
           ) -> tuple[Any, bool]:
    """Draw one panel: the cells, their values, hatching at or below the floor, the axis labels."""
    from matplotlib.patches import Rectangle

    grid = [[_mean(values.get((layer, column))) for column in panel] for layer in layers]
    image = axes.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto", origin="lower")
    hatched = False
    for i, layer in enumerate(layers):
        for j, column in enumerate(panel):
            value = grid[i][j]
            if math.isnan(value):
                continue
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if value < 0.6 else "black")
            if (layer, column) in hatched_cells:
                axes.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.85",
                                         linewidth=0))
                hatched = True
    rotation, align = (90, "center") if len(panel) > 12 else (40, "right")
    axes.set_xticks(range(len(panel)), [labels[column] for column in panel], rotation=rotation, ha=align, fontsize=8)
    axes.set_yticks(range(len(layers)), [f"L{layer}" for layer in layers])
    axes.set_ylabel("layer")
    return image, hatched


def _mean(entry: dict[str, Any] | None) -> float:
    return float(entry["mean"]) if entry is not None else math.nan


def at_floor(entry: dict[str, Any], margin: float) -> bool:
    """Whether the entry's mean IIA fails the verdict's floor check, on the same floors the verdict reads."""
    return False in floor_checks(_mean(entry), floors_of(entry), margin).values()


def legend(margin: float) -> str:
    """The words under a heatmap with hatched cells."""
    return (f"hatched: IIA not {margin:g} above the no-op floor, or above the copy-source floor (which, at "
            f">= {1 - NEAR_TASK:g}, is the claim itself and does not apply): the verdict's floor check fails")
