"""One trial step of align-search against pyvene 0.1.8: same model, hypothesis, batches and optimizer.

The hypothesis is price tagging's Left Boundary variable at the output of decoder layer L,
at the last prompt token (the one that predicts the answer; the Boundless DAS tutorial uses
its token 80 of 82, which at the last layer could not reach the answer), trained as plain
DAS (a fixed subspace of `--das-dim` coordinates) and as Boundless DAS.
Every variant below trains its own copy of the intervention, all from pyvene's initial
rotation, on the same batch at every step; the variants alternate step by step in one
process after `--warmup` steps, so background load hits them alike:

    pyvene-tutorial  pyvene as its Boundless DAS tutorial uses it (loss over every position's logits)
    pyvene-last      pyvene with logits_to_keep=1 (its best case)
    align-search     alignment.train's optimizer step (cached frozen prefix, logits at the answer, the
                     layers above the site on the tokens from the site's on: the suffix path)
    align-search-all-tokens  the same with every token above the site (train.suffix_only off: the
                     step before issue 14)
    align-search-uncached   the suffix path with the prefix cache off (what a trial does past its memory budget)
    floor            forward + backward of the layers above the site only, no intervention

Before timing anything it checks that the first step's loss is the same for all of them
(align-search's rotation is set to pyvene's with `set_matrix`; its boundary mask is put on
pyvene's coordinate convention, see `AlignSearchTrainer`), and exits with status 1 if not.

Run from the repository root in the benchmark's own environment (benchmarks/README.md):
    /work/bench-venv/bin/python -m benchmarks.trial_vs_pyvene --threads 2 --steps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignment.config import PAPER_2023
from alignment.frozen import FrozenSite
from alignment.interchange import Interchange, PositionedPairs
from alignment.interventions import build_intervention
from alignment.models import load_model
from alignment.sites import layer_count, layer_site
from alignment.tokenizer import task_tokenizer
from alignment.train import _batch, _optimizer, _optimizer_step, learning_rate_factor, temperature_at
from benchmarks.common import (
    SHAPES,
    TASK,
    TASK_MODEL_DIR,
    Pairs,
    floor_step,
    load_average,
    machine,
    peak_step_bytes,
    price_tagging_pairs,
    random_model,
    task_model_available,
    timed,
)
from benchmarks.pyvene_steps import PyveneBatch, PyveneTrainer, pyvene_intervention, rotation_of

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 16
KINDS = ("das", "boundless")
# Targets of issue 7 at GPT-2-small shape (CPU, 2 threads): speed-up over pyvene by layer and mode,
# and align-search's step as a multiple of the floor at layer 6.
TARGETS = {"tutorial": {0: 2.0, 6: 5.0, 11: 8.0}, "last": {6: 3.0}, "floor": {6: 1.3}}
# Issue 14's: the suffix path over the all-tokens step.
SUFFIX_TARGETS = {0: 3.0, 6: 5.0}


class AlignSearchTrainer:
    """align-search's own optimizer step (`alignment.train`) from a given rotation, one batch per step."""

    def __init__(self, frozen: FrozenSite, pairs: Pairs, kind: str, rotation: Tensor, das_dim: int,
                 total_steps: int):
        hidden = rotation.shape[0]
        subspace_dim = das_dim if kind == "das" else None
        # pyvene's mask and schedule are the 2023 ones: a share-valued boundary, soft at both ends
        intervention = build_intervention(kind, hidden, 1, subspace_dim=subspace_dim, soft_start=True,
                                          log_boundary=False).to(frozen.device)
        intervention.basis.set_matrix(rotation.to(frozen.device))
        if kind == "boundless":
            # pyvene's mask is sigmoid(i / T) * sigmoid((b * hidden - i) / T) at i = 0..hidden-1; align-search
            # puts coordinate centers at i + 1/2. Same cost; moved here so the two compute the same loss.
            intervention.mask.centers.copy_(torch.arange(hidden, dtype=torch.float32))
        self.intervention = intervention
        self.interchange = Interchange(frozen, intervention, pairs.position)
        self.pairs = self.interchange.locate(pairs.data.split("train"))
        self.config = replace(PAPER_2023.train, batch_size=BATCH, max_steps=total_steps, seed=0)
        self.intervention_config = replace(PAPER_2023.intervention, kind=kind, subspace_dim=subspace_dim)
        self.optimizer = _optimizer(intervention, self.config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: learning_rate_factor(step, total_steps, self.config.warmup))
        self.total_steps = total_steps
        intervention.set_temperature(temperature_at(0, total_steps, self.intervention_config))

    def batch(self, index: int) -> PositionedPairs:
        """The pairs of step `index` (what `_optimizer_step` reads)."""
        return _batch(self.pairs, index, self.batches_per_epoch, self.config)

    @property
    def batches_per_epoch(self) -> int:
        return -(-len(self.pairs) // BATCH)

    def step(self, index: int) -> float:
        self.intervention.set_temperature(temperature_at(index, self.total_steps, self.intervention_config))
        losses = _optimizer_step(self.interchange, self.pairs, index, self.batches_per_epoch, self.config,
                                 self.intervention_config, self.optimizer)
        self.scheduler.step()
        return losses["loss"]


@dataclass
class Variant:
    name: str
    kind: str | None
    step: Any                                   # (step index) -> loss
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    peak_step_mb: float | None = None


def build_variants(model: torch.nn.Module, frozen: FrozenSite, others: list[tuple[str, FrozenSite]], pairs: Pairs,
                   layer: int, args: argparse.Namespace, total: int,
                   checks: dict[str, Any]) -> list[Variant]:
    """Every trainer of one layer, all starting from pyvene's initial rotation; the floor last.

    Checks on the way (into `checks`) that align-search's intervened logits equal pyvene's.
    """
    rtol = tolerance(next(model.parameters()).dtype)
    hidden = frozen.hidden_size()
    reference = AlignSearchTrainer(frozen, pairs, "das", torch.eye(hidden), 1, total)
    batches = [reference.batch(i) for i in range(total)]
    position = uniform_position(reference.pairs)
    table = pairs.data.table
    inputs = [PyveneBatch({"input_ids": table.input_ids[b.pairs.base_rows]},
                          {"input_ids": table.input_ids[b.pairs.source_rows[:, 0]]}, b.pairs.labels, position)
              for b in batches]
    device = frozen.device
    variants = []
    for kind in args.kinds:
        pv_init = pyvene_intervention(kind, hidden, args.das_dim or hidden // 2, seed=args.seed)
        rotation = rotation_of(pv_init)
        theirs = [PyveneTrainer(model, layer, pv_init.to(device), mode, total)
                  for mode in ("tutorial", "last")]
        variants += [Variant(f"pyvene-{t.mode}/{kind}", kind, _pyvene_step(t, inputs, device))
                     for t in theirs]
        for name, site in [("align-search", frozen), *others]:
            ours = AlignSearchTrainer(site, pairs, kind, rotation, args.das_dim or hidden // 2, total)
            checks[f"{name}/{kind}"] = check_equal_work(theirs[0], ours, batches[0], inputs[0], device, rtol)
            variants.append(Variant(f"{name}/{kind}", kind, ours.step))
    floor_rows = [(b.pairs.base_rows, b.pairs.labels) for b in batches]
    variants.append(Variant("floor", None, lambda i: floor_step(frozen, *floor_rows[i])))
    return variants


def _pyvene_step(trainer: PyveneTrainer, inputs: list[PyveneBatch], device: torch.device) -> Any:
    def step(index: int) -> float:
        return trainer.step(index, inputs[index].to(device))
    return step


def check_equal_work(theirs: PyveneTrainer, ours: AlignSearchTrainer, batch: PositionedPairs,
                     inputs: PyveneBatch, device: torch.device, rtol: float,
                     atol: float | None = None) -> dict[str, float]:
    """Before any step, from the same rotation: the same intervention and the same intervened logits.

    1. On the batch's own site vectors, pyvene's intervention output equals align-search's to 10 * `rtol`
       of what the intervention changes (a boundary mask off by half a coordinate, 0.25 % of it, fails).
    2. Through both pipelines, the answer logits agree far better than the intervention moves them
       (a random model barely reacts to it, so this checks the site, position and batching).
    3. With `atol`: the intervened answer logits equal align-search's reference path (full forward
       passes with hooks) and the un-intervened ones its plain forward pass, to `atol`.
    """
    inputs = inputs.to(device)
    frozen = ours.interchange.frozen
    pairs = batch.pairs
    with torch.no_grad():
        base = frozen.vectors(pairs.base_rows, batch.base_positions[:, 0])                    # (B, hidden)
        source = frozen.vectors(pairs.source_rows[:, 0], batch.source_positions[:, 0, 0])      # (B, hidden)
        theirs_out = theirs.intervention(base.float(), source.float())
        ours_out = ours.intervention(base, source[:, None], pairs.active.to(device)).float()
        pyvene_logits = theirs.logits(inputs)
        ours_logits = ours.interchange.logits(batch, plain=atol is not None)
        plain = theirs.model.model(**inputs.base).logits[:, -1].float()
        ours_plain = frozen.plain_logits(pairs.base_rows).float()
    found = {"intervention_max_difference": float((theirs_out - ours_out).abs().max()),
             "intervention_effect": float((theirs_out - base.float()).abs().max()),
             "logits_max_difference": float((pyvene_logits - ours_logits).abs().max()),
             "logits_effect": float((pyvene_logits - plain).abs().max()),
             "unintervened_logits_max_difference": float((plain - ours_plain).abs().max())}
    print("  equal work: intervention output differs by {intervention_max_difference:.3g} (it moves the site "
          "by {intervention_effect:.3g}); answer logits differ by {logits_max_difference:.3g} (the "
          "intervention moves them by {logits_effect:.3g}); un-intervened logits differ by "
          "{unintervened_logits_max_difference:.3g}".format(**found), flush=True)
    if not (found["intervention_effect"] > 0
            and found["intervention_max_difference"] <= 10 * rtol * found["intervention_effect"]
            and found["logits_max_difference"] <= 0.1 * found["logits_effect"]
            and (atol is None or max(found["logits_max_difference"],
                                     found["unintervened_logits_max_difference"]) <= atol)):
        raise SystemExit(f"EQUAL-WORK CHECK FAILED: pyvene and align-search compute different things: "
                         f"{found}")
    return found


def uniform_position(pairs: PositionedPairs) -> int:
    """The one token index of the site in every base and source prompt (pyvene's tutorial takes an int)."""
    positions = torch.cat([pairs.base_positions.flatten(), pairs.source_positions[pairs.pairs.active].flatten()])
    if not bool((positions == positions[0]).all()):
        raise SystemExit("the benchmark needs every prompt to put the site at the same token index "
                         f"(pyvene's tutorial passes one int), got {sorted(set(positions.tolist()))}")
    return int(positions[0])


def run_steps(variants: list[Variant], warmup: int, steps: int, rtol: float) -> dict[str, Any]:
    """Alternate the variants step by step; keep the times after `warmup`; check the first losses."""
    check: dict[str, Any] = {}
    for index in range(warmup + steps):
        for variant in variants:
            seconds, cpu_seconds, loss = timed(lambda variant=variant, index=index: variant.step(index))
            variant.losses.append(loss)
            if index >= warmup:
                variant.seconds.append(seconds)
                variant.cpu_seconds.append(cpu_seconds)
        if index == 0:
            check = check_first_losses(variants, rtol)
    return check


def tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance of the equal-loss check (fp32 rounding; bf16 on GPU)."""
    return 1e-4 if dtype == torch.float32 else 3e-2


def check_first_losses(variants: list[Variant], rtol: float) -> dict[str, Any]:
    """The first step's loss (same rotation, boundary, temperature, batch) must agree across libraries."""
    report: dict[str, Any] = {}
    for kind in {v.kind for v in variants if v.kind}:
        losses = {v.name: v.losses[0] for v in variants if v.kind == kind}
        shown = ", ".join(f"{name} {loss:.7f}" for name, loss in losses.items())
        print(f"  first-step loss, {kind}: {shown}", flush=True)
        values = list(losses.values())
        spread = max(values) - min(values)
        report[kind] = {"losses": losses, "max_difference": spread}
        if spread > rtol * max(1.0, abs(values[0])):
            raise SystemExit(f"EQUAL-WORK CHECK FAILED at {kind}: first-step losses differ by {spread:.3g} "
                             f"(tolerance {rtol:g} relative): {losses}")
    return report


def measure_memory(variants: list[Variant], index: int, device: torch.device) -> None:
    for variant in variants:
        variant.peak_step_mb = peak_step_bytes(lambda variant=variant: variant.step(index), device) / 2**20


def summarize(variants: list[Variant]) -> dict[str, Any]:
    rows = {}
    for v in variants:
        median = statistics.median(v.seconds) if v.seconds else float("nan")
        rows[v.name] = {"step_s_median": median, "step_s_min": min(v.seconds, default=float("nan")),
                        "cpu_s_median": statistics.median(v.cpu_seconds) if v.cpu_seconds else float("nan"),
                        "examples_per_s": BATCH / median, "peak_step_mb": v.peak_step_mb, "n": len(v.seconds),
                        "first_loss": v.losses[0], "last_loss": v.losses[-1]}
    return {"variants": rows, "ratios": _ratios(variants, "seconds"),
            "cpu_ratios": _ratios(variants, "cpu_seconds")}


def _ratios(variants: list[Variant], clock: str) -> dict[str, float]:
    """Speed-ups over align-search and align-search over the floor, from the `clock` times."""
    times = {v.name: getattr(v, clock) for v in variants}
    ratios: dict[str, float] = {}
    for kind in {v.kind for v in variants if v.kind}:
        ours = times[f"align-search/{kind}"]
        for other in ("pyvene-tutorial", "pyvene-last"):
            ratios[f"{other}/{kind} over align-search"] = _median_ratio(times[f"{other}/{kind}"], ours)
        ratios[f"align-search/{kind} over floor"] = _median_ratio(ours, times["floor"])
        if f"align-search-all-tokens/{kind}" in times:
            ratios[f"align-search-all-tokens/{kind} over align-search"] = _median_ratio(
                times[f"align-search-all-tokens/{kind}"], ours)
        if f"align-search-uncached/{kind}" in times:
            ratios[f"pyvene-tutorial/{kind} over align-search-uncached"] = _median_ratio(
                times[f"pyvene-tutorial/{kind}"], times[f"align-search-uncached/{kind}"])
    return ratios


def _median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of per-step ratios (robust to load that hits one alternation round)."""
    if not numerator:
        return float("nan")
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def run_layer(model: torch.nn.Module, pairs: Pairs, layer: int, args: argparse.Namespace) -> dict[str, Any]:
    site = layer_site(model, layer)
    load_before = load_average()
    started = time.perf_counter()
    frozen = FrozenSite(model, site, pairs.data.table, cache="auto", cache_budget_mb=args.cache_budget_mb)
    cache_build_s = time.perf_counter() - started
    if not frozen.cached:
        raise SystemExit(f"the prefix cache of {len(pairs.data.table)} prompts must fit --cache-budget-mb")
    others = [(name, FrozenSite(model, site, pairs.data.table, **options)) for name, options, wanted in (
        ("align-search-all-tokens", {"cache_budget_mb": args.cache_budget_mb, "suffix": False}, args.all_tokens),
        ("align-search-uncached", {"cache": "off"}, args.uncached)) if wanted]
    total = args.warmup + args.steps + 1                      # + 1: the memory step
    print(f"layer {layer} ({site}): prefix cache built in {cache_build_s:.1f} s", flush=True)
    checks: dict[str, Any] = {}
    variants = build_variants(model, frozen, others, pairs, layer, args, total, checks)
    checks["first_step_losses"] = run_steps(variants, args.warmup, args.steps,
                                            tolerance(next(model.parameters()).dtype))
    if args.steps:
        measure_memory(variants, total - 1, frozen.device)
    table = pairs.data.table
    cache_mb = len(table) * table.seq_len * frozen.hidden_size() * 4 / 2**20
    return {"layer": layer, "site": site, "cache_mb": cache_mb, "cache_build_s": cache_build_s,
            "kv_mb": frozen.store.nbytes / 2**20, "suffix_reason": frozen.suffix_reason,
            "prompts": len(table), "check": checks, "load_before": load_before, "load_after": load_average(),
            **summarize(variants)}


def targets_met(layer: int, result: dict[str, Any]) -> dict[str, Any]:
    """Issue 7's targets for this layer (GPT-2-small shape only), with the measured value of each."""
    met: dict[str, Any] = {}
    ratios, rows = result["ratios"], result["variants"]
    for kind in KINDS:
        for mode in ("tutorial", "last"):
            key = f"pyvene-{mode}/{kind} over align-search"
            if layer in TARGETS[mode] and key in ratios:
                met[f"{key} >= {TARGETS[mode][layer]}"] = (ratios[key], ratios[key] >= TARGETS[mode][layer])
        key = f"align-search/{kind} over floor"
        if layer in TARGETS["floor"] and key in ratios:
            met[f"{key} <= {TARGETS['floor'][layer]}"] = (ratios[key], ratios[key] <= TARGETS["floor"][layer])
        key = f"align-search-all-tokens/{kind} over align-search"
        if layer in SUFFIX_TARGETS and key in ratios:
            met[f"{key} >= {SUFFIX_TARGETS[layer]}"] = (ratios[key], ratios[key] >= SUFFIX_TARGETS[layer])
        ours, theirs = rows.get(f"align-search/{kind}", {}), rows.get(f"pyvene-tutorial/{kind}", {})
        if ours.get("peak_step_mb") is not None and theirs.get("peak_step_mb") is not None:
            total = ours["peak_step_mb"] + result["cache_mb"] + result["kv_mb"]
            met[f"align-search/{kind} step + cache + keys/values MB <= pyvene-tutorial step MB"] = (
                (total, theirs["peak_step_mb"]), total <= theirs["peak_step_mb"])
    return met


def print_layer(name: str, result: dict[str, Any]) -> None:
    print(f"\n{name}, layer {result['layer']} (load {result['load_before']} -> {result['load_after']}; "
          f"cache {result['cache_mb']:.0f} MB for {result['prompts']} prompts, "
          f"built in {result['cache_build_s']:.1f} s; keys/values {result['kv_mb']:.0f} MB)")
    print("| variant | s/step median | min | CPU s/step | examples/s | peak step MB |\n"
          "|---|---|---|---|---|---|")
    for variant, row in result["variants"].items():
        memory = "-" if row["peak_step_mb"] is None else f"{row['peak_step_mb']:.1f}"
        print(f"| {variant} | {row['step_s_median']:.3f} | {row['step_s_min']:.3f} "
              f"| {row['cpu_s_median']:.3f} | {row['examples_per_s']:.1f} | {memory} |")
    for key, value in result["ratios"].items():
        print(f"  {key}: {value:.2f}x wall, {result['cpu_ratios'][key]:.2f}x CPU time")
    for key, (value, ok) in result.get("targets", {}).items():
        print(f"  target {key}: {'MET' if ok else 'MISSED'} ({value})")
    sys.stdout.flush()


def models_to_run(args: argparse.Namespace) -> list[tuple[str, torch.nn.Module, Any, str]]:
    """(name, model, tokenizer, template) for each requested model that exists."""
    dtype = getattr(torch, args.dtype)
    found = []
    for name in args.models:
        if name == "task-model":
            if not task_model_available(Path(args.task_model)):
                print(f"skipping task-model: no model at {args.task_model} (train one with "
                      f"`align-search train-model price_tagging --out {args.task_model}`)", flush=True)
                continue
            loaded = load_model(args.task_model, bf16=dtype == torch.bfloat16, device=args.device)
            found.append((name, loaded.model, loaded.tokenizer, loaded.meta.get("template", "compact")))
        elif name in SHAPES:
            # The word-level tokenizer's ids (under 100) are used as ids of the random model's vocabulary.
            tokenizer = task_tokenizer(TASK, [args.template])
            found.append((name, random_model(name, args.seed, dtype, args.device), tokenizer, args.template))
        else:
            raise SystemExit(f"--models must name task-model or one of {sorted(SHAPES)}, got {name!r}")
    return found


def default_layers(name: str, n_layers: int) -> list[int]:
    return [0, 6, 11] if name == "gpt2-small" else sorted({0, n_layers // 2, n_layers - 1})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="gpt2-small,task-model", type=lambda s: s.split(","),
                        help=f"comma list of task-model and {sorted(SHAPES)}")
    parser.add_argument("--layers", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="default: 0,6,11 for gpt2-small; first, middle and last otherwise")
    parser.add_argument("--kinds", default=list(KINDS), type=lambda s: s.split(","))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps first; at least --batches-per-epoch, so that the keys and values are kept")
    parser.add_argument("--batches-per-epoch", type=int, default=3,
                        help="batches of 16 pairs an epoch (0: every step new pairs, each filling the key/value store)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (also set OMP_NUM_THREADS)")
    parser.add_argument("--das-dim", type=int, default=None,
                        help="plain DAS subspace size (default hidden/2)")
    parser.add_argument("--template", default="alpaca", help="prompt template for the random models")
    parser.add_argument("--position", default="last",
                        help="named position of the site (default: the answer token)")
    parser.add_argument("--uncached", action=argparse.BooleanOptionalAction, default=True,
                        help="also time align-search with the prefix cache off")
    parser.add_argument("--all-tokens", action=argparse.BooleanOptionalAction, default=True,
                        help="also time align-search with every token above the site (suffix_only off)")
    parser.add_argument("--cache-budget-mb", type=float, default=2048.0)
    parser.add_argument("--task-model", default=str(TASK_MODEL_DIR))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-only", action="store_true", help="only the first-step equal-loss check")
    parser.add_argument("--out", default=str(RESULTS / "trial_vs_pyvene.json"))
    args = parser.parse_args(argv)
    if args.check_only:
        args.warmup, args.steps = 1, 0
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "args": vars(args), "models": {}}
    models = models_to_run(args)
    plan = {name: args.layers or default_layers(name, layer_count(model)) for name, model, _, _ in models}
    for name, model, _, _ in models:   # every layer checked before the first (long) step runs
        bad = [layer for layer in plan[name] if not 0 <= layer < layer_count(model)]
        if bad:
            raise SystemExit(f"--layers must be in 0..{layer_count(model) - 1} for {name}, got {bad}; "
                             f"run that model with its own --layers (or --models to leave it out)")
    for name, model, tokenizer, template in models:
        layers = plan[name]
        total = args.warmup + args.steps + 1
        # Epochs of --batches-per-epoch batches: from the second on, the suffix path reads its stored keys and values.
        n_pairs = BATCH * (args.batches_per_epoch or total)
        pairs = price_tagging_pairs(tokenizer, template, n_pairs, args.position, seed=args.seed)
        entry: dict[str, Any] = {"template": template, "seq_len": pairs.data.table.seq_len, "layers": []}
        for layer in layers:
            result = run_layer(model, pairs, layer, args)
            if name == "gpt2-small" and args.steps:
                result["targets"] = targets_met(layer, result)
            if args.steps:
                print_layer(name, result)
            entry["layers"].append(result)
            report["models"][name] = entry
            if args.steps:   # after every layer, so a later failure loses nothing measured
                _write(report, args.out)
    if args.steps:
        print(f"\nwrote {args.out}")
    return report


def _write(report: dict[str, Any], out: str) -> None:
    report["machine"] = machine()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
