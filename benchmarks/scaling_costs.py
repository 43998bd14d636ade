"""The measured inputs of docs/scaling.md: prompt counts, a decoder layer's step, the rotation's step.

    PYTHONPATH=. python benchmarks/scaling_costs.py [--threads 2] [--out FILE]

(FILE defaults to benchmarks/results/scaling_costs.json.)

1. How many distinct prompts (and tokens each) a trial's default pairs hold: the rows of the
   hidden-state cache.
2. Forward + backward (to the activations; the weights are frozen) of one LLaMA-7B-shaped
   decoder layer (4096 wide, MLP 11008, 32 heads) in fp32 at 8 prompts x 82 tokens: the
   achieved FLOP/s that turns the FLOP counts of docs/scaling.md into times on this CPU.
3. One optimizer step of the full rotation (Cayley map: compute, backward, Adam) at widths up
   to 4096, and of a low-rank basis: time and the growth of peak RSS (each in its own process).
Nothing here asserts a time; the machine is recorded with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch


def prompt_counts() -> dict[str, int]:
    from alignment.batches import build_trial_data
    from alignment.config import DataConfig
    from alignment.tokenizer import task_tokenizer
    from causal_models import get_task, make_splits, to_dataset

    task, data = get_task("price_tagging"), DataConfig()
    model = task.causal_model(None)
    pairs = make_splits(task, model.name, model.default_variables,
                        {"train": data.n_train, "dev": data.n_dev, "test": data.n_test}, data.seed)
    rows = {split: list(to_dataset(p, task.template("alpaca"))) for split, p in pairs.items()}
    answers = sorted(set(task.template("alpaca").answers.values()))
    table = build_trial_data(task_tokenizer(task), rows, model.default_variables, answers).table
    return {"pairs": sum(len(r) for r in rows.values()), "prompts": len(table), "tokens": table.seq_len}


def layer_step(batch: int = 8, tokens: int = 82, repeats: int = 3) -> dict[str, float]:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                         num_key_value_heads=32, num_hidden_layers=1)
    layer = LlamaDecoderLayer(config, 0).eval().requires_grad_(False)
    rotary = LlamaRotaryEmbedding(config)
    hidden = torch.randn(batch, tokens, 4096, requires_grad=True)
    positions = torch.arange(tokens)[None].expand(batch, -1)
    embeddings = rotary(hidden, positions)
    params = sum(p.numel() for p in layer.parameters())
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        output = layer(hidden, position_embeddings=embeddings)
        output = output[0] if isinstance(output, tuple) else output
        output.sum().backward()
        times.append(time.perf_counter() - start)
    seconds = min(times[1:])
    flops = 3 * 2 * params * batch * tokens  # forward 2 flops a weight a token; backward to inputs ~2x that
    return {"params": params, "batch": batch, "tokens": tokens, "seconds": seconds,
            "gflops_per_s": flops / seconds / 1e9}


def rotation_step(kind: str, hidden: int, rank: int = 64) -> dict[str, Any]:
    """Run in a fresh process: one warm-up step, then the timed step; peak RSS growth over the start."""
    from alignment.interventions import build_intervention

    base_rss = _current_rss()
    swap = build_intervention(kind, hidden, 1, subspace_dim=rank if kind == "low_rank" else None)
    optimizer = torch.optim.Adam([p for p in swap.parameters() if p.requires_grad], lr=1e-3)
    base, source = torch.randn(32, hidden), torch.randn(32, 1, hidden)
    active = torch.ones(32, 1, dtype=torch.bool)
    times = []
    for _ in range(4):
        start = time.perf_counter()
        optimizer.zero_grad()
        with swap.materialized():
            swap(base, source, active).square().mean().backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    grown = _peak_rss() - base_rss
    return {"kind": kind, "hidden": hidden, "seconds": min(times[1:]), "peak_rss_growth_mb": grown / 2**20,
            "hidden_squared_fp32_mb": hidden * hidden * 4 / 2**20}


def _current_rss() -> int:
    """Resident bytes now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    """This process's resident high-water mark (Linux VmHWM; unlike ru_maxrss it starts afresh at exec)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/scaling_costs.json")
    parser.add_argument("--rotation", nargs=2, metavar=("KIND", "HIDDEN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.rotation:
        print(json.dumps(rotation_step(args.rotation[0], int(args.rotation[1]))))
        return
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "threads": args.threads, "torch": torch.__version__, "load_average_at_start": os.getloadavg()}
    results: dict[str, Any] = {"machine": machine, "prompts": prompt_counts(), "llama7b_layer": layer_step(),
                               "rotation": []}
    for kind, hidden in (("boundless", 1024), ("boundless", 2048), ("boundless", 4096),
                         ("low_rank", 4096), ("low_rank", 8192), ("low_rank", 16384)):
        run = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--rotation", kind,
                              str(hidden)], capture_output=True, text=True, check=True, env=os.environ)
        results["rotation"].append(json.loads(run.stdout.strip().splitlines()[-1]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
