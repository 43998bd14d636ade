"""The plan line: how many trials a sweep will run and about how long they will take, said before it starts.

A grid of every token x three components x every layer is large, so its cost is stated up
front, and measured rather than guessed. A probe in the driver runs the first waiting trial
(`alignment.trial.run_trial`, the trials' own code) on the sweep's own model, pairs and batch
size, shortened to 1 + PROBE_STEPS steps, once at the deepest and once at the shallowest site of
the grid, and reads the run's own phases (`alignment.timing`): the seconds of one optimizer step
(the mean of its steps), of a scored pair (prealign, dev and test IIA over its batch-sized dev
and test splits), and the rest, the trial's fixed cost (its data and interchange, saving its
outputs). When the driver has built the sweep's shared files (search/caches.py), the probe maps
them as the trials will; otherwise one warm-up run comes first (first calls allocate and
initialise), and the fixed cost includes a cache over the probe's few prompts only. Step, pair and
fixed cost are taken on the line through the two sites by the number of decoder layers a step
runs. Each waiting trial then costs steps x step + scored pairs x pair + fixed + TUNE_SECONDS,
and the grid that sum divided by `resources.concurrency`. (The probe used to run each site twice
and take the least, and then with 1 and with 1 + PROBE_STEPS steps: 53 s, then 27 s, of a
SmolLM2-135M sweep; benchmarks/HISTORY.md.)

TUNE_SECONDS is what the probe cannot see: Ray starting, Tune scheduling the trial in a worker,
the trainable reading its pairs and prompts from the sweep folder, the driver mirroring it into
MLflow. It was measured with `benchmarks/tune_overhead.py` (27 short trials at concurrency 1:
Tune's wall time minus the trials' own, per trial; docs/grid.md, "Cost"). The estimate is an
upper bound for the grid (ASHA and the collapse rule stop weak trials early) and leaves out the
controls phase, which runs after it. The probe is skipped, and the line says so, for a GGUF
model (dequantizing it in the driver takes a minute) and for weights over PROBE_MAX_BYTES (the
driver would hold another copy of the model).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from alignment.models import LoadedModel, is_gguf, load_model
from alignment.timing import Phases, recording
from alignment.train import total_steps
from alignment.trial import TrialInputs, run_trial
from causal_models.hypotheses import Hypothesis
from search.config import SweepConfig
from search.folder import SweepFolder, TrialSpec
from search.prepare import load_prompts, load_rows, trial_config

PROBE_STEPS = 8
TUNE_SECONDS = 1.1
PROBE_MAX_BYTES = 2 * 2**30


@dataclass(frozen=True)
class TrialCost:
    """Seconds per optimizer step, per scored pair and per trial, measured at a site whose steps run `depth` layers."""

    depth: int
    step: float
    pair: float
    fixed: float


@dataclass(frozen=True)
class SweepPlan:
    """What the plan line says: trials to run, the grid's shape, and the estimate (None when not probed)."""

    trials: int
    done: int
    shape: str
    seconds: float | None
    costs: tuple[TrialCost, ...] = ()
    skipped: str | None = None

    def line(self, concurrency: int) -> str:
        runs = f"plan: {self.trials - self.done} trials to run ({self.shape})"
        if self.done:
            runs += f", {self.done} already done"
        if self.seconds is None:
            return f"{runs}; time not estimated ({self.skipped})"
        if not self.costs:
            return runs
        steps = sorted(cost.step * 1000 for cost in self.costs)
        step = f"{steps[0]:.0f}" if round(steps[0]) == round(steps[-1]) else f"{steps[0]:.0f}-{steps[-1]:.0f}"
        pair = max(cost.pair for cost in self.costs) * 1000
        fixed = max(cost.fixed for cost in self.costs)
        return (f"{runs}; at most about {_duration(self.seconds)} at {concurrency} at a time, from a probe of the "
                f"model: {step} ms a training step, {pair:.2g} ms a scored pair, {fixed:.2g} s to set up a trial, "
                f"plus {TUNE_SECONDS:g} s a trial for Ray Tune (early stopping shortens it; the controls come after)")


def plan_sweep(config: SweepConfig, folder: SweepFolder, specs: list[TrialSpec], n_layers: int, template: str,
               loaded: LoadedModel | None, skipped: str | None = None, shared: bool = False) -> SweepPlan:
    """The grid's size and, given the model loaded in the driver, its estimated duration.

    `skipped` says why the model was not loaded; `shared`, that the sweep's shared files are built
    (`search/caches.py`), so the probe's trials map them as the sweep's will.
    """
    waiting = waiting_specs(folder, specs)
    shape = grid_shape(specs)
    if loaded is None or not waiting:
        return SweepPlan(len(specs), len(specs) - len(waiting), shape, 0.0 if not waiting else None,
                         skipped=skipped)
    try:
        costs = probe(config, folder, waiting, loaded, n_layers, template, shared)
    except Exception as error:  # an estimate must never stop a sweep: its own trials report the fault
        return SweepPlan(len(specs), len(specs) - len(waiting), shape, None,
                         skipped=f"the probe's trial failed: {type(error).__name__}: {error}")
    seconds = sum(trial_seconds(config, s.hypothesis, costs, n_layers) for s in waiting)
    return SweepPlan(len(specs), len(specs) - len(waiting), shape, seconds / config.resources.concurrency,
                     tuple(costs))


def waiting_specs(folder: SweepFolder, specs: list[TrialSpec]) -> list[TrialSpec]:
    """The trials of `specs` that have neither a summary nor a status: those the sweep will run."""
    return [s for s in specs if folder.summary(s.key) is None and folder.status(s.key) is None]


def grid_shape(specs: list[TrialSpec]) -> str:
    """"2 causal models x 3 layers x 2 components x 27 positions x 1 intervention x 1 seed": the grid's factors."""
    hypotheses = [s.hypothesis for s in specs]
    counts = [("causal model", len({(h.causal_model, h.variables) for h in hypotheses})),
              ("layer", len({h.layer for h in hypotheses})), ("component", len({h.component for h in hypotheses})),
              ("position", len({(h.position, h.source_position) for h in hypotheses})),
              ("intervention", len({h.intervention for h in hypotheses})), ("seed", len({s.seed for s in specs}))]
    return " x ".join(f"{count} {name}{'s' if count != 1 else ''}" for name, count in counts)


def depth_of(hypothesis: Hypothesis, n_layers: int) -> int:
    """Decoder layers a training step runs: those above a layer's output, or the layer itself and above."""
    return n_layers - hypothesis.layer - (1 if hypothesis.component == "block" else 0)


def trial_seconds(config: SweepConfig, hypothesis: Hypothesis, costs: list[TrialCost], n_layers: int) -> float:
    """One trial's estimated seconds: its steps, its scored pairs, its fixed cost and Tune's."""
    cost = _interpolate(costs, depth_of(hypothesis, n_layers))
    steps = total_steps(config.data.n_train, config.train)
    evaluations = math.ceil(steps / config.train.eval_every)
    # dev IIA at every evaluation, test IIA once, prealign over dev and test once, the cache once
    pairs = (evaluations + 1) * config.data.n_dev + 2 * config.data.n_test + config.data.n_dev
    return steps * cost.step + pairs * cost.pair + cost.fixed + TUNE_SECONDS


def _interpolate(costs: list[TrialCost], depth: int) -> TrialCost:
    """The cost at `depth`, on the line through the measured costs (the one measured, if one)."""
    first, last = costs[0], costs[-1]
    if first.depth == last.depth:
        return first
    share = (depth - first.depth) / (last.depth - first.depth)
    return TrialCost(depth, *(max(a + share * (b - a), 0.0) for a, b in (
        (first.step, last.step), (first.pair, last.pair), (first.fixed, last.fixed))))


def why_not_loaded(model_path: str) -> str | None:
    """Why the driver does not load the sweep's model (for the probe and the shared files); None if it does."""
    if is_gguf(model_path):
        return "a GGUF model is not loaded in the driver"
    weights = sum(path.stat().st_size for path in Path(model_path).glob("*.safetensors"))
    if weights > PROBE_MAX_BYTES:
        return f"the model's {weights / 2**30:.1f} GiB of weights are not loaded in the driver"
    return None


def load_in_driver(config: SweepConfig, model_path: str) -> LoadedModel:
    device = "cuda" if config.resources.gpu > 0 and torch.cuda.is_available() else None
    return load_model(model_path, config.train.bf16, device=device, packed=config.train.packed)


def probe(config: SweepConfig, folder: SweepFolder, specs: list[TrialSpec], loaded: LoadedModel, n_layers: int,
          template: str, shared: bool = False) -> list[TrialCost]:
    """Trial costs measured at the deepest and the shallowest site of `specs`."""
    by_depth = sorted(specs, key=lambda s: depth_of(s.hypothesis, n_layers))
    sites = list({depth_of(s.hypothesis, n_layers): s for s in (by_depth[0], by_depth[-1])}.values())
    threads = torch.get_num_threads()
    try:
        return sorted((_probe_site(config, folder, spec, loaded, n_layers, template, warm_up=i == 0, shared=shared)
                       for i, spec in enumerate(sites)), key=lambda cost: cost.depth)
    finally:
        torch.set_num_threads(threads)  # run_trial sets the trial's own


def _probe_site(config: SweepConfig, folder: SweepFolder, spec: TrialSpec, loaded: LoadedModel, n_layers: int,
                template: str, warm_up: bool, shared: bool) -> TrialCost:
    trial = trial_config(config, spec, loaded.path, template)
    trial = replace(trial, train=replace(trial.train, eval_every=10**9, log_every=10**9, warmup=0.0,
                                         threads=trial.train.threads or max(1, int(config.resources.cpu))))
    rows = load_rows(folder.data_dir(spec.hypothesis.causal_model, spec.hypothesis.variables))
    batch = config.train.batch_size * config.train.gradient_accumulation
    m = max(1, min(batch, len(rows["dev"]), len(rows["test"])))
    splits = {"train": rows["train"][:batch], "dev": rows["dev"][:m], "test": rows["test"][:m]}
    inputs = (TrialInputs(loaded, splits, str(folder.cache_dir), load_prompts(folder.prompts_file)) if shared
              else TrialInputs(loaded, splits))
    with tempfile.TemporaryDirectory(prefix="align-search-probe-") as scratch:
        def run(steps: int) -> tuple[float, Phases]:
            settings = replace(trial, train=replace(trial.train, max_steps=steps))
            started = time.perf_counter()
            with recording(Phases()) as phases:
                run_trial(settings, Path(scratch) / str(steps), inputs)
            return time.perf_counter() - started, phases

        if warm_up and not shared:  # first calls allocate and initialise (the shared files' build did, if built)
            run(1)
        seconds, phases = run(1 + PROBE_STEPS)
    step = phases.seconds["step"] / phases.counts["step"]
    scoring = sum(phases.seconds.get(name, 0.0) for name in ("prealign", "dev_eval", "test_eval"))
    pair = scoring / (4 * m)  # prealign over dev and test, dev IIA once, test IIA once
    fixed = seconds - phases.seconds["step"] - scoring
    return TrialCost(depth_of(spec.hypothesis, n_layers), step, pair, max(fixed, 0.0))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
