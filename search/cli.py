"""The `align-search` command line: the only module that reads argv or prints.

User errors (a bad name, a missing folder, a wrong config value) print one line and exit 2;
bugs keep their traceback. Heavy imports (torch, ray, mlflow) happen inside the commands
that need them, so `align-search tasks` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from search import commands, model_commands, steer_command, sweep_commands


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _add_tasks(sub: Any) -> None:
    sub.add_parser("tasks", help="list tasks, causal models, variables and named positions")


def _add_data(sub: Any) -> None:
    p = sub.add_parser("data", help="write counterfactual pairs for people to inspect")
    p.add_argument("task")
    p.add_argument("--causal-model", "--causal_model")
    p.add_argument("--variables", help="comma-separated; default: the causal model's")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--template")
    p.add_argument("--max-unchanged", type=float)
    p.add_argument("--no-balance", action="store_true", help="do not balance the counterfactual labels")
    p.add_argument("--out", required=True)


def _add_sites(sub: Any) -> None:
    p = sub.add_parser("sites", help="list a model's decoder layers and module paths")
    p.add_argument("model")
    p.add_argument("--all", action="store_true", help="every module path, not just the decoder layers")


def _add_align(sub: Any) -> None:
    p = sub.add_parser("align", help="train and evaluate one hypothesis (the 2023 run_alignment.py flags work)")
    flag = p.add_argument
    flag("--model-path", "--model_path", required=True)
    flag("--task", "--task-name", "--task_name", default="price_tagging",
         help="a task, or a 2023 name such as pricing_tag_lb")
    flag("--causal-model", "--causal_model")
    flag("--variables", help="comma-separated")
    flag("--layer", type=int)
    flag("--site", help="a module path, for sites other than a decoder layer's output")
    flag("--component", choices=["block", "attention", "mlp"], default="block",
         help="the layer's output (block) or what its attention or MLP adds to the residual stream")
    flag("--position", help="a named position, a token index, or a group a+b of them (default: last)")
    flag("--source-position", "--source_position")
    flag("--intervention", default="boundless")
    flag("--subspace-dim", "--subspace_dim", type=int)
    flag("--train-batch-size", "--train_batch_size", type=int, default=32)
    flag("--eval-batch-size", "--eval_batch_size", type=int, default=256)
    flag("--gradient-accumulation-steps", "--gradient_accumulation_steps", type=int, default=1)
    flag("--lr", type=float, default=1e-3)
    flag("--boundary-lr", "--boundary_lr", type=float, default=1e-2)
    flag("--seed", type=int, default=42)
    flag("--epochs", type=int, default=1)
    flag("--max-steps", "--max_steps", type=int)
    flag("--warm-up", "--warm_up", type=float, default=0.1)
    flag("--n-training-examples", "--n_training_examples", type=int, default=2000)
    flag("--n-eval-examples", "--n_eval_examples", type=int, default=200)
    flag("--n-test-examples", "--n_test_examples", type=int, default=500)
    flag("--log-step", "--log_step", type=int, default=10)
    flag("--valid-steps", "--valid_steps", type=int, default=50)
    flag("--bf16", action="store_true")
    flag("--threads", type=int, help="torch threads (default: torch's)")
    flag("--template")
    flag("--output-dir", "--output_dir", required=True)
    flag("--trust-remote-code", action="store_true")
    for legacy in ("--do_align", "--do-align", "--do_eval", "--do_test", "--is_wandb"):
        flag(legacy, action="store_true", help=argparse.SUPPRESS)
    for legacy in ("--wandb_username", "--encoder_config_path", "--decoder_config_path", "--max_seq_len",
                   "--local_rank", "--early_stopping", "--device"):
        flag(legacy, help=argparse.SUPPRESS)


def _add_cluster(sub: Any) -> None:
    p = sub.add_parser("cluster", help="the Ray cluster sweeps run on")
    actions = p.add_subparsers(dest="cluster_command", required=True, parser_class=_Parser)
    status = actions.add_parser("status", help="nodes and free CPUs, GPUs, memory and custom resources")
    status.add_argument("--address", default="auto",
                        help="'auto' (the cluster this machine joined, the default), HOST:PORT or "
                             "ray://HOST:PORT")
    status.add_argument("--json", action="store_true", help="print JSON instead of lines")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="align-search", description="Find where a causal variable lives inside a language "
                     "model: Boundless DAS hypotheses swept with Ray Tune, recorded in MLflow.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_add_tasks, _add_data, _add_sites, _add_align, _add_cluster, sweep_commands.add_parsers,
                steer_command.add_parser, steer_command.add_share_parser, model_commands.add_parsers):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        output = commands.run(args, announce=lambda line: print(line, flush=True))
    except Exception as error:
        message = commands.user_message(error)
        if message is None:
            raise
        print(f"align-search: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("align-search: interrupted", file=sys.stderr)
        return 130
    _print(output)
    return 0


def _print(output: Any) -> None:
    if output is None:
        return
    if isinstance(output, str):
        print(output)
    else:
        print(json.dumps(output, sort_keys=True))


if __name__ == "__main__":
    raise SystemExit(main())
