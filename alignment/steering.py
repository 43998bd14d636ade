"""Steering with found alignments: set a causal variable inside the model at inference.

The 2023 tutorial promised "federated model steering" (steer behaviour by intervening on an
aligned variable, e.g. "anchor the lower-bound check to TRUE") and never built it. Here a
saved intervention is applied to new prompts in two ways:
- source-based: the variable takes its value from a source prompt (an interchange at inference);
- fixed-value: the variable is set to a named value ("left_boundary = True"), using as source
  the mean hidden state at the site over prompts where the causal model gives that value
  (the swap is linear in the source, so this sets the variable's rotated coordinates to the
  mean coordinates of that value).
Several interventions (other variables, other sites) apply together in one forward pass,
each through its own hook, in the order given. Generation works: the edit applies to the
prompt's pass only, and the cached keys and values carry it forward.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignment.hooks import capture_output, edit_output
from alignment.persistence import InterventionDescription, SavedIntervention, load_intervention
from alignment.prompts import PromptTable, answer_token_ids, build_prompt_table
from alignment.sharing import resolve_shared
from causal_models import Task, get_task
from causal_models.errors import UserError
from causal_models.templates import Prompt


class SteeringError(UserError, ValueError):
    """A steering request the saved intervention cannot serve: a value its variable never takes, a prompt count."""


@dataclass
class Steer:
    """One saved intervention and what to set its variable to.

    Exactly one of `sources` (one prompt per steered prompt) and `value` (a value of the
    variable) is given; `variable` picks the intervention's block when it has several.
    """

    saved: SavedIntervention
    variable: str
    sources: list[Prompt] | None = None
    value: Any = None

    @property
    def description(self) -> InterventionDescription:
        return self.saved.description


def load_steering(reference: str | Path, model: Any) -> SavedIntervention:
    """A saved intervention from a trial folder, an intervention folder, or hf://owner/name, checked against `model`."""
    return load_intervention(resolve_shared(reference), model)


def task_of(saved: SavedIntervention) -> Task:
    return get_task(saved.description.needed("task"))


def locate(saved: SavedIntervention, text: str) -> Prompt:
    """A prompt text and its named positions, read through the intervention's template."""
    template = task_of(saved).template(saved.description.template)
    return template.locate(text)


def value_vector(model: Any, tokenizer: Any, saved: SavedIntervention, variable: str, value: Any,
                 n: int = 256, seed: int = 0) -> Tensor:
    """(hidden,) the mean site state over `n` sampled prompts whose `variable` equals `value`."""
    task = task_of(saved)
    causal_model = task.causal_model(saved.description.needed("causal_model"))
    causal_model.variable(variable)
    template = task.template(saved.description.template)
    sampler = causal_model.sample_inputs or task.sample_inputs
    rng = random.Random(seed)
    prompts: list[Prompt] = []
    for _ in range(200 * n):
        inputs = sampler(rng)
        if causal_model.run(inputs)[variable] == value:
            prompts.append(template.render(inputs))
            if len(prompts) == n:
                break
    if len(prompts) < n:
        raise SteeringError(f"value of {variable!r} must be one its causal model {causal_model.name!r} gives it, got "
                            f"{value!r}, which {n} fresh prompts needed and the sampler gave {len(prompts)}. Values "
                            f"it gave: {_values_seen(causal_model, sampler, variable)}")
    return site_states(model, tokenizer, saved, prompts).mean(dim=0)


def _values_seen(causal_model: Any, sampler: Any, variable: str, n: int = 200) -> list[Any]:
    rng = random.Random(0)
    return sorted({causal_model.run(sampler(rng))[variable] for _ in range(n)}, key=repr)[:12]


def site_states(model: Any, tokenizer: Any, saved: SavedIntervention, prompts: Sequence[Prompt]) -> Tensor:
    """(N, hidden) the site's output at the intervention's source position of each prompt."""
    description = saved.description
    table = _table(tokenizer, prompts)
    rows = torch.arange(len(prompts))
    positions = table.token_index(description.needed("source_position"), rows)
    device = next(model.parameters()).device
    with torch.no_grad(), capture_output(model, description.needed("site")) as captured:
        model(**_inputs(table, rows, device), use_cache=False)
    return captured[0][rows.to(device), positions.to(device)].float()


def _table(tokenizer: Any, prompts: Sequence[Prompt]) -> PromptTable:
    names = sorted({name for prompt in prompts for name in prompt.positions})
    return build_prompt_table(tokenizer, [p.text for p in prompts], [p.positions for p in prompts], names)


def _inputs(table: PromptTable, rows: Tensor, device: Any) -> dict[str, Tensor]:
    return {"input_ids": table.input_ids[rows].to(device), "attention_mask": table.attention_mask[rows].to(device),
            "position_ids": table.position_ids[rows].to(device)}


@contextmanager
def steering(model: Any, tokenizer: Any, prompts: Sequence[Prompt], steers: Sequence[Steer],
             table: PromptTable) -> Iterator[None]:
    """Within the block, forward passes over `table`'s prompts apply every steer at its site."""
    # Every edit (its value vectors or source states come from forward passes) is built before
    # any hook is in place, so one steer's hook never runs inside another's preparation.
    edits = [(steer.description.needed("site"), _edit(model, tokenizer, prompts, steer, table)) for steer in steers]
    with ExitStack() as stack:
        for site, edit in edits:
            stack.enter_context(edit_output(model, site, edit))
        yield


def _edit(model: Any, tokenizer: Any, prompts: Sequence[Prompt], steer: Steer, table: PromptTable) -> Any:
    description = steer.description
    variables = list(description.variables)
    if steer.variable not in variables:
        raise SteeringError(f"variable must be one of {variables} (the intervention's), got {steer.variable!r}")
    device = next(model.parameters()).device
    rows = torch.arange(len(prompts))
    base_positions = table.token_index(description.needed("position"), rows).to(device)
    if steer.sources is not None:
        if len(steer.sources) != len(prompts):
            raise SteeringError(f"sources must give one prompt per steered prompt ({len(prompts)}), "
                             f"got {len(steer.sources)}")
        vectors = site_states(model, tokenizer, steer.saved, steer.sources)
    else:
        vectors = value_vector(model, tokenizer, steer.saved, steer.variable, steer.value).expand(len(prompts), -1)
    intervention = steer.saved.intervention.to(device)
    sources = torch.zeros(len(prompts), len(variables), vectors.shape[-1], device=device)
    sources[:, variables.index(steer.variable)] = vectors.to(device)
    active = torch.zeros(len(prompts), len(variables), dtype=torch.bool, device=device)
    active[:, variables.index(steer.variable)] = True
    batch = torch.arange(len(prompts), device=device)

    def edit(hidden: Tensor) -> Tensor:
        if hidden.shape[1] != table.seq_len:  # a generation step after the prompt: the cache carries the edit
            return hidden
        with torch.no_grad(), intervention.hard_mode():
            new = intervention(hidden[batch, base_positions], sources.to(hidden.dtype), active)
        return hidden.index_put((batch, base_positions), new.to(hidden.dtype))
    return edit


def answer_with(model: Any, tokenizer: Any, prompts: Sequence[Prompt], steers: Sequence[Steer],
                answers: Sequence[str]) -> tuple[list[str], list[str]]:
    """(answers without, answers with the steers), each the most likely of `answers`."""
    table = _table(tokenizer, prompts)
    rows = torch.arange(len(prompts))
    device = next(model.parameters()).device
    ids = torch.tensor(answer_token_ids(tokenizer, answers), device=device)

    def choose() -> list[str]:
        with torch.no_grad():
            logits = model(**_inputs(table, rows, device), use_cache=False).logits[:, -1]
        return [answers[i] for i in logits[:, ids].argmax(dim=1).tolist()]

    plain = choose()
    with steering(model, tokenizer, prompts, steers, table):
        steered = choose()
    return plain, steered


def generate_with(model: Any, tokenizer: Any, prompts: Sequence[Prompt], steers: Sequence[Steer],
                  max_new_tokens: int = 5) -> list[str]:
    """Greedy continuations of `prompts` with the steers applied to the prompt's pass."""
    table = _table(tokenizer, prompts)
    rows = torch.arange(len(prompts))
    device = next(model.parameters()).device
    inputs = {k: v for k, v in _inputs(table, rows, device).items() if k != "position_ids"}
    with torch.no_grad(), steering(model, tokenizer, prompts, steers, table):
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(output[:, table.seq_len:], skip_special_tokens=True)


@dataclass(frozen=True)
class SteeringResult:
    """How often steered answers follow the causal model's prediction."""

    flipped: float      # share of prompts whose predicted answer differs from the model's own, answered as predicted
    kept: float         # share of prompts whose prediction equals the factual answer, left unchanged
    n_flip: int
    n_keep: int


def steering_success(model: Any, tokenizer: Any, steers: Sequence[Steer], n: int = 200,
                     seed: int = 1) -> SteeringResult:
    """Steering success rate of fixed-value steers on fresh prompts from the task's sampler.

    Draws `n` prompts where setting the variables changes the causal model's answer (these
    should flip) and `n` where it does not (these should stay), and compares the steered
    model's answers with the causal model's predictions.
    """
    first = steers[0].saved
    task = task_of(first)
    causal_model = task.causal_model(first.description.needed("causal_model"))
    template = task.template(first.description.template)
    fixed = {steer.variable: steer.value for steer in steers}
    if any(steer.sources is not None for steer in steers):
        raise SteeringError("steering_success measures fixed-value steers; give every steer a value")
    rng = random.Random(seed)
    sampler = causal_model.sample_inputs or task.sample_inputs
    flip: list[tuple[Prompt, str]] = []
    keep: list[tuple[Prompt, str]] = []
    for _ in range(400 * n):
        inputs = sampler(rng)
        factual = causal_model.run(inputs)[causal_model.output]
        predicted = causal_model.run(inputs, fixed)[causal_model.output]
        bucket = flip if predicted != factual else keep
        if len(bucket) < n:
            bucket.append((template.render(inputs), template.answer(predicted)))
        if len(flip) == n and len(keep) == n:
            break
    answers = sorted(set(template.answers.values()))
    rates = []
    for bucket in (flip, keep):
        if not bucket:
            rates.append(float("nan"))
            continue
        _, steered = answer_with(model, tokenizer, [p for p, _ in bucket], steers, answers)
        rates.append(sum(s == want for s, (_, want) in zip(steered, bucket)) / len(bucket))
    return SteeringResult(rates[0], rates[1], len(flip), len(keep))
