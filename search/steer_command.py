"""`align-search steer`: apply saved interventions to prompts, and measure steering success.

Fixed-value steering names its assignments `--value VARIABLE=VALUE` (`--set` is the older,
deprecated spelling: everywhere else `--set` overrides a config key); source-based steering
takes `--source` prompts. The model is `--model-path` (default: the one the first run was
trained on), as in every command.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignment.config_io import ConfigError
from search.flags import POSITIVE, add_model_path


def register(sub: Any) -> None:
    p = sub.add_parser("steer", help="apply saved interventions at inference (source-based or fixed-value)")
    p.add_argument("runs", nargs="+", help="trial folders, intervention folders or hf://owner/name, applied together")
    p.add_argument("--prompt", action="append", default=[], help="a prompt in the intervention's template")
    p.add_argument("--source", action="append", default=[], help="source prompt(s): one, or one per --prompt")
    p.add_argument("--value", "--set", dest="values", action="append", default=[], metavar="VARIABLE=VALUE",
                   help="fixed-value steering, e.g. left_boundary=true (--set is a deprecated alias)")
    p.add_argument("--eval", type=POSITIVE, metavar="N", help="steering success rate on N fresh prompts")
    p.add_argument("--generate", type=POSITIVE, metavar="TOKENS", help="also print greedy continuations")
    add_model_path(p, "--model", required=False,
                   help="the model (default: the one the first run was trained on); a folder, .gguf or Hub id")
    p.set_defaults(handler=steer)


def parse_value(raw: str) -> Any:
    """A variable's value: true/false (any case), an integer, else the text."""
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(raw)
    except ValueError:
        return raw.strip()


def _check_request(args: argparse.Namespace) -> None:
    """What the flags ask must make sense before the model loads."""
    if not args.prompt and not args.eval:
        raise ConfigError("steer needs --prompt TEXT or --eval N")
    if bool(args.values) == bool(args.source):
        raise ConfigError("steer needs either --value VARIABLE=VALUE (fixed value) or --source TEXT (source-based)")
    if args.source and args.eval:
        raise ConfigError("--eval measures fixed-value steering; use --value VARIABLE=VALUE with it, not --source")
    if args.source and len(args.source) not in (1, len(args.prompt)):
        raise ConfigError(f"--source must be given once, or once per --prompt ({len(args.prompt)}), got "
                          f"{len(args.source)} times")


def steer(args: argparse.Namespace, announce: Callable[[str], None]) -> dict[str, Any]:
    from alignment.models import load_model
    from alignment.steering import Steer, load_steering

    _check_request(args)
    values = dict(_assignment(item) for item in args.values)
    loaded = load_model(_model_path(args))
    saved = [load_steering(run, loaded.model) for run in args.runs]
    steers: list[Steer] = []
    for run, item in zip(args.runs, saved):
        variables = list(item.description.variables)
        if args.values:
            chosen = [v for v in variables if v in values]
            if not chosen:
                raise ConfigError(f"--value must name a variable of every run, got {sorted(values)}; the variables "
                                  f"of {run!r} are {variables}")
            for variable in chosen:
                _check_domain(item, variable, values[variable])
            steers.extend(Steer(item, v, value=values[v]) for v in chosen)
        else:
            steers.append(Steer(item, variables[0]))
    return _apply(args, loaded, saved, steers)


def _apply(args: argparse.Namespace, loaded: Any, saved: list[Any], steers: list[Any]) -> dict[str, Any]:
    from alignment.steering import answer_with, generate_with, locate, steering_success

    result: dict[str, Any] = {}
    if args.prompt:
        prompts = [locate(saved[0], text) for text in args.prompt]
        if args.source:
            sources = [locate(saved[0], text) for text in args.source]
            sources = sources * len(prompts) if len(sources) == 1 else sources
            for steer_ in steers:
                steer_.sources = sources
        for prompt in prompts + (sources if args.source else []):
            _check_known(loaded.tokenizer, prompt.text)
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
    return task_of(saved).template(saved.description.template)


def _check_domain(saved: Any, variable: str, value: Any) -> None:
    """A fixed value must be one the variable takes in its causal model (when the model says which)."""
    from alignment.steering import task_of

    domain = task_of(saved).causal_model(saved.description.needed("causal_model")).variable(variable).values
    if domain is not None and not isinstance(domain, range) and value not in domain:
        raise ConfigError(f"--value {variable} must be one of {sorted(domain, key=repr)}, got {value!r}")
    if isinstance(domain, range) and value not in domain:
        raise ConfigError(f"--value {variable} must be in {domain}, got {value!r}")


def _check_known(tokenizer: Any, text: str) -> None:
    """A prompt must be made of text the tokenizer knows: an unknown token would steer nothing real."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    if unknown is None:
        return
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = [text[start:end] for token, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"])
             if token == unknown]
    if spans:
        raise ConfigError(f"prompt must use only text the model's tokenizer knows, got {spans[:5]} read as its "
                          f"unknown token {tokenizer.unk_token!r} in {text[:80]!r}")


def _assignment(item: str) -> tuple[str, Any]:
    name, sep, value = item.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"--value must look like VARIABLE=VALUE, got {item!r}")
    return name.strip(), parse_value(value)


def _model_path(args: argparse.Namespace) -> str:
    if args.model_path:
        return str(args.model_path)
    config = Path(args.runs[0]) / "config.json"
    if not config.is_file():
        raise ConfigError(f"{args.runs[0]!r} has no config.json naming its model; pass --model-path MODEL")
    try:
        return str(json.loads(config.read_text())["model_path"])
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{str(config)!r} must name the run's model_path, got a torn or foreign file ({error!r}); "
                          f"pass --model-path MODEL") from None
