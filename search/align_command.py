"""`align-search align`: train and evaluate one hypothesis, from flags or `--set key=value`.

Every flag is a name for a `TrialConfig` key, listed once in `FLAGS` with its 2023
`run_alignment.py` spelling (`--valid_steps` is `train.eval_every`); `--set` reaches every
other key with the sweep's syntax. The 2023 flags that did nothing, or that mean nothing
here, are refused with a hint (`LEGACY`) instead of being swallowed. A 2023 model folder's
`das_config/config.json` gives the default layer and position; the 2023 task names
(`pricing_tag_lb`) name a task and causal model.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from causal_models.errors import UserError
from search.flags import POSITIVE, SHARE, add_model_path, add_out, integer, number

# The 2023 run_alignment.py task names (its --task_name choices).
LEGACY_TASKS = {
    "pricing_tag_lb": ("price_tagging", "left_boundary"),
    "pricing_tag_ub": ("price_tagging", "right_boundary"),
    "pricing_tag_lub": ("price_tagging", "left_and_right_boundary"),
    "pricing_tag_mid_diff": ("price_tagging", "mid_point_distance"),
    "pricing_tag_bracket": ("price_tagging", "bracket_identity"),
    "pricing_tag_fixed": ("price_tagging", "left_boundary_fixed"),
}


class Flag(NamedTuple):
    names: tuple[str, ...]  # this project's spelling first, then the 2023 one
    keys: tuple[str, ...]  # the TrialConfig keys it sets
    type: Any = None  # an argparse type; None for an on/off flag
    help: str = ""


FLAGS = (
    Flag(("--causal-model", "--causal_model"), ("causal_model",), str),
    Flag(("--variables",), ("variables",), lambda text: tuple(text.split(",")), "comma-separated"),
    Flag(("--layer",), ("layer",), integer(0), "decoder layer (its output is the site)"),
    Flag(("--site",), ("site",), str, "a module path, for sites other than a decoder layer's output"),
    Flag(("--component",), ("component",), str, "block (the layer's output, the default), attention or mlp "
                                                 "(what that sub-layer adds to the residual stream)"),
    Flag(("--position",), ("position",), str, "a named position, a token index, or a group a+b of them "
                                               "(default: last)"),
    Flag(("--source-position", "--source_position"), ("source_position",), str),
    Flag(("--intervention",), ("intervention.kind",), str, "boundless, das, low_rank, full_swap, ..."),
    Flag(("--subspace-dim", "--subspace_dim"), ("intervention.subspace_dim",), POSITIVE),
    Flag(("--train-batch-size", "--train_batch_size"), ("train.batch_size",), POSITIVE),
    Flag(("--eval-batch-size", "--eval_batch_size"), ("train.eval_batch_size",), POSITIVE),
    Flag(("--gradient-accumulation-steps", "--gradient_accumulation_steps"), ("train.gradient_accumulation",),
         POSITIVE),
    Flag(("--lr",), ("train.lr",), number(above=0), "rotation learning rate"),
    Flag(("--boundary-lr", "--boundary_lr"), ("train.boundary_lr",), number(above=0)),
    Flag(("--seed",), ("train.seed", "data.seed"), int, "seeds the intervention and the pairs"),
    Flag(("--epochs",), ("train.epochs",), POSITIVE),
    Flag(("--max-steps", "--max_steps"), ("train.max_steps",), POSITIVE),
    Flag(("--warm-up", "--warm_up"), ("train.warmup",), SHARE, "warm-up share of the steps"),
    Flag(("--n-training-examples", "--n_training_examples"), ("data.n_train",), POSITIVE),
    Flag(("--n-eval-examples", "--n_eval_examples"), ("data.n_dev",), POSITIVE),
    Flag(("--n-test-examples", "--n_test_examples"), ("data.n_test",), POSITIVE),
    Flag(("--log-step", "--log_step"), ("train.log_every",), POSITIVE),
    Flag(("--valid-steps", "--valid_steps"), ("train.eval_every",), POSITIVE, "dev IIA every N steps"),
    Flag(("--bf16",), ("train.bf16",)),
    Flag(("--threads",), ("train.threads",), POSITIVE, "torch threads (default: torch's)"),
    Flag(("--template",), ("data.template",), str),
    Flag(("--device",), ("train.device",), str, "cuda, cuda:N or cpu (default: cpu)"),
    Flag(("--trust-remote-code",), ("trust_remote_code",)),
)
# 2023 flags with nothing to do here, and what to do instead.
LEGACY = {
    "--do_align": "align always trains; drop it",
    "--do-align": "align always trains; drop it",
    "--do_eval": "dev IIA is measured every --valid-steps; drop it",
    "--do_test": "test IIA is always measured on held-out pairs; drop it",
    "--is_wandb": "align writes metrics.jsonl; a sweep logs every trial to MLflow (align-search sweep)",
    "--wandb_username": "align writes metrics.jsonl; a sweep logs every trial to MLflow (align-search sweep)",
    "--encoder_config_path": "the 2023 code never read it; drop it",
    "--decoder_config_path": "the 2023 code never read it; drop it",
    "--max_seq_len": "prompts are as long as the template makes them; drop it",
    "--local_rank": "one trial over several GPUs is a sweep with --set hypotheses.shard=N (docs/scaling.md)",
    "--early_stopping": "the 2023 code never read it; a sweep stops weak trials with ASHA",
}


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite: a learning rate too high for this model, usually."""


class _Refuse(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.error(f"{option_string} is a 2023 run_alignment.py flag that would do nothing here: "
                     f"{LEGACY[str(option_string)]}")


def register(sub: Any) -> None:
    p = sub.add_parser("align", help="train and evaluate one hypothesis (the 2023 run_alignment.py flags work)")
    add_model_path(p)
    p.add_argument("--task", "--task-name", "--task_name", default="price_tagging",
                   help="a task, or a 2023 name such as pricing_tag_lb")
    for flag in FLAGS:
        kind = {"action": "store_true"} if flag.type is None else {"type": flag.type}
        p.add_argument(*flag.names, dest=_dest(flag), default=argparse.SUPPRESS, help=flag.help or None, **kind)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any TrialConfig key, as in a sweep: train.lr=3e-4, intervention.init_width=0.3")
    add_out(p, "--output-dir", "--output_dir", what="the run folder (config.json, metrics.jsonl, intervention/, "
                                                    "summary.json)")
    for legacy in LEGACY:
        p.add_argument(legacy, nargs="?", action=_Refuse, help=argparse.SUPPRESS)
    p.set_defaults(handler=align)


def _dest(flag: Flag) -> str:
    return "config:" + ",".join(flag.keys)


def trial_config(args: argparse.Namespace) -> Any:
    """The validated TrialConfig of the flags, the 2023 defaults of the model folder, then --set."""
    from alignment.config import TrialConfig
    from alignment.config_io import override, with_values

    task, causal_model = LEGACY_TASKS.get(args.task, (args.task, None))
    given = {key: value for dest, value in vars(args).items() if dest.startswith("config:")
             for key in dest.removeprefix("config:").split(",")}
    das_layer, das_position = _das_config(Path(args.model_path))
    base = TrialConfig(model_path=args.model_path, task=task, causal_model=causal_model,
                       layer=das_layer if das_layer is not None else 0, position=das_position or "last")
    if "site" in given and "layer" not in given:
        given["layer"] = None  # a module path replaces the decoder layer
    return override(with_values(base, given), *args.set)


def align(args: argparse.Namespace, announce: Callable[[str], None]) -> dict[str, Any]:
    from alignment.train import TrialDiverged
    from alignment.trial import run_trial
    from search.outputs import check_output_folder

    config = trial_config(args)
    _check_before_loading(config)
    out = Path(args.out)
    check_output_folder(out, "--out", args.overwrite)
    made = not out.exists()
    try:
        summary = run_trial(config, out)
    except TrialDiverged as error:
        raise TrainingDiverged(f"training diverged: {error}. Lower --lr ({config.train.lr:g}) or --boundary-lr "
                               f"({config.train.boundary_lr:g}); {out / 'metrics.jsonl'} has the steps before it"
                               ) from None
    except BaseException:
        _remove_if_unstarted(out, made)
        raise
    return {"hypothesis": summary.hypothesis, **summary.metrics, "boundary_widths": summary.boundary_widths}


def _remove_if_unstarted(out: Path, made: bool) -> None:
    """A run folder this command made, and left before training started, goes (nothing in it is a result)."""
    import shutil

    if made and out.is_dir() and not (out / "metrics.jsonl").exists():
        shutil.rmtree(out, ignore_errors=True)


def _check_before_loading(config: Any) -> None:
    """Names and sizes that would otherwise fail after the model loads, or deep inside the trial."""
    from causal_models import get_task
    from search.prepare import check_width, model_facts

    causal_model = get_task(config.task).causal_model(config.causal_model)
    for name in config.variables:
        causal_model.variable(name)
    facts = model_facts(config.model_path)
    check_width(config.intervention.kind, config.intervention.subspace_dim,
                len(config.variables or causal_model.default_variables), facts.hidden_size)


def _das_config(model_path: Path) -> tuple[int | None, str | None]:
    """The 2023 `das_config/config.json` of a model folder: (das_layer, first token of das_token_range)."""
    from alignment.config_io import ConfigError

    path = model_path / "das_config" / "config.json"
    if not path.is_file():
        return None, None
    try:
        config = json.loads(path.read_text())
        token_range = config.get("das_token_range")
        return config.get("das_layer"), str(token_range[0]) if token_range else None
    except (ValueError, AttributeError, TypeError, IndexError) as error:
        raise ConfigError(f"{str(path)!r} must be the 2023 das_config (das_layer, das_token_range), got {error}. "
                          f"Pass --layer and --position instead") from None
