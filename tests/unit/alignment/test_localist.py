"""The localist option: with the axis penalty, Boundless DAS finds a variable planted in two neurons.

The model is a real Llama built by hand: one layer whose attention and MLP write nothing, so
the site's output is the token embedding; the embedding puts the variable in neurons 3 and 11
(both +2 when the key is in the set, -2 otherwise), a constant in neuron 15 and random values
elsewhere; the head reads neurons 3, 11 and 15 only. Many rotated subspaces swap the variable
well enough (the head needs only the sign of h3 + h11 + 1), so plain Boundless DAS need not
stay on the two neurons; with the axis penalty it does. The penalised objective has local
minima (an axis-aligned prefix that keeps a useless neuron between two useful ones), so the
option is run from a few seeds and the run with the lowest training loss is kept, a rule that
does not look at the planted neurons.

The runs use the 2023 boundary (a share, soft at both ends; `PAPER_2023`) with a low, nearly
constant temperature, where plain Boundless DAS spreads over other neurons. Under the calibrated
defaults it already keeps to the planted two (mass 0.96 over 3 seeds, against 1.00 with the axis
penalty; docs/calibration.md), which leaves the axis penalty little to show.
"""

from dataclasses import replace

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from alignment.batches import build_trial_data
from alignment.config import PAPER_2023
from alignment.frozen import FrozenSite
from alignment.interchange import Interchange
from alignment.interventions import build_intervention
from alignment.metrics import interchange_accuracy
from alignment.tokenizer import task_tokenizer
from alignment.train import train
from causal_models import CausalModel, FieldChar, PromptTemplate, Task, Variable, sample_pairs, to_dataset

KEYS = tuple(f"k{name}" for name in "abcdefghijkl")
PLANTED = (3, 11)
BIAS = 15  # a constant neuron: breaks the tie when only one planted neuron is swapped
HIDDEN = 16


def key_task() -> Task:
    model = CausalModel("key", [Variable("key", KEYS),
                                Variable("in_set", (True, False), ("key",), lambda key: key in KEYS[:6]),
                                Variable("answer", (True, False), ("in_set",), lambda value: value)],
                        output="answer", default_variables=("in_set",))
    template = PromptTemplate("bare", "{key}", lambda x: {"key": x["key"]}, {"key": FieldChar("key")},
                              {True: "yes", False: "no"})
    return Task("key", "is the key in the set", lambda rng: {"key": rng.choice(KEYS)}, {"key": model},
                {"bare": template}, "key", "bare")


def planted_model(tokenizer) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=1, hidden_size=HIDDEN, intermediate_size=16, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=len(tokenizer), tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    with torch.no_grad():
        model.model.layers[0].self_attn.o_proj.weight.zero_()
        model.model.layers[0].mlp.down_proj.weight.zero_()
        embeddings = model.model.embed_tokens.weight
        embeddings.normal_()
        for index, key in enumerate(KEYS):
            embeddings[tokenizer.convert_tokens_to_ids(key), list(PLANTED)] = 2.0 if index < 6 else -2.0
        embeddings[:, BIAS] = 1.0
        head = model.lm_head.weight
        head.zero_()
        head[tokenizer.convert_tokens_to_ids("yes"), list(PLANTED)] = 1.0
        head[tokenizer.convert_tokens_to_ids("no"), list(PLANTED)] = -1.0
        head[tokenizer.convert_tokens_to_ids("yes"), BIAS] = 1.0
    return model


def mass_on_planted(intervention) -> float:
    """Share of the swapped subspace's squared norm that lies on the planted neurons."""
    with torch.no_grad(), intervention.hard_mode(), intervention.materialized():
        basis = intervention.basis.matrix()
        used = intervention.mask.weights()[0]
    if used.sum() == 0:
        return 0.0
    return float((basis[list(PLANTED)] ** 2).sum(dim=0) @ used / used.sum())


def train_and_measure(axis_penalty: float, seed: int) -> tuple[float, float, float]:
    """(dev IIA, mass on the planted neurons, final training loss)."""
    task = key_task()
    tokenizer = task_tokenizer(task)
    model = planted_model(tokenizer)
    rows = {split: list(to_dataset(sample_pairs(task.causal_model(), ["in_set"], n, seed=i), task.template()))
            for i, (split, n) in enumerate((("train", 400), ("dev", 100)))}
    data = build_trial_data(tokenizer, rows, ["in_set"], ["no", "yes"])
    frozen = FrozenSite(model, "model.layers.0", data.table)
    intervention = build_intervention("boundless", HIDDEN, init_width=0.125, soft_start=True, log_boundary=False,
                                      seed=seed)
    interchange = Interchange(frozen, intervention, "last")
    pairs = {split: interchange.locate(data.split(split)) for split in rows}
    losses = []
    train(interchange, pairs["train"], pairs["dev"], data.answer_ids,
          replace(PAPER_2023.intervention, width_penalty=5.0, axis_penalty=axis_penalty, temperature_start=0.5),
          replace(PAPER_2023.train, batch_size=32, max_steps=300, lr=2e-2, eval_every=300, log_every=10),
          record=lambda row: losses.append(row["loss"]) if "loss" in row else None)
    iia = interchange_accuracy(interchange, pairs["dev"], data.answer_ids, 128).answers
    return iia, mass_on_planted(intervention), sum(losses[-5:]) / 5


def test_prealign_the_planted_model_solves_its_task():
    task = key_task()
    tokenizer = task_tokenizer(task)
    model = planted_model(tokenizer)
    ids = tokenizer(list(KEYS), return_tensors="pt")["input_ids"]
    answers = model(input_ids=ids).logits[:, -1].argmax(dim=1)
    assert tokenizer.convert_ids_to_tokens(answers) == ["yes"] * 6 + ["no"] * 6


def test_axis_penalty_concentrates_the_subspace_on_the_planted_neurons():
    plain = [train_and_measure(0.0, seed) for seed in range(3)]
    local = [train_and_measure(5.0, seed) for seed in range(3)]
    assert all(iia >= 0.95 for iia, _, _ in plain + local)
    kept = min(local, key=lambda run: run[2])
    assert kept[1] >= 0.9
    assert sum(m for _, m, _ in local) / 3 > sum(m for _, m, _ in plain) / 3 + 0.2
