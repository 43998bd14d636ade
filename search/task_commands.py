"""`align-search tasks` and `data`: the tasks and their causal models, and counterfactual pairs to inspect."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from search.flags import SHARE, add_out, integer
from search.outputs import check_output_folder, writing

# `data --n`: sampling takes about a minute per million pairs (price tagging, one core); more is a typo.
MAX_PAIRS = 1_000_000


def register(sub: Any) -> None:
    p = sub.add_parser("tasks", help="list tasks, causal models, variables and named positions")
    p.set_defaults(handler=tasks)
    p = sub.add_parser("data", help="write counterfactual pairs for people to inspect")
    p.add_argument("task", help="a task name (align-search tasks), path/to/file.py:NAME or package.module:NAME")
    p.add_argument("--causal-model", "--causal_model")
    p.add_argument("--variables", help="comma-separated; default: the causal model's")
    p.add_argument("--n", type=integer(1, MAX_PAIRS), default=1000, help=f"pairs, at most {MAX_PAIRS:,}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--template")
    p.add_argument("--max-unchanged", type=SHARE, help="the most pairs whose label the swap leaves unchanged, 0-1")
    p.add_argument("--no-balance", action="store_true", help="do not balance the counterfactual labels")
    add_out(p, what="the folder to write (pairs.jsonl, dataset/, stats.json, meta.json)")
    p.set_defaults(handler=data)


def tasks(args: argparse.Namespace, announce: Callable[[str], None]) -> str:
    from causal_models import TASKS
    lines = []
    for task in TASKS.values():
        lines.append(f"{task.name}: {task.description}")
        for model in task.causal_models.values():
            marks = " (default)" if model.name == task.default_causal_model else (
                " (control)" if model.name in task.controls else "")
            lines.append(f"  causal model {model.name}{marks}: {model.description}")
            lines.append(f"    variables: {', '.join(model.intermediate_names)}; "
                         f"aligned by default: {', '.join(model.default_variables)}")
        for template in task.templates.values():
            marks = " (default)" if template.name == task.default_template else ""
            lines.append(f"  template {template.name}{marks}: positions {', '.join(template.position_names)}")
    return "\n".join(lines)


def data(args: argparse.Namespace, announce: Callable[[str], None]) -> str:
    from causal_models import get_task, sample_pairs, save_pairs
    from causal_models.dataset import quiet_datasets

    out = Path(args.out)
    check_output_folder(out, "--out", args.overwrite)
    task = get_task(args.task)
    model = task.causal_model(args.causal_model)
    variables = args.variables.split(",") if args.variables else list(model.default_variables)
    template = task.template(args.template)
    pair_set = sample_pairs(model, variables, args.n, args.seed, balance_labels=not args.no_balance,
                            max_unchanged=args.max_unchanged)
    quiet_datasets()
    with writing(out) as folder:
        save_pairs(pair_set, template, task.name, folder)
    stats = pair_set.stats
    return (f"wrote {len(pair_set)} pairs to {out}/pairs.jsonl (and dataset/, stats.json): "
            f"labels {stats.label_shares}, unchanged {stats.unchanged_share}")

