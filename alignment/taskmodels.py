"""Small models that really solve a task, trained here from the task's own generator.

IIA means nothing on a model that cannot do the task, and no model on the package registries
can do price tagging (docs/models.md), so align-search trains its own: a standard
transformers architecture (GPT-2 or Llama, random init) with a word-level tokenizer built
from the task's text (each digit one token), trained with cross-entropy on the answer token
of freshly sampled prompts (never the same batch twice), AdamW with warm-up and cosine decay.
The result is a plain Hugging Face folder (`save_pretrained` for model and tokenizer) that
loads with `AutoModelForCausalLM`/`AutoTokenizer`, plus `align_search.json` with the task,
templates, held-out accuracy per template, the settings and the command that reproduces it.

Two curricula help the small models (docs/models.md has the numbers):

- Template mixing. With several templates, the first (the model's default) trains alone for
  the first `mix_after` of the steps, then all are mixed. Mixing from the start stalls: the
  model has to learn the rule and the surface variants at once and learns neither.
- Focused inputs. A task's own sampler can make part of its rule almost never matter. Price
  tagging draws the amount and the bounds uniformly, so the amount is rarely within a dime
  of a bound: a rule that compares dollars and dimes and ignores the last digit is right
  on 99.2% of the sampler's prompts, and one that compares dollars alone on 90.3%
  (100,000 prompts, seed 0). The loss on the rest is too small a signal to learn the last
  digits from, and a model that never learned them is not the comparator the paper
  studies. Hierarchical equality is balanced on the answer, so neither pair's equality
  alone correlates with it: the gradient gives no first foothold and training sits at
  chance. In the word-logic program `(C2 == C4 AND C4 != C0) OR synonym(C1, C3)` the
  synonym branch alone explains most answers, and the AND branch is learned slowly.
  A *focused* input is an input edited so that exactly the neglected part decides the
  answer: for price tagging, the amount moved to within 1, 10 or 100 cents of a bound; for
  hierarchical equality, one pair made equal, so the answer is the other pair's equality;
  for word logic, C3 redrawn so the synonym branch is False and the AND branch decides.
  The label is still the task's factual output on the edited input, so focusing changes
  which inputs the model sees, never the rule it learns. A share `focus_share` of each
  batch is focused, starting after the first `focus_after` of the steps (the easy part
  first) and rising linearly to its share over as many steps again. `FOCUS_INPUTS` maps
  each task to its edit; a task without one trains on its own sampler only.

Held-out accuracy is always measured on the task's own sampler. Training is deterministic
given the seed and the thread count (`threads`, 1 by default; another count may change the
low bits of the weights, and so may other torch versions or CPUs).
The models trained with the default settings ship inside the package (`shipped_model_path`).
"""

from __future__ import annotations

import json
import math
import platform
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from alignment.config_io import ConfigError, positive
from alignment.models import MODEL_META
from alignment.prompts import answer_token_ids
from alignment.tokenizer import task_tokenizer
from causal_models import Task
from causal_models.task import unknown_name

SHIPPED_DIR = Path(__file__).parent / "task_models"
Inputs = dict[str, Any]


@dataclass(frozen=True)
class TaskModelConfig:
    """Architecture and training of a task model; `default_config(task)` gives the shipped settings."""

    architecture: Literal["gpt2", "llama"] = "gpt2"
    layers: int = 3
    hidden: int = 64
    heads: int = 4
    steps: int = 2000
    batch_size: int = 128
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    focus_share: float = 0.0
    focus_after: float = 0.15
    mix_after: float = 0.5
    templates: tuple[str, ...] = ()
    seed: int = 0
    eval_examples: int = 2000
    threads: int = 1

    def __post_init__(self) -> None:
        if self.architecture not in ("gpt2", "llama"):
            raise ConfigError(f"architecture must be 'gpt2' or 'llama', got {self.architecture!r}")
        for name in ("layers", "hidden", "heads", "steps", "batch_size", "warmup", "eval_examples", "threads"):
            positive(name, getattr(self, name))
        positive("lr", self.lr)
        positive("weight_decay", self.weight_decay, allow_zero=True)
        for name in ("focus_share", "focus_after", "mix_after"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.hidden % self.heads:
            raise ConfigError(f"hidden must be a multiple of heads, got hidden {self.hidden} and heads "
                              f"{self.heads}. Try heads={math.gcd(self.hidden, self.heads)}")


# The settings of the shipped models (docs/models.md has their accuracy and train times).
SHIPPED_CONFIGS: dict[str, TaskModelConfig] = {
    "price_tagging": TaskModelConfig(
        architecture="llama", layers=3, hidden=64, steps=3000, focus_share=0.3, focus_after=0.12,
        templates=("compact", "compact_prefix_game", "compact_prefix_frogs", "compact_true_false")),
    "hierarchical_equality": TaskModelConfig(architecture="llama", steps=6000, focus_share=0.5, focus_after=0.0),
    "word_logic": TaskModelConfig(architecture="llama", layers=4, hidden=128, steps=1500, lr=1e-3, focus_share=0.4,
                                  focus_after=0.0),
}


def default_config(task: str) -> TaskModelConfig:
    """The shipped model's settings for `task`, else the generic defaults."""
    return SHIPPED_CONFIGS.get(task, TaskModelConfig())


@dataclass
class TaskModelResult:
    model: Any  # a transformers PreTrainedModel
    tokenizer: PreTrainedTokenizerFast
    accuracy: dict[str, float]
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)


def shipped_task_models() -> list[str]:
    """Tasks with a trained model inside the package."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / MODEL_META).is_file())


def shipped_model_path(task: str) -> Path:
    """The folder of the model shipped for `task` (load it with `AutoModelForCausalLM.from_pretrained`)."""
    shipped = shipped_task_models()
    if task not in shipped:
        raise unknown_name("task with a shipped model", task, shipped,
                           f" Train one with `align-search train-model {task} --out DIR` and pass DIR.")
    return SHIPPED_DIR / task


def _near_price_boundary(rng: random.Random, inputs: Inputs) -> Inputs:
    """The amount moved to within 1, 10 or 100 cents of the lower or the upper bound."""
    edge = inputs[rng.choice(("lower", "upper"))]
    spread = rng.choice((1, 10, 100))
    return {**inputs, "amount": min(999, max(1, edge + rng.randint(-spread, spread)))}


def _one_pair_equal(rng: random.Random, inputs: Inputs) -> Inputs:
    """One pair made equal, so the answer is the other pair's equality."""
    first, second = rng.choice((("W", "X"), ("Y", "Z")))
    return {**inputs, second: inputs[first]}


def _synonym_branch_false(rng: random.Random, inputs: Inputs) -> Inputs:
    """C3 redrawn so synonym(C1, C3) is False: the answer of the word-logic program
    `(C2 == C4 AND C4 != C0) OR synonym(C1, C3)` is then its AND branch."""
    from causal_models.tasks.word_logic import GROUP, WORDS

    return {**inputs, "C3": rng.choice([w for w in WORDS if GROUP[w] != GROUP[inputs["C1"]]])}


# Task -> a function that focuses sampled inputs (the answer stays the task's factual output).
FOCUS_INPUTS: dict[str, Callable[[random.Random, Inputs], Inputs]] = {"price_tagging": _near_price_boundary,
                                                                       "hierarchical_equality": _one_pair_equal,
                                                                       "word_logic": _synonym_branch_false}


def focus_share_at(step: int, config: TaskModelConfig) -> float:
    """The share of focused inputs at `step`: none for the first `focus_after` of the steps,
    then rising linearly to `focus_share` over as many steps again."""
    start = config.focus_after * config.steps
    if step < start:
        return 0.0
    return config.focus_share * min(1.0, (step - start + 1) / max(start, 1.0))


def build_model(config: TaskModelConfig, vocab_size: int, max_length: int, pad_id: int, bos_id: int) -> nn.Module:
    torch.manual_seed(config.seed)
    if config.architecture == "gpt2":
        return GPT2LMHeadModel(GPT2Config(
            n_layer=config.layers, n_embd=config.hidden, n_head=config.heads, vocab_size=vocab_size,
            n_positions=max_length, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            bos_token_id=bos_id, eos_token_id=bos_id, pad_token_id=pad_id))
    return LlamaForCausalLM(LlamaConfig(
        num_hidden_layers=config.layers, hidden_size=config.hidden, intermediate_size=4 * config.hidden,
        num_attention_heads=config.heads, num_key_value_heads=config.heads, vocab_size=vocab_size,
        max_position_embeddings=max_length, bos_token_id=bos_id, eos_token_id=bos_id, pad_token_id=pad_id))


class _PromptSampler:
    """Fresh prompts and their answer tokens, as left-padded tensors."""

    def __init__(self, task: Task, templates: list[str], tokenizer: PreTrainedTokenizerFast):
        self.task, self.templates, self.tokenizer = task, templates, tokenizer
        self.answer_ids = {name: dict(zip(task.template(name).answers,
                                          answer_token_ids(tokenizer, list(task.template(name).answers.values()))))
                           for name in templates}

    def batch(self, rng: random.Random, size: int, templates: list[str],
              focus_share: float = 0.0) -> dict[str, torch.Tensor]:
        """`size` prompts, each of a template drawn from `templates`."""
        texts, labels, candidates = [], [], []
        for _ in range(size):
            name = templates[0] if len(templates) == 1 else rng.choice(templates)
            inputs = self.sample_inputs(rng, focus_share)
            texts.append(self.task.template(name).render(inputs).text)
            labels.append(self.answer_ids[name][self.task.factual_output(inputs)])
            candidates.append(list(self.answer_ids[name].values()))
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True)
        mask = encoded["attention_mask"]
        return {"input_ids": encoded["input_ids"], "attention_mask": mask,
                "position_ids": (mask.cumsum(dim=1) - 1).clamp(min=0), "labels": torch.tensor(labels),
                "candidates": torch.tensor(candidates)}

    def sample_inputs(self, rng: random.Random, focus_share: float = 0.0) -> Inputs:
        """The task's own inputs, focused with probability `focus_share`."""
        inputs = self.task.sample_inputs(rng)
        if focus_share and rng.random() < focus_share:
            inputs = FOCUS_INPUTS[self.task.name](rng, inputs)
        return inputs


def _logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    return model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1]


def evaluate_task_model(model: nn.Module, sampler: _PromptSampler, template: str, n: int, seed: int) -> float:
    """Held-out accuracy among the template's answer tokens on `n` fresh prompts of the task's sampler."""
    rng = random.Random(seed)
    correct = 0
    with torch.no_grad():
        for start in range(0, n, 500):
            batch = sampler.batch(rng, min(500, n - start), [template])
            logits = _logits(model, batch)
            choice = batch["candidates"].gather(1, logits.gather(1, batch["candidates"]).argmax(dim=1, keepdim=True))
            correct += int((choice.squeeze(1) == batch["labels"]).sum())
    return correct / n


def eval_seed(config: TaskModelConfig) -> int:
    """The seed of the held-out prompts: its own stream, never the training one."""
    return config.seed + 1_000_003


@contextmanager
def _threads(count: int) -> Iterator[None]:
    """Torch's intra-op thread count set to `count`, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_task_model(task: Task, config: TaskModelConfig, out: str | Path | None = None,
                     progress: bool = True) -> TaskModelResult:
    """Train a model on `task` with `config`; save it to `out` when given."""
    templates = list(config.templates) or [task.default_template]
    for name in templates:
        task.template(name)
    tokenizer = task_tokenizer(task, templates)
    if config.focus_share and task.name not in FOCUS_INPUTS:
        raise ConfigError(f"focus_share must be 0 for task {task.name!r}, got {config.focus_share}. "
                          f"Tasks with focused inputs: {sorted(FOCUS_INPUTS)}")
    sampler = _PromptSampler(task, templates, tokenizer)
    longest = max(sampler.batch(random.Random(1), 64, [t])["input_ids"].shape[1] for t in templates)
    with _threads(config.threads):
        model = build_model(config, len(tokenizer), longest + 16, tokenizer.pad_token_id, tokenizer.bos_token_id)
        started, cpu_started = time.perf_counter(), time.process_time()
        _fit(model, sampler, random.Random(config.seed), config, progress)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        model.eval().requires_grad_(False)
        accuracy = {t: evaluate_task_model(model, sampler, t, config.eval_examples, eval_seed(config))
                    for t in templates}
    meta = {"task": task.name, "template": templates[0], "templates": templates, "accuracy": accuracy,
            "eval_examples": config.eval_examples, "eval_seed": eval_seed(config), "train_seconds": round(seconds, 1),
            "train_cpu_seconds": round(cpu_seconds, 1), "threads": config.threads, "config": asdict(config),
            "command": reproduce_command(task.name, config),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "python": platform.python_version()}}
    if out is not None:
        save_task_model(model, tokenizer, meta, out)
    return TaskModelResult(model, tokenizer, accuracy, seconds, meta)


def _fit(model: nn.Module, sampler: _PromptSampler, rng: random.Random, config: TaskModelConfig,
         progress: bool) -> None:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / config.warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, step / config.steps))))
    bar = tqdm(range(config.steps), desc="train-model", disable=not progress, mininterval=2.0)
    for step in bar:
        # The first template alone first: mixing from the start stalls learning (docs/models.md).
        templates = sampler.templates if step >= config.mix_after * config.steps else sampler.templates[:1]
        batch = sampler.batch(rng, config.batch_size, templates, focus_share_at(step, config))
        loss = F.cross_entropy(_logits(model, batch), batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)


def reproduce_command(task: str, config: TaskModelConfig) -> str:
    """The `align-search train-model` command line that trains this model again, every setting explicit."""
    settings = asdict(config)
    templates = settings.pop("templates")
    flags = [f"--templates {','.join(templates)}"] if templates else []
    flags += [f"--{key} {settings.pop(key)}" for key in ("architecture", "layers", "hidden", "steps", "seed")]
    flags += [f"--set {key}={value}" for key, value in settings.items()]
    return " ".join(["align-search train-model", task, "--out DIR", *flags])


def save_task_model(model: Any, tokenizer: PreTrainedTokenizerFast, meta: dict[str, Any],
                    out: str | Path) -> Path:
    """Write a Hugging Face folder (model, tokenizer) plus `align_search.json`."""
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / MODEL_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


__all__ = ["SHIPPED_CONFIGS", "TaskModelConfig", "TaskModelResult", "default_config", "reproduce_command",
           "shipped_model_path", "shipped_task_models", "train_task_model"]
