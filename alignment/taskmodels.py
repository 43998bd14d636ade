"""Small models that really solve a task, trained here from the task's own generator.

IIA means nothing on a model that cannot do the task, and no model on the package registries
can do price tagging (research/models.md), so align-search trains its own: a standard
transformers architecture (GPT-2 or Llama, random init) with a word-level tokenizer built
from the task's text, trained with cross-entropy on the answer token of freshly sampled
prompts (never the same batch twice), AdamW with warm-up and cosine decay. The result is a
plain Hugging Face folder (`save_pretrained` for model and tokenizer) that loads with
`AutoModelForCausalLM`/`AutoTokenizer`, plus `align_search.json` with the task, templates,
held-out accuracy per template and the training settings.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from alignment.config_io import ConfigError, positive
from alignment.models import MODEL_META
from alignment.prompts import answer_token_ids
from alignment.tokenizer import task_tokenizer
from causal_models import Task


@dataclass(frozen=True)
class TaskModelConfig:
    """Architecture and training of a task model (defaults: the shipped price-tagging model)."""

    architecture: Literal["gpt2", "llama"] = "gpt2"
    layers: int = 4
    hidden: int = 64
    heads: int = 4
    steps: int = 2000
    batch_size: int = 128
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    templates: tuple[str, ...] = ()
    seed: int = 0
    eval_examples: int = 2000
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "heads", "steps", "batch_size", "eval_examples", "threads"):
            positive(name, getattr(self, name))
        positive("lr", self.lr)
        if self.hidden % self.heads:
            raise ConfigError(f"hidden must be a multiple of heads, got hidden {self.hidden} and heads {self.heads}")


@dataclass
class TaskModelResult:
    model: Any  # a transformers PreTrainedModel
    tokenizer: PreTrainedTokenizerFast
    accuracy: dict[str, float]
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)


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
    """Fresh prompts, their answer tokens, as left-padded tensors."""

    def __init__(self, task: Task, templates: list[str], tokenizer: PreTrainedTokenizerFast):
        self.task, self.templates, self.tokenizer = task, templates, tokenizer
        self.answer_ids = {name: dict(zip(task.template(name).answers,
                                          answer_token_ids(tokenizer, list(task.template(name).answers.values()))))
                           for name in templates}

    def batch(self, rng: random.Random, size: int, template: str | None = None) -> dict[str, torch.Tensor]:
        texts, labels, candidates = [], [], []
        for _ in range(size):
            name = template or rng.choice(self.templates)
            inputs = self.task.sample_inputs(rng)
            texts.append(self.task.template(name).render(inputs).text)
            labels.append(self.answer_ids[name][self.task.factual_output(inputs)])
            candidates.append(list(self.answer_ids[name].values()))
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True)
        mask = encoded["attention_mask"]
        return {"input_ids": encoded["input_ids"], "attention_mask": mask,
                "position_ids": (mask.cumsum(dim=1) - 1).clamp(min=0), "labels": torch.tensor(labels),
                "candidates": torch.tensor(candidates)}


def _logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    return model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1]


def evaluate_task_model(model: nn.Module, sampler: _PromptSampler, template: str, n: int, seed: int) -> float:
    """Held-out accuracy among the template's answer tokens on `n` fresh prompts."""
    rng = random.Random(seed)
    correct = 0
    with torch.no_grad():
        for start in range(0, n, 500):
            batch = sampler.batch(rng, min(500, n - start), template)
            logits = _logits(model, batch)
            choice = batch["candidates"].gather(1, logits.gather(1, batch["candidates"]).argmax(dim=1, keepdim=True))
            correct += int((choice.squeeze(1) == batch["labels"]).sum())
    return correct / n


def train_task_model(task: Task, config: TaskModelConfig, out: str | Path | None = None,
                     progress: bool = True) -> TaskModelResult:
    """Train a model on `task` with `config`; save it to `out` when given."""
    if config.threads:
        torch.set_num_threads(config.threads)
    templates = list(config.templates) or [task.default_template]
    tokenizer = task_tokenizer(task, templates)
    sampler = _PromptSampler(task, templates, tokenizer)
    rng = random.Random(config.seed)
    longest = max(sampler.batch(random.Random(1), 64, t)["input_ids"].shape[1] for t in templates)
    model = build_model(config, len(tokenizer), longest + 16, tokenizer.pad_token_id, tokenizer.bos_token_id)
    started = time.perf_counter()
    _fit(model, sampler, rng, config, progress)
    model.eval().requires_grad_(False)
    accuracy = {t: evaluate_task_model(model, sampler, t, config.eval_examples, config.seed + 1) for t in templates}
    seconds = time.perf_counter() - started
    meta = {"task": task.name, "template": templates[0], "templates": templates, "accuracy": accuracy,
            "train_seconds": round(seconds, 1), "threads": torch.get_num_threads(), "config": asdict(config)}
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
    for _ in bar:
        batch = sampler.batch(rng, config.batch_size)
        loss = F.cross_entropy(_logits(model, batch), batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)


def save_task_model(model: Any, tokenizer: PreTrainedTokenizerFast, meta: dict[str, Any],
                    out: str | Path) -> Path:
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / MODEL_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out
