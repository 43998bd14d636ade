"""One align-search training step with every token above the site (before issue 14) against the suffix path.

Same model, hypothesis, batches, initial rotation and optimizer (`alignment.train`'s step through
`trial_vs_pyvene.AlignSearchTrainer`, one batch of 16 pairs a step); the variants alternate step
by step in one process, so background load hits them alike:

    all-tokens         FrozenSite(suffix=False): the layers above the site on every token (the old path)
    suffix             the layers above the site on the tokens from the edited one on; the earlier tokens'
                       keys and values kept per prompt (filled during the warm-up epoch)
    suffix-recomputed  the same with kv_budget_mb=0: those keys and values recomputed without
                       gradient every step (what a trial does past its budget, and what the first
                       epoch costs)

Before timing, it checks that the three give the same intervened answer logits and the same
first-step loss (exit status 1 if not). Memory: the peak of one step (torch's allocator) and,
beside it, the persistent stores: the hidden states below the site and the keys and values.

    .venv/bin/python -m benchmarks.suffix_step --layers 0,6,11 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from alignment.frozen import FrozenSite
from alignment.sites import layer_site
from alignment.tokenizer import task_tokenizer
from benchmarks.common import (
    SHAPES,
    TASK,
    load_average,
    machine,
    peak_step_bytes,
    price_tagging_pairs,
    random_model,
    timed,
)
from benchmarks.trial_vs_pyvene import BATCH, AlignSearchTrainer

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {"all-tokens": {"suffix": False}, "suffix": {"suffix": True},
            "suffix-recomputed": {"suffix": True, "kv_budget_mb": 0.0}}


def run_layer(model: torch.nn.Module, pairs: Any, layer: int, args: argparse.Namespace) -> dict[str, Any]:
    site, table = layer_site(model, layer), pairs.data.table
    load_before = load_average()
    hidden = model.config.hidden_size
    rotation = torch.linalg.qr(torch.randn(hidden, hidden, generator=torch.Generator().manual_seed(0)))[0]
    epoch = len(pairs.data.split("train")) // BATCH
    total = epoch + args.steps + 1                                    # warm-up epoch, timed steps, memory step
    trainers = {name: AlignSearchTrainer(FrozenSite(model, site, table, **options), pairs, args.kind, rotation,
                                         hidden // 2, total) for name, options in VARIANTS.items()}
    check = check_equal_work(trainers)
    times: dict[str, list[float]] = {name: [] for name in trainers}
    cpu: dict[str, list[float]] = {name: [] for name in trainers}
    losses: dict[str, list[float]] = {name: [] for name in trainers}
    for index in range(epoch + args.steps):
        for name, trainer in trainers.items():
            seconds, cpu_seconds, loss = timed(lambda trainer=trainer, index=index: trainer.step(index))
            losses[name].append(loss)
            if index >= epoch:
                times[name].append(seconds)
                cpu[name].append(cpu_seconds)
        if index == 0:
            first = {name: values[0] for name, values in losses.items()}
            spread = max(first.values()) - min(first.values())
            print(f"  first-step losses: {first}", flush=True)
            if spread > 1e-4 * max(1.0, abs(first["all-tokens"])):
                raise SystemExit(f"EQUAL-WORK CHECK FAILED: first-step losses differ by {spread:.3g}: {first}")
            check["first_step_losses"] = first
    rows = {}
    for name, trainer in trainers.items():
        frozen = trainer.interchange.frozen
        peak = peak_step_bytes(lambda trainer=trainer: trainer.step(total - 1), frozen.device) / 2**20
        rows[name] = {"step_s_min": min(times[name]), "step_s_median": statistics.median(times[name]),
                      "cpu_s_median": statistics.median(cpu[name]), "peak_step_mb": peak,
                      "hidden_cache_mb": len(table) * table.seq_len * hidden * 4 / 2**20 if frozen.cached else 0.0,
                      "kv_store_mb": frozen.store.nbytes / 2**20, "kv_rows": frozen.store.used,
                      "suffix_reason": frozen.suffix_reason}
    ratios = {f"all-tokens over {name}": {
        "best": min(times["all-tokens"]) / min(times[name]),
        "median_of_step_ratios": statistics.median(a / b for a, b in zip(times["all-tokens"], times[name],
                                                                          strict=True)),
        "cpu_median_of_step_ratios": statistics.median(a / b for a, b in zip(cpu["all-tokens"], cpu[name],
                                                                              strict=True))}
        for name in trainers if name != "all-tokens"}
    return {"layer": layer, "site": site, "prompts": len(table), "seq_len": table.seq_len, "steps": args.steps,
            "check": check, "variants": rows, "ratios": ratios, "load_before": load_before,
            "load_after": load_average()}


def check_equal_work(trainers: dict[str, AlignSearchTrainer]) -> dict[str, Any]:
    """Before any step: the same intervened answer logits on the first batch (they move by the intervention)."""
    reference = trainers["all-tokens"]
    batch = reference.batch(0)
    with torch.no_grad(), reference.intervention.materialized():
        expected = reference.interchange.logits(batch)
        untouched = reference.interchange.frozen.plain_logits(batch.pairs.base_rows)
    found = {"effect": float((expected - untouched).abs().max())}
    for name, trainer in trainers.items():
        with torch.no_grad(), trainer.intervention.materialized():
            found[name] = float((trainer.interchange.logits(batch) - expected).abs().max())
    difference = max(value for key, value in found.items() if key != "effect")
    print(f"  equal work: answer logits differ from all-tokens' by at most {difference:.3g} (the intervention "
          f"moves them by {found['effect']:.3g})", flush=True)
    if difference > 1e-3 * found["effect"]:
        raise SystemExit(f"EQUAL-WORK CHECK FAILED: the paths compute different logits: {found}")
    return found


def print_layer(result: dict[str, Any]) -> None:
    print(f"\nlayer {result['layer']} ({result['prompts']} prompts x {result['seq_len']} tokens; load "
          f"{result['load_before']} -> {result['load_after']})")
    print("| variant | best s/step | median s/step | median CPU s | peak step MB | + hidden cache MB "
          "| + keys/values MB |\n|---|---|---|---|---|---|---|")
    for name, row in result["variants"].items():
        print(f"| {name} | {row['step_s_min']:.3f} | {row['step_s_median']:.3f} | {row['cpu_s_median']:.3f} "
              f"| {row['peak_step_mb']:.1f} | {row['hidden_cache_mb']:.0f} | {row['kv_store_mb']:.0f} |")
    for key, ratio in result["ratios"].items():
        print(f"  {key}: {ratio['best']:.2f}x best, {ratio['median_of_step_ratios']:.2f}x median of step ratios "
              f"({ratio['cpu_median_of_step_ratios']:.2f}x CPU)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="gpt2-small", choices=sorted(SHAPES))
    parser.add_argument("--layers", type=lambda s: [int(x) for x in s.split(",")], default=[0, 6, 11])
    parser.add_argument("--kind", default="boundless", choices=["boundless", "das"])
    parser.add_argument("--position", default="last")
    parser.add_argument("--batches", type=int, default=4, help="batches of 16 pairs per epoch (the warm-up)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant after the warm-up epoch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", default=str(RESULTS / "suffix_step.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = random_model(args.shape, 0, getattr(torch, args.dtype), args.device)
    pairs = price_tagging_pairs(task_tokenizer(TASK, ["alpaca"]), "alpaca", BATCH * args.batches, args.position)
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "args": vars(args), "layers": []}
    for layer in args.layers:
        result = run_layer(model, pairs, layer, args)
        print_layer(result)
        report["layers"].append(result)
        report["machine"] = machine()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
