"""The measurements behind docs/calibration.md: one Boundless DAS trial per (schedule, site), traced.

Each run trains one trial with `alignment.trial.run_trial` and prints one JSON line: the hard
widths and temperature every `log_every` steps, the step the mask became near-hard, the first
step a boundary reached width 0, dev IIA at each evaluation, and the final dev/test IIA.

    .venv/bin/python docs/calibration.py planted --d 64 --k 4
    .venv/bin/python docs/calibration.py price --layer 0 --position amount_first_digit \\
        --variable left_boundary --schedule 2023
    .venv/bin/python docs/calibration.py equality
    .venv/bin/python docs/calibration.py profile          # the mask at the same schedule point per block size
    .venv/bin/python docs/calibration.py table RUNS.jsonl...  # markdown rows from the JSON lines above
    .venv/bin/python docs/calibration.py steer --schedule 2023  # steering with left_boundary's subspace

`--set key=value` changes any intervention./train. key of the schedule on top (e.g.
`--set intervention.width_penalty=0.3`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alignment.config import PAPER_2023, InterventionConfig, TrainConfig, TrialConfig  # noqa: E402
from alignment.config_io import override  # noqa: E402
from alignment.interventions import build_intervention  # noqa: E402
from alignment.train import NEAR_HARD_TEMPERATURE, mask_hard_step, temperature_at  # noqa: E402
from alignment.trial import TrialInputs, run_trial  # noqa: E402
from search.config import SweepConfig  # noqa: E402

# The sweep's trial settings (search/config.py SweepConfig), logged every 10 steps, under each schedule.
SWEEP = SweepConfig()
SWEEP_TRAIN = replace(SWEEP.train, log_every=10)
OLD_SWEEP_TRAIN = replace(SWEEP_TRAIN, boundary_lr=3e-2, boundary_beta2=PAPER_2023.train.boundary_beta2,
                          lr_floor=PAPER_2023.train.lr_floor)
SCHEDULES: dict[str, tuple[InterventionConfig, TrainConfig]] = {
    # the 2023 schedule with the sweep's learning rates: the sweep's defaults before this calibration
    "2023": (PAPER_2023.intervention, OLD_SWEEP_TRAIN),
    # the block-scaled trial of issue 12: coordinate temperatures 1.6 -> 0.003, a weak penalty, init 1.0
    "issue-block-scaled": (replace(PAPER_2023.intervention, temperature_start=1.6, temperature_end=0.003,
                                   width_penalty=0.03, init_width=1.0), replace(OLD_SWEEP_TRAIN, boundary_lr=1e-2)),
    "default": (SWEEP.intervention, SWEEP_TRAIN),
}


def trace(config: TrialConfig, inputs: TrialInputs) -> dict[str, Any]:
    """Run one trial and summarise its metrics.jsonl."""
    with tempfile.TemporaryDirectory() as folder:
        summary = run_trial(config, folder, inputs)
        rows = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "dev_iia" in r]
    zero = next((r["step"] for r in logs if r["min_width"] == 0), None)
    return {"test_iia": summary.test_iia, "best_dev_iia": summary.best_dev_iia,
            "best_step": summary.best_step, "final_widths": summary.boundary_widths,
            "test_unchanged_share": round(summary.test_unchanged_share, 3),
            "prealign": summary.prealign_accuracy, "hidden": summary.hidden_size,
            "mask_hard_step": mask_hard_step(summary.steps, config.intervention), "first_zero_width_step": zero,
            "widths": {r["step"]: r["widths"] for r in logs},
            "temperature": {r["step"]: round(r["temperature"], 3) for r in logs},
            "dev_iia": {r["step"]: r["dev_iia"] for r in evals}, "seconds": summary.seconds}


def schedule(name: str, assignments: list[str]) -> tuple[InterventionConfig, TrainConfig]:
    intervention, train = SCHEDULES[name]
    for assignment in assignments:
        table, _, rest = assignment.partition(".")
        if table == "intervention":
            intervention = override(intervention, rest)
        elif table == "train":
            train = override(train, rest)
        else:
            raise SystemExit(f"--set must start with intervention. or train., got {assignment!r}")
    return intervention, train


def planted(args: argparse.Namespace) -> dict[str, Any]:
    from tests.planted_subspace import RIGHT_SITE, WRONG_SITE, planted_subspace_model

    intervention, train = schedule(args.schedule, args.set)
    layer, position = WRONG_SITE if args.wrong else RIGHT_SITE
    config = TrialConfig(model_path="planted", task=f"tests.planted_subspace:K{args.k}", layer=layer,
                         position=position, intervention=intervention, train=train, data=SWEEP.data)
    return trace(config, TrialInputs(loaded=planted_subspace_model(args.k, args.d)))


def shipped(args: argparse.Namespace, task: str, folder: str) -> dict[str, Any]:
    intervention, train = schedule(args.schedule, args.set)
    config = TrialConfig(model_path=f"alignment/task_models/{folder}", task=task, causal_model=args.causal_model,
                         variables=(args.variable,) if args.variable else (), layer=args.layer,
                         position=args.position, intervention=intervention, train=train, data=SWEEP.data)
    return trace(config, TrialInputs())


def profile(args: argparse.Namespace) -> dict[str, Any]:
    """Per block size, the mask at the same points of the schedule (shares of the anneal)."""
    intervention, train = schedule(args.schedule, args.set)
    total = train.max_steps or 300
    hard_step = mask_hard_step(total, intervention)
    out: dict[str, Any] = {"mask_hard_step": hard_step, "blocks": {}}
    for block in (64, 128, 576, 768, 4096):
        mask = build_intervention("boundless", block, soft_start=intervention.soft_start).mask
        mask.set_share(round(block / 3) / block)  # an edge between two coordinates
        rows = {}
        for point in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0):
            step = round(point * hard_step)
            temperature = temperature_at(step, total, intervention, block)
            mask.temperature.fill_(temperature)
            with torch.no_grad():
                soft = mask.weights()[0]
                with mask.hard_mode():
                    hard = mask.weights()[0]
            rows[f"{point:.2f}"] = {"step": step, "T": round(temperature, 3),
                                    "T_per_block": round(temperature / block, 4),
                                    "front_weight": round(float(soft[0]), 3),
                                    "max_deviation": round(float((soft - hard).abs().max()), 3),
                                    "near_hard": temperature <= NEAR_HARD_TEMPERATURE}
        out["blocks"][block] = rows
    return out


def steer(args: argparse.Namespace) -> dict[str, Any]:
    """Learn left_boundary at L0:amount_first_digit (evaluating every 100 steps), then set it True."""
    from alignment.models import load_model
    from alignment.steering import Steer, load_steering, steering_success

    intervention, train = schedule(args.schedule, args.set)
    path = "alignment/task_models/price_tagging"
    loaded = load_model(path)
    config = TrialConfig(model_path=path, task="price_tagging", causal_model="left_boundary", layer=0,
                         position="amount_first_digit", intervention=intervention,
                         train=replace(train, eval_every=100), data=SWEEP.data)
    with tempfile.TemporaryDirectory() as folder:
        summary = run_trial(config, folder, TrialInputs(loaded=loaded))
        saved = load_steering(folder, loaded.model)
        success = steering_success(loaded.model, loaded.tokenizer, [Steer(saved, "left_boundary", value=True)], n=300)
    return {"test_iia": summary.test_iia, "widths": summary.boundary_widths, "flipped": success.flipped,
            "kept": success.kept}


def site_name(run: dict[str, Any]) -> str:
    if run["what"] == "planted":
        return f"planted d={run['d']} k={run['k']}" + (" (wrong site)" if run["wrong"] else "")
    if run["what"] == "price":
        return f"price `{run['variable']}` L{run['layer']}:{run['position']}"
    return f"equality `wx` L{run['layer']}:{run['position']}"


def table(paths: list[str]) -> None:
    """Markdown rows, grouped by site (schedules in the order of the files): hard widths, steps, IIA."""
    runs = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines()]
    sites = list(dict.fromkeys(site_name(run) for run in runs))
    print("| site | schedule | widths at 50/100/150/200/250/300 | near-hard from | width 0 at | best dev (step) "
          "| test | floor |")
    print("|---|---|---|---|---|---|---|---|")
    for run in sorted(runs, key=lambda run: sites.index(site_name(run))):
        widths = "/".join(str(run["widths"][str(step)][0]) for step in range(50, 301, 50))
        print(f"| {site_name(run)} | {run['schedule']}{' ' + ' '.join(run['set']) if run['set'] else ''} "
              f"| {widths} | {run['mask_hard_step']} | {run['first_zero_width_step'] or '-'} "
              f"| {run['best_dev_iia']:.3f} ({run['best_step']}) | {run['test_iia']:.3f} "
              f"| {run['test_unchanged_share']:.2f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("planted", "price", "equality", "profile", "table", "steer"))
    parser.add_argument("files", nargs="*", help="table: JSON-lines files written by the other commands")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default="default")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--wrong", action="store_true", help="planted: the wrong site (layer 0, offset token)")
    parser.add_argument("--layer", type=int, default=0)
    parser.add_argument("--position", default="x")
    parser.add_argument("--variable", default=None)
    parser.add_argument("--causal-model", default=None)
    args = parser.parse_args(argv)
    if args.what == "table":
        table(args.files)
        return
    torch.set_num_threads(1)
    if args.what == "planted":
        result = planted(args)
    elif args.what == "price":
        result = shipped(args, "price_tagging", "price_tagging")
    elif args.what == "equality":
        args.causal_model = args.causal_model or "wx"
        result = shipped(args, "hierarchical_equality", "hierarchical_equality")
    elif args.what == "steer":
        result = steer(args)
    else:
        result = profile(args)
    print(json.dumps({"what": args.what, "schedule": args.schedule, "set": args.set,
                      **{k: v for k, v in vars(args).items() if k in ("d", "k", "wrong", "layer", "position",
                                                                       "variable")}, **result}))


if __name__ == "__main__":
    main()
