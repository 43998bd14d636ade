"""What each `align-search` subcommand does, given parsed arguments; returns what the CLI prints."""

from __future__ import annotations

import argparse
import errno
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignment.config_io import ConfigError
from causal_models import get_task
from causal_models.errors import UserError

# The 2023 run_alignment.py task names (its --task_name choices).
LEGACY_TASKS = {
    "pricing_tag_lb": ("price_tagging", "left_boundary"),
    "pricing_tag_ub": ("price_tagging", "right_boundary"),
    "pricing_tag_lub": ("price_tagging", "left_and_right_boundary"),
    "pricing_tag_mid_diff": ("price_tagging", "mid_point_distance"),
    "pricing_tag_bracket": ("price_tagging", "bracket_identity"),
    "pricing_tag_fixed": ("price_tagging", "left_boundary_fixed"),
}


# Errors only a write can give, which mean the disk, not a bug: full, over a size limit or quota, read-only.
# (A PermissionError, from a read or a write, is a user error of its own and names its file.)
WRITE_ERRORS = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file would pass the size limit",
                errno.EDQUOT: "the disk quota is used up", errno.EROFS: "the file system is read-only"}


def user_message(error: BaseException) -> str | None:
    """The one line the CLI prints for a user error, or None for a bug (which keeps its traceback)."""
    if isinstance(error, OSError) and error.errno in WRITE_ERRORS:
        what = repr(error.filename) if error.filename else "an output file"
        return (f"{what} must be writable, got {errno.errorcode[error.errno]} ({WRITE_ERRORS[error.errno]}). "
                f"Free some space or choose another output folder; files written before are left as they were")
    if isinstance(error, (UserError, FileNotFoundError, NotADirectoryError, PermissionError)):
        return str(error)
    return None


def run(args: argparse.Namespace, announce: Callable[[str], None]) -> Any:
    """Run the subcommand; `announce` prints a line while a long command is still running."""
    from search import model_commands, steer_command, sweep_commands

    if args.command in ("ui", "sweep"):
        return {"ui": sweep_commands.ui, "sweep": sweep_commands.sweep}[args.command](args, announce)
    handlers = {"tasks": tasks, "data": data, "sites": sites, "align": align, "cluster": cluster_command,
                "report": sweep_commands.report, "sync": sweep_commands.sync,
                "steer": steer_command.steer, "share": steer_command.share,
                "train-model": model_commands.train_model,
                "convert-gguf": model_commands.convert_gguf, "accuracy": model_commands.accuracy}
    return handlers[args.command](args)


def tasks(args: argparse.Namespace) -> str:
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


def data(args: argparse.Namespace) -> str:
    from causal_models import sample_pairs, save_pairs
    task = get_task(args.task)
    model = task.causal_model(args.causal_model)
    variables = args.variables.split(",") if args.variables else list(model.default_variables)
    if args.n <= 0:
        raise ConfigError(f"--n must be > 0, got {args.n}")
    pair_set = sample_pairs(model, variables, args.n, args.seed, balance_labels=not args.no_balance,
                            max_unchanged=args.max_unchanged)
    save_pairs(pair_set, task.template(args.template), task.name, _output_folder(args.out, "--out"))
    stats = pair_set.stats
    return (f"wrote {len(pair_set)} pairs to {args.out}/pairs.jsonl (and dataset/, stats.json): "
            f"labels {stats.label_shares}, unchanged {stats.unchanged_share}")


def sites(args: argparse.Namespace) -> str:
    from alignment.models import load_model
    from alignment.sites import find_layer_list, hidden_size, layer_count
    loaded = load_model(args.model)
    model = loaded.model
    if args.all:
        return "\n".join(name for name, _ in model.named_modules() if name)
    path = find_layer_list(model)
    count = layer_count(model)
    return (f"{type(model).__name__}: {count} decoder layers at {path}.0 .. {path}.{count - 1}, "
            f"hidden size {hidden_size(model)}")


def align(args: argparse.Namespace) -> dict[str, Any]:
    from alignment.config import DataConfig, InterventionConfig, TrainConfig, TrialConfig
    from alignment.trial import run_trial
    task, causal_model = LEGACY_TASKS.get(args.task, (args.task, args.causal_model))
    layer, position = args.layer, args.position
    das_layer, das_position = _das_config(Path(args.model_path))
    if layer is None and args.site is None:
        layer = das_layer if das_layer is not None else 0
    position = position or das_position or "last"
    config = TrialConfig(
        model_path=args.model_path, task=task, causal_model=args.causal_model or causal_model,
        variables=tuple(args.variables.split(",")) if args.variables else (), layer=layer, site=args.site,
        component=args.component,
        position=position, source_position=args.source_position, trust_remote_code=args.trust_remote_code,
        intervention=InterventionConfig(kind=args.intervention, subspace_dim=args.subspace_dim),
        train=TrainConfig(batch_size=args.train_batch_size, eval_batch_size=args.eval_batch_size,
                          gradient_accumulation=args.gradient_accumulation_steps, epochs=args.epochs,
                          max_steps=args.max_steps, lr=args.lr, boundary_lr=args.boundary_lr, warmup=args.warm_up,
                          seed=args.seed, log_every=args.log_step, eval_every=args.valid_steps, bf16=args.bf16,
                          threads=args.threads),
        data=DataConfig(n_train=args.n_training_examples, n_dev=args.n_eval_examples,
                        n_test=args.n_test_examples, seed=args.seed, template=args.template),
    )
    _check_before_loading(config)
    summary = run_trial(config, _output_folder(args.output_dir, "--output-dir"))
    keys = ("hypothesis", "prealign_accuracy", "best_dev_iia", "test_iia", "test_iia_full_vocab", "boundary_widths")
    return {key: summary[key] for key in keys}


def cluster_command(args: argparse.Namespace) -> Any:
    """`cluster status`: the nodes of the Ray cluster at --address and their free resources."""
    from cluster.ray_cluster import address_kind, cluster_status, connected, format_status
    address_kind(args.address)  # a malformed address is a user error before any connection attempt
    with connected(args.address):
        status = cluster_status()
    return status.to_dict() if args.json else format_status(status)


def _output_folder(path: str, flag: str) -> Path:
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{flag} must be a folder, got {path!r}, which is a file. Choose another {flag}")
    return folder


def _check_before_loading(config: Any) -> None:
    """Names and sizes that would otherwise fail after the model loads, or deep inside the trial."""
    from search.prepare import check_width, model_facts
    causal_model = get_task(config.task).causal_model(config.causal_model)
    for name in config.variables:
        causal_model.variable(name)
    if config.intervention.kind in ("das", "low_rank") and not Path(config.model_path).is_file():
        check_width(config.intervention.kind, config.intervention.subspace_dim,
                    len(config.variables or causal_model.default_variables), model_facts(config.model_path).hidden_size)


def _das_config(model_path: Path) -> tuple[int | None, str | None]:
    """The 2023 `das_config/config.json` of a model folder: (das_layer, first token of das_token_range)."""
    path = model_path / "das_config" / "config.json"
    if not path.is_file():
        return None, None
    config = json.loads(path.read_text())
    token_range = config.get("das_token_range")
    return config.get("das_layer"), str(token_range[0]) if token_range else None
