"""Task accuracy of an un-intervened model on fresh prompts: can this model do the task at all?

IIA is bounded by the model's own task accuracy, so before aligning a real model (SmolLM2 on
IOI, say) one asks how often it answers right, per template, the way a trial measures it:
prompts left-padded with explicit position ids, the next-token logits at the last position,
read among the template's answer tokens and over the full vocabulary. An answer is scored by
its first token; answers that take more than one token are reported, because then the first
token may not decide the answer (two names sharing a first piece would be refused outright).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import Tensor

from alignment.metrics import Accuracy, accuracy_of
from alignment.models import LoadedModel
from alignment.prompts import PromptTable, answer_token_ids, build_prompt_table
from causal_models import Task


@dataclass(frozen=True)
class TemplateAccuracy:
    """Accuracy on one template, and the answers that are not a single token."""

    template: str
    accuracy: Accuracy
    multi_token_answers: tuple[str, ...]


def multi_token_answers(tokenizer: object, answers: list[str]) -> tuple[str, ...]:
    """The answer strings that tokenize to more than one token (without special tokens)."""
    return tuple(a for a in answers if len(tokenizer(a, add_special_tokens=False)["input_ids"]) != 1)  # type: ignore[operator]


def template_accuracy(loaded: LoadedModel, task: Task, template: str, n: int, seed: int = 0,
                      batch_size: int = 32) -> TemplateAccuracy:
    """Accuracy of the model on `n` prompts of `template`, sampled from the task's input generator."""
    prompt_template = task.template(template)
    inputs = task.sample_factual(n, seed)
    prompts = [prompt_template.render(x) for x in inputs]
    answers = sorted(set(prompt_template.answers.values()))
    answer_ids = answer_token_ids(loaded.tokenizer, answers)
    id_of = dict(zip(answers, answer_ids))
    labels = torch.tensor([id_of[prompt_template.answer(task.factual_output(x))] for x in inputs])
    table = build_prompt_table(loaded.tokenizer, [p.text for p in prompts], [p.positions for p in prompts], [])
    correct = correct_full = 0
    for start in range(0, n, batch_size):
        rows = torch.arange(start, min(start + batch_size, n))
        right, right_full = accuracy_of(last_logits(loaded.model, table, rows), labels[rows], torch.tensor(answer_ids))
        correct, correct_full = correct + right, correct_full + right_full
    accuracy = Accuracy(correct / n, correct_full / n, n) if n else Accuracy(float("nan"), float("nan"), 0)
    return TemplateAccuracy(template, accuracy, multi_token_answers(loaded.tokenizer, answers))


def last_logits(model: torch.nn.Module, table: PromptTable, rows: Tensor) -> Tensor:
    """(B, vocab) next-token logits at the last position of the (left-padded) prompts `rows`."""
    device = next(model.parameters()).device
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    with torch.no_grad():
        output = model(input_ids=table.input_ids[rows].to(device), attention_mask=table.attention_mask[rows].to(device),
                       position_ids=table.position_ids[rows].to(device), use_cache=False, **extra)
    return output.logits[:, -1].float()
