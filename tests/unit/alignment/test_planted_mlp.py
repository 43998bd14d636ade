"""A variable planted at an MLP output by hand is found there, and not at the block output of the layer below.

The task: the answer is the XOR of two bits of the *first* word (the key); the last word, a
filler, is where the answer is read. A 2-layer GPT-2 is built by hand to compute it in one place:
layer 0 outputs nothing, layer 1's attention copies the key's embedding to the last position
(the key carries a marker direction that a constant query attends to), and layer 1's MLP
computes the XOR from that copy (two gelu units) and writes it as +-d, which the (tied)
unembedding reads as yes/no. So at the last position the variable exists after layer 1's MLP
(one direction) and, as the key's bits, after layer 1's attention, but not at all after layer 0:
there the last position holds only its own filler. (A site holding the key's embedding itself
would carry the XOR in one direction too, the one the MLP reads, v1 - v2: any function of the
key's bits is a function of some projection of its embedding. Only a site the key has not
reached yet is a true absence.)
"""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from alignment.config import DataConfig, InterventionConfig, TrainConfig, TrialConfig
from alignment.models import LoadedModel
from alignment.tokenizer import word_level_tokenizer
from alignment.trial import TrialInputs, run_trial
from causal_models import CausalModel, FieldChar, PromptTemplate, Task, Variable

KEYS = ("red", "blue", "green", "pink", "gray", "gold", "teal", "navy")   # key i has bits i & 1, i & 2, i & 4
FILLERS = ("cat", "dog", "cow", "pig", "hen", "fox")
HIDDEN, HEAD = 32, 16
MARKER, QUERY, GAIN, THRESHOLD = 4.0, 20.0, 2.0, 5.0


def xor_task() -> Task:
    def bit(key: str, which: int) -> bool:
        return bool(KEYS.index(key) >> which & 1)

    model = CausalModel("xor", [
        Variable("key", KEYS), Variable("f0", FILLERS), Variable("f1", FILLERS),
        Variable("in_set", (True, False), ("key",), lambda key: bit(key, 0) != bit(key, 1)),
        Variable("answer", (True, False), ("in_set",), lambda value: value),
    ], output="answer", default_variables=("in_set",))
    template = PromptTemplate("plain", "{key} {f0} {f1}", lambda x: {k: x[k] for k in ("f0", "f1", "key")},
                              {"key": FieldChar("key"), "filler": FieldChar("f1")}, {True: "yes", False: "no"})
    return Task("xor", "XOR of two bits of the key", lambda rng: {
        "key": rng.choice(KEYS), "f0": rng.choice(FILLERS), "f1": rng.choice(FILLERS)}, {"xor": model},
        {"plain": template}, "xor", "plain")


def directions(n: int, seed: int = 0) -> torch.Tensor:
    """(n, HIDDEN) orthonormal rows with zero mean (so LayerNorm only rescales their sums)."""
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(HIDDEN, n, generator=generator)
    raw -= raw.mean(dim=0)
    return torch.linalg.qr(raw).Q.T


def xor_model(tokenizer) -> GPT2LMHeadModel:
    config = GPT2Config(n_layer=2, n_embd=HIDDEN, n_head=HIDDEN // HEAD, vocab_size=len(tokenizer), n_positions=16,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).eval().requires_grad_(False)
    v1, v2, v3, d, m, *others = directions(5 + len(FILLERS))
    with torch.no_grad():
        model.transformer.wpe.weight.zero_()
        embeddings = model.transformer.wte.weight   # tied with the unembedding
        embeddings.zero_()
        for index, key in enumerate(KEYS):
            signs = [1.0 if index >> b & 1 else -1.0 for b in range(3)]
            bits = signs[0] * v1 + signs[1] * v2 + signs[2] * v3
            embeddings[tokenizer.convert_tokens_to_ids(key)] = bits + MARKER * m
        for filler, direction in zip(FILLERS, others):
            embeddings[tokenizer.convert_tokens_to_ids(filler)] = 2 * direction
        embeddings[tokenizer.convert_tokens_to_ids("yes")] = 3 * d
        embeddings[tokenizer.convert_tokens_to_ids("no")] = -3 * d
        for block in model.transformer.h:
            for projection in (block.attn.c_proj, block.mlp.c_proj, block.attn.c_attn):
                projection.weight.zero_()
                projection.bias.zero_()
        _copy_the_key(model.transformer.h[1].attn, m, (v1, v2, v3))
        _xor_of_two_bits(model.transformer.h[1].mlp, v1 - v2, d)
    return model


def _copy_the_key(attention: torch.nn.Module, marker: torch.Tensor, bits: tuple[torch.Tensor, ...]) -> None:
    """Head 0: a constant query meets the key's marker, so every position reads the key; its bits are copied."""
    q, k, v = 0, HIDDEN, 2 * HIDDEN                      # c_attn's output columns: queries, keys, values
    attention.c_attn.bias[q] = QUERY
    attention.c_attn.weight[:, k] = marker
    for i, bit in enumerate(bits):
        attention.c_attn.weight[:, v + i] = bit
        attention.c_proj.weight[i] = bit


def _xor_of_two_bits(mlp: torch.nn.Module, difference: torch.Tensor, d: torch.Tensor) -> None:
    """Two units fire when the two bits differ (one per sign of their difference); their sum is written along d."""
    mlp.c_fc.weight.zero_()
    mlp.c_fc.bias.fill_(-THRESHOLD)                     # every unit stays off (gelu(-5) ~ 0) unless driven
    mlp.c_fc.weight[:, 0] = GAIN * difference
    mlp.c_fc.weight[:, 1] = -GAIN * difference
    mlp.c_proj.weight[:2] = d
    mlp.c_proj.bias.copy_(-0.5 * GAIN * 2.4 * d)        # between 0 (equal bits) and ~4.8 (bits differ) along d


@pytest.fixture(scope="module")
def planted_mlp():
    task = xor_task()
    tokenizer = word_level_tokenizer([*KEYS, *FILLERS, "yes", "no"])
    return task, LoadedModel(xor_model(tokenizer), tokenizer, "xor-by-hand")


def trial(planted_mlp, tmp_path, monkeypatch, layer, component, dims=1):
    task, loaded = planted_mlp
    monkeypatch.setattr("alignment.trial.get_task", lambda name: task)
    config = TrialConfig(model_path="xor-by-hand", task="xor", layer=layer, component=component, position="filler",
                         intervention=InterventionConfig(kind="das", subspace_dim=dims),
                         train=TrainConfig(batch_size=32, max_steps=80, lr=1e-2, eval_every=40, threads=1),
                         data=DataConfig(n_train=400, n_dev=100, n_test=200, max_unchanged=0.5))
    return run_trial(config, tmp_path / f"L{layer}-{component}", TrialInputs(loaded=loaded))


def test_a_variable_planted_at_an_mlp_output_is_found_there_only(planted_mlp, tmp_path, monkeypatch):
    at_mlp = trial(planted_mlp, tmp_path, monkeypatch, 1, "mlp")
    assert at_mlp.prealign_accuracy == 1.0 and at_mlp.site == "transformer.h.1.mlp"
    assert at_mlp.test_iia >= 0.95
    # The key's three bits arrive at the last position through layer 1's attention: swapping them carries the XOR.
    # (One direction does not: ln_2 rescales a vector whose v1 - v2 and v1 + v2 parts come from different keys.)
    assert trial(planted_mlp, tmp_path, monkeypatch, 1, "attention", dims=3).test_iia >= 0.95
    # After layer 0 the last position holds its own filler only: swapping it leaves every base answer.
    below = trial(planted_mlp, tmp_path, monkeypatch, 0, "block")
    assert below.test_iia == pytest.approx(below.floor_no_op, abs=1e-9)
