"""Markdown tables for README.md from `trial_vs_pyvene` result files.

    /work/bench-venv/bin/python -m benchmarks.table benchmarks/results/trial_vs_pyvene-t2-task-model.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

VARIANTS = ("pyvene-tutorial", "pyvene-last", "align-search", "align-search-uncached")


def layer_rows(model: str, layer: dict[str, Any], kind: str) -> list[str]:
    """Two lines per (layer, kind): wall and CPU time per variant, then the ratios and memory."""
    variants = layer["variants"]
    floor = variants["floor"]
    cells = []
    for name in VARIANTS:
        row = variants.get(f"{name}/{kind}")
        cells.append("-" if row is None else f"{row['step_s_median']:.2f} / {row['cpu_s_median']:.2f} "
                     f"({row['examples_per_s']:.1f}/s)")
    ratios, cpu = layer["ratios"], layer["cpu_ratios"]

    def ratio(key: str) -> str:
        return f"{ratios[key]:.2f} / {cpu[key]:.2f}" if key in ratios else "-"

    memory = [variants.get(f"{name}/{kind}", {}).get("peak_step_mb") for name in VARIANTS[:3]]
    shown = " / ".join("-" if m is None else f"{m:.0f}" for m in memory)
    return [f"| {model} | {layer['layer']} | {kind} | " + " | ".join(cells)
            + f" | {floor['step_s_median']:.2f} / {floor['cpu_s_median']:.2f}"
            + f" | {ratio(f'pyvene-tutorial/{kind} over align-search')}"
            + f" | {ratio(f'pyvene-last/{kind} over align-search')}"
            + f" | {ratio(f'align-search/{kind} over floor')}"
            + f" | {shown} + {layer['cache_mb']:.0f} | {layer['load_before'][0]}-{layer['load_after'][0]} |"]


def main(paths: list[str]) -> None:
    print("| model | layer | kind | pyvene-tutorial s/step wall / CPU | pyvene-last | align-search "
          "| align-search uncached | floor | tutorial / align-search (wall / CPU) | last / align-search "
          "| align-search / floor | peak step MB: tutorial / last / align-search + cache | load |")
    print("|" + "---|" * 13)
    for path in paths:
        with open(path) as handle:
            report = json.load(handle)
        for model, entry in report["models"].items():
            for layer in entry["layers"]:
                for kind in ("das", "boundless"):
                    if f"align-search/{kind}" in layer["variants"]:
                        print("\n".join(layer_rows(model, layer, kind)))


if __name__ == "__main__":
    main(sys.argv[1:])
