"""How far below the floor a step could go: reuse the upper layers' keys and values before the site.

An intervention at token P changes nothing at the positions before P (attention is causal),
so above the site those positions hold the same hidden states, keys and values at every
step of a trial. The floor (`common.floor_step`) still recomputes them and backpropagates
through them. This prototype, GPT-2 only and for a site at the last token, measures:

    floor        the floor as in trial_vs_pyvene (all positions of the upper layers, fwd + bwd)
    kv-prefill   upper layers on positions < P without gradient (keys and values), then
                 fwd + bwd of the upper layers at position P alone: what a step would cost
                 without a key/value cache across steps
    kv-cached    only the second part: the keys and values kept from the first epoch

It checks that all three give the same loss, then alternates them like trial_vs_pyvene.
No intervention runs in any of them (their difference is all model work).

    /work/bench-venv/bin/python -m benchmarks.kv_floor --layer 6 --steps 10
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import DynamicCache

from alignment.frozen import FrozenSite
from alignment.sites import layer_site
from alignment.tokenizer import task_tokenizer
from benchmarks.common import TASK, floor_step, price_tagging_pairs, random_model, timed


def upper_keys_values(model: torch.nn.Module, layer: int, hidden: Tensor) -> DynamicCache:
    """Keys and values of the layers above `layer` for `hidden` (B, P, d): the positions before the site."""
    cache = DynamicCache()
    with torch.no_grad():
        for block in model.transformer.h[layer + 1:]:
            hidden = block(hidden, cache=cache, use_cache=True)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    return cache


def last_position_step(model: torch.nn.Module, layer: int, site: Tensor, cache: DynamicCache,
                       labels: Tensor) -> float:
    """Fwd + bwd of the upper layers at the last position only, attending to cached keys and values."""
    hidden = site
    for block in model.transformer.h[layer + 1:]:
        hidden = block(hidden, cache=cache, use_cache=True)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    logits = model.lm_head(model.transformer.ln_f(hidden[:, -1]))
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    if len(model.transformer.h) > layer + 1:
        cache.crop(-site.shape[1])                    # drop the site's own keys and values again
        for cached in cache.layers[layer + 1:]:       # and the graph that the concatenation put on them
            cached.keys, cached.values = cached.keys.detach(), cached.values.detach()
    return float(loss.detach())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = random_model("gpt2-small")
    pairs = price_tagging_pairs(task_tokenizer(TASK, ["alpaca"]), "alpaca", 16, "last")
    frozen = FrozenSite(model, layer_site(model, args.layer), pairs.data.table)
    rows, labels = pairs.data.split("train").base_rows, pairs.data.split("train").labels
    hidden = frozen.hidden(rows)                                          # (B, T, d)
    cached = upper_keys_values(model, args.layer, hidden[:, :-1])

    def prefill() -> float:
        cache = upper_keys_values(model, args.layer, hidden[:, :-1])
        site = hidden[:, -1:].clone().requires_grad_(True)
        return last_position_step(model, args.layer, site, cache, labels)

    def kv_cached() -> float:
        site = hidden[:, -1:].clone().requires_grad_(True)
        return last_position_step(model, args.layer, site, cached, labels)

    steps = {"floor": lambda: floor_step(frozen, rows, labels), "kv-prefill": prefill, "kv-cached": kv_cached}
    losses = {name: step() for name, step in steps.items()}
    print("losses (no intervention):", losses)
    if max(losses.values()) - min(losses.values()) > 1e-4:
        raise SystemExit("the key/value steps do not compute the floor's loss")
    times: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for index in range(args.warmup + args.steps):
        for name, step in steps.items():
            seconds, cpu_seconds, _ = timed(step)
            if index >= args.warmup:
                times[name].append(seconds)
                cpu[name].append(cpu_seconds)
    for name in steps:
        wall = statistics.median(a / b for a, b in zip(times["floor"], times[name], strict=True))
        cpu_ratio = statistics.median(a / b for a, b in zip(cpu["floor"], cpu[name], strict=True))
        print(f"{name}: {statistics.median(times[name]):.3f} s/step wall, {statistics.median(cpu[name]):.3f} "
              f"CPU; floor / this = {wall:.1f}x wall, {cpu_ratio:.1f}x CPU")


if __name__ == "__main__":
    main()
