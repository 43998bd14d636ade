"""The estimated tables of docs/scaling.md: memory per GPU, trials at once, sweep wall time.

    python benchmarks/scaling_estimate.py [--measured benchmarks/results/scaling_costs.json]

Every number printed is arithmetic on the model shapes, the measured inputs (prompt count and
length, the rotation's peak memory per d^2) and the ASSUMPTIONS below; none is a GPU run.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

GB = 1e9
ASSUMPTIONS = {
    "gpu_memory_gb": 80.0,           # H100 80 GB
    "usable_fraction": 0.9,          # CUDA context, allocator fragmentation
    "gpus_per_node": 8, "cluster_gpus": 64,
    "batch": 32, "tokens": 82,       # the paper's Alpaca prompt in LLaMA tokens (78 word-level ones measured)
    "prompts": 5400,                 # distinct prompts of the default 2000/200/500 pairs (measured)
    "train_steps": 63,               # ceil(2000 / 32), one epoch (the default)
    "eval_examples": 200 * 2 + 500 + 700,  # dev twice, test, prealign: forward only
    "bf16_flops_per_gpu": 989e12, "mfu": 0.4,
    "nvlink_gb_s": 450.0,            # effective all-gather bandwidth per GPU inside a node
    "efa_gb_s_per_gpu": 50.0,        # 3200 Gbps per node shared by 8 GPUs
    "rotation_d2_copies": 15.0,      # peak bytes of a full-rotation step / (4 d^2), measured at d = 4096
    "low_rank_columns": 64,
    "trial_overhead_s": 60.0,        # Ray actor + Train workers + loading the model shard from shared storage
    "sweep": (32, 13, 4),            # layers x positions x variables
}


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    layers: int
    ffn: int
    heads: int
    kv_heads: int
    vocab: int

    @property
    def layer_params(self) -> float:
        kv = self.hidden // self.heads * self.kv_heads
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * kv
        return attention + 3 * self.hidden * self.ffn + 2 * self.hidden

    @property
    def params(self) -> float:
        return self.layers * self.layer_params + 2 * self.vocab * self.hidden + self.hidden


SHAPES = (Shape("LLaMA-7B", 4096, 32, 11008, 32, 32, 32000),
          Shape("LLaMA-70B", 8192, 80, 28672, 64, 8, 32000),
          Shape("LLaMA-405B", 16384, 126, 53248, 128, 8, 128256))


def memory_gb(shape: Shape, gpus: int, rotation: str, cache_on_gpu: bool, a: dict) -> dict[str, float]:
    """Per-GPU memory of one trial, worst case (site at layer 0: every layer above it runs)."""
    weights = 2 * shape.params / gpus
    gathered = 0.0 if gpus == 1 else 2 * max(2 * shape.layer_params, shape.vocab * shape.hidden)
    rows = math.ceil(a["batch"] / gpus)
    s, d = a["tokens"], shape.hidden
    # Korthikanti et al. 2022, bf16, no recomputation
    activations = shape.layers * s * rows * d * (34 + 5 * shape.heads * s / d)
    cache = a["prompts"] * s * d * 4 if cache_on_gpu else 0.0
    if rotation == "full":
        rot = a["rotation_d2_copies"] * 4 * d * d
    else:
        rot = a["rotation_d2_copies"] * 4 * d * a["low_rank_columns"]
    parts = {"weights": weights, "gathered": gathered, "activations": activations, "cache": cache,
             "rotation": rot}
    out = {k: v / GB for k, v in parts.items()}
    out["total"] = sum(out.values())
    return out


def smallest_shard(shape: Shape, rotation: str, cache_on_gpu: bool, a: dict) -> int | None:
    budget = a["gpu_memory_gb"] * a["usable_fraction"]
    for gpus in (1, 2, 4, 8, 16, 32, 64):
        if memory_gb(shape, gpus, rotation, cache_on_gpu, a)["total"] <= budget:
            return gpus
    return None


def step_seconds(shape: Shape, gpus: int, a: dict) -> float:
    """One training step, averaged over sites (half the layers above): compute, or all-gathers if slower."""
    above = shape.layer_params * shape.layers / 2
    flops = 6 * above * a["batch"] * a["tokens"]
    compute = flops / (gpus * a["bf16_flops_per_gpu"] * a["mfu"])
    if gpus == 1:
        return compute
    bandwidth = a["nvlink_gb_s"] if gpus <= a["gpus_per_node"] else a["efa_gb_s_per_gpu"]
    gathered = 2 * 2 * above * (gpus - 1) / gpus  # bf16 weights, forward and backward
    return max(compute, gathered / (bandwidth * GB))


def trial_seconds(shape: Shape, gpus: int, a: dict, step: float) -> float:
    eval_steps = a["eval_examples"] / a["batch"] / 3  # forward only: a third of a training step per example
    return a["trial_overhead_s"] + (a["train_steps"] + eval_steps) * step


def report(a: dict) -> str:
    lines = ["| model | params | GPUs | weights | gathered | activations (b=32) | cache | rotation full / "
             "low-rank | total full+cache / low-rank, no cache |", "|---|---|---|---|---|---|---|---|---|"]
    for shape in SHAPES:
        for gpus in (1, 8, 16):
            full = memory_gb(shape, gpus, "full", True, a)
            lean = memory_gb(shape, gpus, "low_rank", False, a)
            lines.append(f"| {shape.name} | {shape.params / 1e9:.1f} B | {gpus} | {full['weights']:.1f} | "
                         f"{full['gathered']:.1f} | {full['activations']:.1f} | {full['cache']:.1f} | "
                         f"{full['rotation']:.2f} / {lean['rotation']:.3f} | "
                         f"{full['total']:.1f} / {lean['total']:.1f} |")
    layers, positions, variables = a["sweep"]
    trials = layers * positions * variables
    gpus_in_all = a["cluster_gpus"]
    lines += ["", f"Sweep: {layers} x {positions} x {variables} = {trials} trials on {gpus_in_all} GPUs.", "",
              "| model | setup | GPUs per trial | trials at once | step (s) | trial (s) "
              "| sweep, no early stop |",
              "|---|---|---|---|---|---|---|"]
    for shape in SHAPES:
        for label, rotation, cache in (("full rotation, cache on GPU", "full", True),
                                       ("low-rank, no cache", "low_rank", False)):
            shard = smallest_shard(shape, rotation, cache, a)
            if shard is None:
                lines.append(f"| {shape.name} | {label} | > 64 | 0 | | | does not fit |")
                continue
            at_once = a["cluster_gpus"] // shard
            step = step_seconds(shape, shard, a)
            if not cache:  # the layers below the site also run forward, for base and source: ~2/3 more work
                step *= 1 + 2 / 3
            seconds = trial_seconds(shape, shard, a, step)
            waves = math.ceil(trials / at_once)
            lines.append(f"| {shape.name} | {label} | {shard} | {at_once} | {step:.2f} | {seconds:.0f} | "
                         f"{waves * seconds / 3600:.1f} h |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--measured", default="benchmarks/results/scaling_costs.json")
    args = parser.parse_args()
    a = dict(ASSUMPTIONS)
    measured = Path(args.measured)
    if measured.is_file():
        data = json.loads(measured.read_text())
        a["prompts"] = data["prompts"]["prompts"]
        full = [r for r in data["rotation"] if r["kind"] == "boundless"]
        big = max(full, key=lambda r: r["hidden"])
        a["rotation_d2_copies"] = round(big["peak_rss_growth_mb"] / big["hidden_squared_fp32_mb"], 1)
    print(report(a))


if __name__ == "__main__":
    main()
