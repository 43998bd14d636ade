"""`align-search steer`: apply saved interventions to prompts, and measure steering success."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from alignment.config_io import ConfigError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("steer", help="apply saved interventions at inference (source-based or fixed-value)")
    p.add_argument("runs", nargs="+", help="trial folders (or intervention folders) to apply together")
    p.add_argument("--prompt", action="append", default=[], help="a prompt in the intervention's template")
    p.add_argument("--source", action="append", default=[], help="source prompt(s): one, or one per --prompt")
    p.add_argument("--set", action="append", default=[], metavar="VARIABLE=VALUE",
                   help="fixed-value steering, e.g. left_boundary=True")
    p.add_argument("--eval", type=int, metavar="N", help="steering success rate on N fresh prompts")
    p.add_argument("--generate", type=int, metavar="TOKENS", help="also print greedy continuations")
    p.add_argument("--model", help="the model (default: the one the first run was trained on)")


def parse_value(raw: str) -> Any:
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(raw)
    except ValueError:
        return raw.strip()


def steer(args: argparse.Namespace) -> dict[str, Any]:
    from alignment.models import load_model
    from alignment.steering import Steer, answer_with, generate_with, load_steering, locate, steering_success

    if not args.prompt and not args.eval:
        raise ConfigError("steer needs --prompt TEXT or --eval N")
    if bool(args.set) == bool(args.source):
        raise ConfigError("steer needs either --set VARIABLE=VALUE (fixed value) or --source TEXT (source-based)")
    loaded = load_model(_model_path(args))
    saved = [load_steering(run, loaded.model) for run in args.runs]
    values = dict(_assignment(item) for item in args.set)
    steers: list[Steer] = []
    for item in saved:
        variables = list(item.description["variables"])
        if args.set:
            chosen = [v for v in variables if v in values]
            if not chosen:
                raise ConfigError(f"--set must name a variable of every run; {variables} are not among {list(values)}")
            steers.extend(Steer(item, v, value=values[v]) for v in chosen)
        else:
            steers.append(Steer(item, variables[0]))
    result: dict[str, Any] = {}
    if args.prompt:
        prompts = [locate(saved[0], text) for text in args.prompt]
        if args.source:
            sources = [locate(saved[0], text) for text in args.source]
            sources = sources * len(prompts) if len(sources) == 1 else sources
            for steer_ in steers:
                steer_.sources = sources
        answers = sorted(set(_template(saved[0]).answers.values()))
        plain, steered = answer_with(loaded.model, loaded.tokenizer, prompts, steers, answers)
        result["answers"] = [{"prompt": p.text, "without": a, "with": b} for p, a, b in zip(prompts, plain, steered)]
        if args.generate:
            result["generated"] = generate_with(loaded.model, loaded.tokenizer, prompts, steers, args.generate)
    if args.eval:
        success = steering_success(loaded.model, loaded.tokenizer, steers, args.eval)
        result["steering_success"] = success.__dict__
    return result


def _template(saved: Any) -> Any:
    from alignment.steering import task_of
    return task_of(saved).template(saved.description.get("template"))


def _assignment(item: str) -> tuple[str, Any]:
    name, sep, value = item.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"--set must look like VARIABLE=VALUE, got {item!r}")
    return name.strip(), parse_value(value)


def _model_path(args: argparse.Namespace) -> str:
    if args.model:
        return str(args.model)
    config = Path(args.runs[0]) / "config.json"
    if config.is_file():
        return str(json.loads(config.read_text())["model_path"])
    raise ConfigError(f"{args.runs[0]!r} has no config.json naming its model; pass --model PATH")
